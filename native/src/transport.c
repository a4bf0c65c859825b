#include "transport.h"
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "install.h"
#include "stamp.h"

static const moat_curl_api *lib;
/* Thread mode shares connections between its threads; each loop keeps its own in its
   multi handle, so a socket is only ever polled and closed on that loop's thread. Both
   share DNS and TLS sessions. */
static CURLSH *share, *share_loop;
static pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
/* Idle connections thread mode keeps for reuse, across its threads. */
#define THREAD_MAX_CONNECTS 64

static void lock_cb(CURL *h, curl_lock_data data, curl_lock_access access, void *userptr) {
  (void)h;
  (void)access;
  (void)userptr;
  pthread_mutex_lock(&locks[data]);
}

static void unlock_cb(CURL *h, curl_lock_data data, void *userptr) {
  (void)h;
  (void)userptr;
  pthread_mutex_unlock(&locks[data]);
}

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;

static CURLSH *make_share(const moat_curl_api *api, int connections) {
  CURLSH *sh = api->share_init();
  if (sh == NULL) return NULL;
  api->share_setopt(sh, CURLSHOPT_LOCKFUNC, lock_cb);
  api->share_setopt(sh, CURLSHOPT_UNLOCKFUNC, unlock_cb);
  if (connections) api->share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  api->share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  api->share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return sh;
}

static void setup(void) {
  const moat_curl_api *api = moat_curl();
  if (api == NULL) return;
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&locks[i], NULL);
  /* Without a share (out of memory) each transfer simply keeps its own caches. */
  share = make_share(api, 1);
  share_loop = make_share(api, 0);
  lib = api;
}

const moat_curl_api *moat_transport_ready(void) {
  pthread_once(&setup_once, setup);
  return lib;
}

/*
 * The request's target, parsed once by libcurl's own URL parser and handed to the transfer
 * as that parsed handle, so the authority and path an r1 stamp covers are the ones sent;
 * the authority also goes out as the Host header (any Host from JavaScript was dropped).
 */
typedef struct {
  CURLU *url;
  char *authority;
  char *path;
  char *credential;
} request_target;

typedef struct transfer {
  moat_request_opts opts;
  moat_emit emit;
  void *ctx;
  volatile int *aborted;
  void (*done)(void *ctx);
  CURL *curl;
  char *hdr;
  size_t hdr_len, hdr_cap;
  int headers_sent;
  int stamp_result;
  request_target target;
  int have_target;
  int on_loop; /* driven by a loop's multi handle, not a thread of its own */
  /* A body stamped as it goes out: the MAC so far, and how much of the body libcurl has read. */
  moat_stamp_stream stream;
  int streaming;
  size_t sent;
  /* libcurl asked to rewind over stamped bytes that went out: it meant to send them again. */
  int resend;
  /* The answer's header section ended (its blank line came): libcurl 7.88 ends a transfer
     whose connection closed after the status line alone as a success, with no headers. */
  int header_end;
  /* Takes the finished transfer's easy handle back for another transfer (1), or declines (0). */
  int (*release)(void *ctx, CURL *curl);
  void *release_ctx;
  /* Waiting for, or back from, the loop's stamping thread. */
  struct transfer *next_stamp;
  int added; /* handed to the loop (counted in `active`); not while with the stamping thread */
  char errbuf[CURL_ERROR_SIZE];
} transfer;

static moat_event *event_new(moat_event_type type) {
  moat_event *ev = calloc(1, sizeof *ev);
  if (ev != NULL) ev->type = type;
  return ev;
}

static void send_headers(transfer *t) {
  if (t->headers_sent) return;
  t->headers_sent = 1;
  moat_event *ev = event_new(MOAT_EV_HEADERS);
  if (ev == NULL) return;
  lib->easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &ev->status);
  ev->stamp_result = t->stamp_result;
  ev->data = t->hdr;
  ev->len = t->hdr_len;
  t->hdr = NULL;
  t->hdr_len = t->hdr_cap = 0;
  t->emit(t->ctx, ev);
}

static size_t header_cb(char *buf, size_t size, size_t n, void *userdata) {
  transfer *t = userdata;
  size_t len = size * n;
  /* A new status line (after 1xx or a proxy CONNECT) starts a new header block. */
  if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
    t->hdr_len = 0;
    t->header_end = 0;
  }
  if ((len == 2 && buf[0] == '\r' && buf[1] == '\n') || (len == 1 && buf[0] == '\n')) t->header_end = 1;
  if (t->hdr_len + len + 1 > t->hdr_cap) {
    size_t cap = (t->hdr_len + len + 1) * 2;
    char *grown = realloc(t->hdr, cap);
    if (grown == NULL) return 0;
    t->hdr = grown;
    t->hdr_cap = cap;
  }
  memcpy(t->hdr + t->hdr_len, buf, len);
  t->hdr_len += len;
  t->hdr[t->hdr_len] = '\0';
  return len;
}

static size_t write_cb(char *buf, size_t size, size_t n, void *userdata) {
  transfer *t = userdata;
  size_t len = size * n;
  if (*t->aborted) return 0;
  send_headers(t);
  moat_event *ev = event_new(MOAT_EV_DATA);
  if (ev == NULL) return 0;
  ev->data = malloc(len > 0 ? len : 1);
  if (ev->data == NULL) {
    free(ev);
    return 0;
  }
  memcpy(ev->data, buf, len);
  ev->len = len;
  t->emit(t->ctx, ev);
  return len;
}

static int progress_cb(void *userdata, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  (void)a;
  (void)b;
  (void)c;
  (void)d;
  transfer *t = userdata;
  return *t->aborted ? 1 : 0;
}

void moat_request_opts_free(moat_request_opts *o) {
  free(o->method);
  free(o->url);
  if (o->headers != NULL) lib->slist_free_all(o->headers);
  if (o->body != NULL) {
    memset(o->body, 0, o->body_len);
    free(o->body);
  }
  free(o->pinned_pubkey);
  free(o->ca_file);
  free(o->proxy);
  moat_install_key_put(o->install);
  o->install = NULL;
}

/* The value of header `name` (lowercase) in the list curl sends, spaces trimmed; NULL if absent. */
static const char *header_value(const struct curl_slist *list, const char *name, size_t *len) {
  size_t name_len = strlen(name);
  for (; list != NULL; list = list->next) {
    const char *line = list->data;
    if (strncasecmp(line, name, name_len) != 0 || line[name_len] != ':') continue;
    const char *v = line + name_len + 1;
    while (*v == ' ' || *v == '\t') v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    *len = n;
    return v;
  }
  return NULL;
}

/* The credential sent (SPEC.md §5.3): x-api-key, else the Bearer token, else "" — a new string. */
static char *credential_of(const struct curl_slist *headers) {
  size_t len = 0;
  const char *v = header_value(headers, "x-api-key", &len);
  if (v == NULL || len == 0) {
    v = header_value(headers, "authorization", &len);
    if (v != NULL && len >= 7 && strncasecmp(v, "bearer ", 7) == 0) {
      v += 7;
      len -= 7;
      while (len > 0 && *v == ' ') {
        v++;
        len--;
      }
    } else {
      v = "";
      len = 0;
    }
  }
  char *out = malloc(len + 1);
  if (out != NULL) {
    memcpy(out, v, len);
    out[len] = '\0';
  }
  return out;
}

static void target_free(request_target *r) {
  if (r->url != NULL) lib->url_cleanup(r->url);
  free(r->authority);
  free(r->path);
  free(r->credential);
}

static int target_parse(request_target *r, const char *url, const struct curl_slist *headers) {
  memset(r, 0, sizeof *r);
  char *host = NULL, *port = NULL, *path = NULL;
  r->url = lib->url();
  int ok = r->url != NULL && lib->url_set(r->url, CURLUPART_URL, url, 0) == CURLUE_OK &&
           lib->url_get(r->url, CURLUPART_HOST, &host, 0) == CURLUE_OK && lib->url_get(r->url, CURLUPART_PATH, &path, 0) == CURLUE_OK;
  if (ok && lib->url_get(r->url, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT) != CURLUE_OK) port = NULL;
  if (ok) {
    size_t cap = strlen(host) + (port != NULL ? strlen(port) + 1 : 0) + 1;
    r->authority = malloc(cap);
    r->path = strdup(path[0] != '\0' ? path : "/");
    r->credential = credential_of(headers);
    ok = r->authority != NULL && r->path != NULL && r->credential != NULL;
    if (ok) {
      snprintf(r->authority, cap, "%s%s%s", host, port != NULL ? ":" : "", port != NULL ? port : "");
      for (char *p = r->authority; *p; p++) *p = (char)tolower((unsigned char)*p);
    }
  }
  lib->free(host);
  lib->free(port);
  lib->free(path);
  if (!ok) target_free(r);
  return ok;
}

/*
 * Bodies from this size on are stamped as they go out: the MAC takes each part just before
 * libcurl sends it, in parts of at most STAMP_PART bytes, so the server reads the first
 * parts while the rest is hashed. Below it, one MAC over the body before sending costs
 * less than the extra sends.
 */
#define STAMP_AS_SENT_MIN (32 * 1024)
#define STAMP_PART (32 * 1024)

/* libcurl's read callback for a body stamped as it goes out: the stamp is written before any byte of its region is handed over. */
static size_t body_part(char *buf, size_t size, size_t n, void *userdata) {
  transfer *t = userdata;
  if (*t->aborted) return CURL_READFUNC_ABORT;
  size_t room = size * n, left = t->opts.body_len - t->sent;
  if (room > STAMP_PART) room = STAMP_PART;
  size_t take = left < room ? left : room, upto = t->sent + take;
  if (t->streaming) {
    int ok;
    if (upto > t->stream.stamp_start) {
      ok = moat_stamp_finish(&t->stream, t->opts.body, t->opts.body_len) == MOAT_STAMP_OK;
      t->streaming = 0;
    } else {
      ok = moat_stamp_advance(&t->stream, t->opts.body, upto);
    }
    /* The body still goes out, with its placeholder: the verifier decides (fail open). */
    if (!ok) {
      moat_stamp_abandon(&t->stream);
      t->streaming = 0;
      t->stamp_result = MOAT_STAMP_CRYPTO;
    }
  }
  memcpy(buf, t->opts.body + t->sent, take);
  t->sent = upto;
  return take;
}

/* libcurl rewinds a body to send it again (a reused connection found closed): the MAC keeps what it has taken. */
static int seek_body(void *userdata, curl_off_t offset, int origin) {
  transfer *t = userdata;
  if (origin != SEEK_SET || offset < 0 || (curl_off_t)t->opts.body_len < offset) return CURL_SEEKFUNC_CANTSEEK;
  /* Rewinding over bytes that went out is libcurl sending the request again on a new
     connection (a reused one closed before any answer). The first copy may have been read and
     acted on, and the same stamp twice is a replay: the transfer fails instead, and the caller
     decides (an idempotent request goes again with a fresh stamp; a POST is the app's to retry). */
  if ((size_t)offset < t->sent) {
    t->resend = 1;
    return CURL_SEEKFUNC_CANTSEEK;
  }
  t->sent = (size_t)offset;
  return CURL_SEEKFUNC_OK;
}

/* Stamps the body in the addon's copy and sets up the easy handle; NULL when no handle could be made.
   With `as_sent`, a large body is stamped while it is sent instead of before. */
static CURL *transfer_prepare(transfer *t, int as_sent) {
  t->have_target = target_parse(&t->target, t->opts.url, t->opts.headers);
  if (t->have_target) {
    size_t cap = strlen(t->target.authority) + 7;
    char *host_line = malloc(cap);
    if (host_line != NULL) {
      snprintf(host_line, cap, "Host: %s", t->target.authority);
      t->opts.headers = lib->slist_append(t->opts.headers, host_line);
      free(host_line);
    }
  }
  moat_request_components components = {t->opts.method, t->have_target ? t->target.authority : NULL,
                                         t->have_target ? t->target.path : NULL, t->have_target ? t->target.credential : NULL, NULL, NULL};
  if (t->opts.install != NULL) {
    components.install_id = moat_install_key_iid(t->opts.install);
    components.install_key = moat_install_key_mac(t->opts.install);
  }
  const moat_request_components *request = t->have_target ? &components : NULL;
  if (t->opts.body == NULL) {
    t->stamp_result = MOAT_STAMP_NO_ENVELOPE;
  } else if (as_sent && t->opts.body_len >= STAMP_AS_SENT_MIN) {
    t->stamp_result = (int)moat_stamp_begin(&t->stream, t->opts.body, t->opts.body_len, request);
    t->streaming = t->stamp_result == MOAT_STAMP_OK;
  } else {
    t->stamp_result = (int)moat_stamp(t->opts.body, t->opts.body_len, request);
  }
  /* A loop transfer may come with a handle from the loop's pool (reset: no options left). */
  CURL *c = t->curl != NULL ? t->curl : lib->easy_init();
  t->curl = c;
  if (c == NULL) return NULL;
  if (t->have_target) lib->easy_setopt(c, CURLOPT_CURLU, t->target.url);
  else lib->easy_setopt(c, CURLOPT_URL, t->opts.url);
  lib->easy_setopt(c, CURLOPT_SHARE, t->on_loop ? share_loop : share);
  /* curl_easy_perform caps the connection cache at this (default 5), and the threads share
     one: with more requests in flight than that, each finished one closed an idle connection
     and the next opened another. */
  if (!t->on_loop) lib->easy_setopt(c, CURLOPT_MAXCONNECTS, (long)THREAD_MAX_CONNECTS);
  lib->easy_setopt(c, CURLOPT_PRIVATE, t);
  lib->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  /* An idle connection is reused for at most 4 s (undici's default): servers close idle ones
     after about 5 s (Node's default), and a request written into a connection the server is
     closing fails with no answer, which for a POST is not sent again (see seek_body). */
  lib->easy_setopt(c, CURLOPT_MAXAGE_CONN, 4L);
  lib->easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  lib->easy_setopt(c, CURLOPT_ERRORBUFFER, t->errbuf);
  lib->easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
  lib->easy_setopt(c, CURLOPT_HEADERDATA, t);
  lib->easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
  lib->easy_setopt(c, CURLOPT_WRITEDATA, t);
  lib->easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  lib->easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
  lib->easy_setopt(c, CURLOPT_XFERINFODATA, t);
  lib->easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  lib->easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  lib->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  /* libcurl follows http_proxy, https_proxy and ALL_PROXY by itself; Node's fetch does not,
     unless NODE_USE_ENV_PROXY=1. Node's choice here too, so an attested request takes the
     route the app's other requests take (and a dead proxy does not stop it alone). */
  /* The app's proxy when it names one; else the environment's (HTTP_PROXY, NO_PROXY…) only
     where Node itself follows it (NODE_USE_ENV_PROXY=1); else none. */
  const char *env_proxy = getenv("NODE_USE_ENV_PROXY");
  if (t->opts.proxy != NULL) lib->easy_setopt(c, CURLOPT_PROXY, t->opts.proxy);
  else if (env_proxy == NULL || strcmp(env_proxy, "1") != 0) lib->easy_setopt(c, CURLOPT_PROXY, "");
  if (t->opts.pinned_pubkey != NULL) lib->easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, t->opts.pinned_pubkey);
  if (t->opts.ca_file != NULL) lib->easy_setopt(c, CURLOPT_CAINFO, t->opts.ca_file);
  if (t->opts.timeout_ms > 0) lib->easy_setopt(c, CURLOPT_TIMEOUT_MS, t->opts.timeout_ms);
  if (t->opts.connect_timeout_ms > 0) lib->easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, t->opts.connect_timeout_ms);
  /* No "Expect: 100-continue" round trip before the body. */
  t->opts.headers = lib->slist_append(t->opts.headers, "Expect:");
  lib->easy_setopt(c, CURLOPT_HTTPHEADER, t->opts.headers);
  /* Every body is handed out by the read callback, never as POSTFIELDS, which libcurl would
     rewind and send again by itself (see seek_body). */
  if (t->streaming || t->opts.body != NULL) {
    lib->easy_setopt(c, CURLOPT_POST, 1L);
    lib->easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->opts.body_len);
    lib->easy_setopt(c, CURLOPT_READFUNCTION, body_part);
    lib->easy_setopt(c, CURLOPT_READDATA, t);
    lib->easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_body);
    lib->easy_setopt(c, CURLOPT_SEEKDATA, t);
  }
  if (strcmp(t->opts.method, "GET") == 0 && t->opts.body == NULL) lib->easy_setopt(c, CURLOPT_HTTPGET, 1L);
  else if (strcmp(t->opts.method, "POST") != 0 || t->opts.body == NULL) lib->easy_setopt(c, CURLOPT_CUSTOMREQUEST, t->opts.method);
  return c;
}

/* Emits the end or the error of a transfer, frees it and says it is done. */
/* Frees a transfer and all it holds; its easy handle goes back to the pool that lent it, if that takes it. */
static void transfer_free(transfer *t) {
  if (t->curl != NULL && !(t->release != NULL && t->release(t->release_ctx, t->curl))) lib->easy_cleanup(t->curl);
  if (t->streaming) moat_stamp_abandon(&t->stream);
  if (t->have_target) target_free(&t->target);
  free(t->hdr);
  moat_request_opts_free(&t->opts);
  free(t);
}

static void transfer_finish(transfer *t, CURLcode rc) {
  /* An answer cut off inside its header section is no answer: the caller sees a transport
     error (and may retry), never an empty 200. */
  if (rc == CURLE_OK && !t->header_end) {
    rc = CURLE_PARTIAL_FILE;
    snprintf(t->errbuf, sizeof t->errbuf, "the connection closed before the answer's header section ended");
  }
  if (rc == CURLE_OK) {
    send_headers(t);
    moat_event *ev = event_new(MOAT_EV_END);
    if (ev != NULL) t->emit(t->ctx, ev);
  } else {
    moat_event *ev = event_new(MOAT_EV_ERROR);
    if (ev != NULL) {
      const char *kind = *t->aborted ? "aborted"
                         : (rc == CURLE_SEND_FAIL_REWIND && t->resend) ? "resend"
                         : rc == CURLE_OPERATION_TIMEDOUT ? "timeout"
                         : rc == CURLE_COULDNT_CONNECT ? "connect"
                         : rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH ? "pinning"
                         : (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) ? "tls"
                                                                                                    : "transport";
      size_t cap = strlen(kind) + strlen(t->errbuf) + strlen(lib->easy_strerror(rc)) + 8;
      ev->data = malloc(cap);
      if (ev->data != NULL) ev->len = (size_t)snprintf(ev->data, cap, "%s: %s", kind, t->errbuf[0] ? t->errbuf : lib->easy_strerror(rc));
      t->emit(t->ctx, ev);
    }
  }
  t->done(t->ctx);
  transfer_free(t);
}

static void *run(void *arg) {
  transfer *t = arg;
  CURL *c = transfer_prepare(t, 1);
  transfer_finish(t, c != NULL ? lib->easy_perform(c) : CURLE_FAILED_INIT);
  return NULL;
}

static transfer *transfer_new(moat_request_opts *opts, moat_emit emit, void *ctx, volatile int *aborted, void (*done)(void *ctx)) {
  transfer *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->opts = *opts;
  t->emit = emit;
  t->ctx = ctx;
  t->aborted = aborted;
  t->done = done;
  return t;
}

int moat_transport_start(moat_request_opts *opts, moat_emit emit, void *ctx, volatile int *aborted, void (*done)(void *ctx)) {
  transfer *t = transfer_new(opts, emit, ctx, aborted, done);
  if (t == NULL) {
    moat_request_opts_free(opts);
    return -1;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, run, t);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    moat_request_opts_free(&t->opts);
    free(t);
    return -1;
  }
  return 0;
}

/* ---- Loop mode: libcurl's multi interface on libuv's poll ---- */

#include <dlfcn.h>
#include <unistd.h>
#include <uv.h>

/* libuv from the host process, looked up at run time (Bun has none: the thread mode serves there). */
static struct {
  int (*poll_init_socket)(uv_loop_t *, uv_poll_t *, uv_os_sock_t);
  int (*poll_start)(uv_poll_t *, int, uv_poll_cb);
  int (*poll_stop)(uv_poll_t *);
  void (*close)(uv_handle_t *, uv_close_cb);
  int (*timer_init)(uv_loop_t *, uv_timer_t *);
  int (*timer_start)(uv_timer_t *, uv_timer_cb, uint64_t, uint64_t);
  int (*timer_stop)(uv_timer_t *);
  void (*ref)(uv_handle_t *);
  void (*unref)(uv_handle_t *);
  int (*prepare_init)(uv_loop_t *, uv_prepare_t *);
  int (*prepare_start)(uv_prepare_t *, uv_prepare_cb);
  int (*prepare_stop)(uv_prepare_t *);
  int (*async_init)(uv_loop_t *, uv_async_t *, uv_async_cb);
  int (*async_send)(uv_async_t *);
} uv;
static int uv_found;
static pthread_once_t uv_lookup_once = PTHREAD_ONCE_INIT;

static void find_uv(void) {
#define FIND(field, symbol)                                 \
  do {                                                      \
    *(void **)(&uv.field) = dlsym(RTLD_DEFAULT, symbol);    \
    if (uv.field == NULL) return;                           \
  } while (0)
  FIND(poll_init_socket, "uv_poll_init_socket");
  FIND(poll_start, "uv_poll_start");
  FIND(poll_stop, "uv_poll_stop");
  FIND(close, "uv_close");
  FIND(timer_init, "uv_timer_init");
  FIND(timer_start, "uv_timer_start");
  FIND(timer_stop, "uv_timer_stop");
  FIND(ref, "uv_ref");
  FIND(unref, "uv_unref");
  FIND(prepare_init, "uv_prepare_init");
  FIND(prepare_start, "uv_prepare_start");
  FIND(prepare_stop, "uv_prepare_stop");
  FIND(async_init, "uv_async_init");
  FIND(async_send, "uv_async_send");
#undef FIND
  uv_found = 1;
}

/*
 * One poll handle per socket number, kept from one transfer to the next: a keep-alive
 * connection goes back to libcurl's cache after each transfer, and closing and opening its
 * handle every time costs epoll calls and a close callback per request. A socket libcurl
 * stops watching while its handle polls for reading alone stays so ("idle"): the next
 * transfer on that connection waits for its response the same way, so nothing changes in
 * epoll. An idle socket that becomes readable (the server closed it) is stopped on the spot;
 * libcurl finds the connection dead when it next looks. Every socket libcurl closes passes
 * through close_socket, which stops the handle first: a closed number may be reused by
 * anyone, and libuv must not deliver that socket's events here. Only connection sockets
 * (marked by sockopt_cb) take that path: libcurl closes its resolver's sockets itself, so
 * the handle of any other socket stops the moment libcurl stops watching it — a poll left
 * on a closed descriptor makes libuv abort the process.
 */
typedef struct socket_watch {
  uv_poll_t poll;
  curl_socket_t fd;
  moat_loop *loop;
  int events; /* what the handle polls for now (UV_READABLE | UV_WRITABLE), 0 when stopped */
  int wanted; /* what libcurl last asked to watch for, 0 once it stopped watching */
  int idle;   /* libcurl no longer watches the socket */
  int conn;   /* a connection's socket (libcurl closes it through close_socket); else its resolver's */
} socket_watch;

/*
 * The loop's own stamping thread, for large bodies while the loop is busy. Its own rather
 * than libuv's pool: that pool (four threads) also serves the application's file system,
 * DNS and zlib work, which a burst of large requests would hold up; and one thread that
 * takes job after job without going back to sleep costs fewer wake-ups than a hop per job.
 */
typedef struct stamper {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  transfer *todo_head, *todo_tail; /* oldest first */
  transfer *done_head, *done_tail;
  int stop;
  size_t waiting; /* jobs not yet handed back; touched on the loop's thread only */
  uv_async_t *async;
} stamper;

struct moat_loop {
  uv_loop_t *uv_loop;
  CURLM *multi;
  uv_timer_t *timer;
  socket_watch **watches; /* by socket number */
  size_t watch_cap;
  int active; /* transfers in flight: while none, the loop's handles do not keep the process alive */
  /* Finished easy handles, reset, for the next transfers: an easy handle's setup and
     teardown are a few dozen allocations each. Only the loop's thread touches the pool. */
  CURL *spare[64];
  int spares;
  /* Transfers started since the loop last polled: handed to libcurl together just before it
     polls again, so a burst of requests (32 answers arriving, 32 new requests made from
     their callbacks) goes out as a burst rather than one at a time between the answers. */
  uv_prepare_t *prepare;
  transfer **pending;
  size_t pending_count, pending_cap;
  void (*drain)(void *user);
  void *user;
  stamper *stamper; /* made on the first offload; NULL until then, or when it could not be */
  int stamper_failed;
};

/* While no transfer is in flight, idle connections and libcurl's timer must not keep the process alive. */
static void set_alive(moat_loop *l, int alive) {
  void (*fn)(uv_handle_t *) = alive ? uv.ref : uv.unref;
  fn((uv_handle_t *)l->timer);
  for (size_t i = 0; i < l->watch_cap; i++)
    if (l->watches[i] != NULL) fn((uv_handle_t *)&l->watches[i]->poll);
}

static void free_handle(uv_handle_t *h) { free(h->data); }

static void process_done(moat_loop *l) {
  CURLMsg *msg;
  int left;
  while ((msg = lib->multi_info_read(l->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode rc = msg->data.result;
    transfer *t = NULL;
    lib->easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    lib->multi_remove_handle(l->multi, easy);
    if (--l->active == 0) set_alive(l, 0);
    if (t != NULL) transfer_finish(t, rc);
  }
}

static void watch_stop(socket_watch *w) {
  if (w->events != 0) uv.poll_stop(&w->poll);
  w->events = 0;
  w->wanted = 0;
  w->idle = 0;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  socket_watch *w = handle->data;
  moat_loop *l = w->loop;
  if (w->idle) {
    watch_stop(w);
    return;
  }
  int flags = ((events & UV_READABLE) ? CURL_CSELECT_IN : 0) | ((events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0);
  if (status < 0) {
    /* libuv met an error on the socket (a reset, say) and stopped its handle. libcurl is
       told the socket is readable and writable: its next read or write meets the error
       itself and treats it as any dead connection — a request on a reused one goes again
       on a new connection, where "poll error" would only fail it. */
    w->events = 0;
    flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  }
  int running = 0;
  lib->multi_socket_action(l->multi, w->fd, flags, &running);
  /* Still watched by libcurl after the error: poll again, as libcurl will not ask twice. */
  if (status < 0 && w->events == 0 && w->wanted != 0 && !w->idle && uv.poll_start(&w->poll, w->wanted, on_poll) == 0) w->events = w->wanted;
  process_done(l);
  l->drain(l->user);
}

static void on_timeout(uv_timer_t *timer) {
  moat_loop *l = timer->data;
  int running = 0;
  lib->multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  process_done(l);
  l->drain(l->user);
}

/* The handle for socket `fd`, made on first use; NULL when out of memory. */
static socket_watch *watch_for(moat_loop *l, curl_socket_t fd) {
  if (fd < 0) return NULL;
  if ((size_t)fd >= l->watch_cap) {
    size_t cap = l->watch_cap == 0 ? 64 : l->watch_cap;
    while (cap <= (size_t)fd) cap *= 2;
    socket_watch **grown = realloc(l->watches, cap * sizeof *grown);
    if (grown == NULL) return NULL;
    memset(grown + l->watch_cap, 0, (cap - l->watch_cap) * sizeof *grown);
    l->watches = grown;
    l->watch_cap = cap;
  }
  socket_watch *w = l->watches[fd];
  if (w != NULL) return w;
  w = calloc(1, sizeof *w);
  if (w == NULL || uv.poll_init_socket(l->uv_loop, &w->poll, fd) != 0) {
    free(w);
    return NULL;
  }
  w->fd = fd;
  w->loop = l;
  w->poll.data = w;
  if (l->active == 0) uv.unref((uv_handle_t *)&w->poll);
  l->watches[fd] = w;
  return w;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  (void)socketp;
  moat_loop *l = userp;
  socket_watch *w = (fd >= 0 && (size_t)fd < l->watch_cap) ? l->watches[fd] : NULL;
  if (what == CURL_POLL_REMOVE) {
    if (w != NULL) w->wanted = 0;
    if (w != NULL && w->conn && w->events == UV_READABLE) w->idle = 1;
    else if (w != NULL) watch_stop(w);
    return 0;
  }
  if (w == NULL && (w = watch_for(l, fd)) == NULL) return -1;
  w->idle = 0;
  int events = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
  w->wanted = events;
  /* uv_poll_start re-arms epoll even for the same events: only a change is passed on. */
  if (events == w->events) return 0;
  if (uv.poll_start(&w->poll, events, on_poll) != 0) return -1;
  w->events = events;
  return 0;
}

/* CURLOPT_CLOSESOCKETFUNCTION of loop transfers: the socket's handle stops before the number is freed. */
static int close_socket(void *clientp, curl_socket_t fd) {
  moat_loop *l = clientp;
  if (fd >= 0 && (size_t)fd < l->watch_cap && l->watches[fd] != NULL) {
    watch_stop(l->watches[fd]);
    l->watches[fd]->conn = 0;
  }
  return close(fd);
}

/* CURLOPT_SOCKOPTFUNCTION of loop transfers: called for the sockets of connections only, which
   close_socket sees closed; such a socket may stay polled while idle. */
static int sockopt_cb(void *clientp, curl_socket_t fd, curlsocktype purpose) {
  socket_watch *w = purpose == CURLSOCKTYPE_IPCXN ? watch_for(clientp, fd) : NULL;
  if (w != NULL) w->conn = 1;
  return CURL_SOCKOPT_OK;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  moat_loop *l = userp;
  if (timeout_ms < 0) uv.timer_stop(l->timer);
  else uv.timer_start(l->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* Hands the transfers started since the last poll to libcurl; its timer then sends them together. */
static void on_prepare(uv_prepare_t *handle) {
  moat_loop *l = handle->data;
  uv.prepare_stop(l->prepare);
  size_t count = l->pending_count;
  l->pending_count = 0;
  int failed = 0;
  for (size_t i = 0; i < count; i++) {
    transfer *t = l->pending[i];
    if (lib->multi_add_handle(l->multi, t->curl) != CURLM_OK) {
      if (--l->active == 0) set_alive(l, 0);
      transfer_finish(t, CURLE_FAILED_INIT);
      failed = 1;
    }
  }
  if (failed) l->drain(l->user);
}

moat_loop *moat_loop_open(void *uv_loop, void (*drain)(void *user), void *user) {
  pthread_once(&uv_lookup_once, find_uv);
  if (!uv_found || uv_loop == NULL || moat_transport_ready() == NULL) return NULL;
  moat_loop *l = calloc(1, sizeof *l);
  uv_timer_t *timer = calloc(1, sizeof *timer);
  uv_prepare_t *prepare = calloc(1, sizeof *prepare);
  CURLM *multi = l != NULL && timer != NULL && prepare != NULL ? lib->multi_init() : NULL;
  if (multi == NULL || uv.timer_init(uv_loop, timer) != 0) {
    if (multi != NULL) lib->multi_cleanup(multi);
    free(prepare);
    free(timer);
    free(l);
    return NULL;
  }
  uv.prepare_init(uv_loop, prepare);
  l->uv_loop = uv_loop;
  l->multi = multi;
  l->timer = timer;
  l->prepare = prepare;
  timer->data = l;
  prepare->data = l;
  uv.unref((uv_handle_t *)timer);
  l->drain = drain;
  l->user = user;
  /* Keep idle connections for reuse: by default libcurl sizes its cache by the transfers in
     flight, so a burst that ends would close the connections the next burst wants. */
  lib->multi_setopt(multi, CURLMOPT_MAXCONNECTS, 256L);
  lib->multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  lib->multi_setopt(multi, CURLMOPT_SOCKETDATA, l);
  lib->multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  lib->multi_setopt(multi, CURLMOPT_TIMERDATA, l);
  return l;
}

/* Keeps a finished transfer's easy handle for the next one, while the pool has room. */
static int release_easy(void *ctx, CURL *curl) {
  moat_loop *l = ctx;
  if (l->spares == (int)(sizeof l->spare / sizeof l->spare[0])) return 0;
  lib->easy_reset(curl);
  l->spare[l->spares++] = curl;
  return 1;
}

/* Created on the loop's thread (the pool of easy handles is not shared); prepared there or on the stamping thread. */
static transfer *loop_transfer_new(moat_loop *l, moat_request_opts *opts, moat_emit emit, void *ctx, volatile int *aborted,
                                   void (*done)(void *ctx)) {
  transfer *t = transfer_new(opts, emit, ctx, aborted, done);
  if (t == NULL) {
    moat_request_opts_free(opts);
    return NULL;
  }
  t->on_loop = 1;
  t->release = release_easy;
  t->release_ctx = l;
  if (l->spares > 0) t->curl = l->spare[--l->spares];
  return t;
}

/* Hands a prepared transfer to libcurl, before the loop next polls; NULL when it ended instead (aborted meanwhile, no handle): its error is emitted. */
static void *loop_add(moat_loop *l, transfer *t) {
  if (*t->aborted) {
    transfer_finish(t, CURLE_ABORTED_BY_CALLBACK);
    return NULL;
  }
  if (t->curl == NULL) {
    transfer_finish(t, CURLE_FAILED_INIT);
    return NULL;
  }
  lib->easy_setopt(t->curl, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
  lib->easy_setopt(t->curl, CURLOPT_CLOSESOCKETDATA, l);
  lib->easy_setopt(t->curl, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
  lib->easy_setopt(t->curl, CURLOPT_SOCKOPTDATA, l);
  if (l->pending_count == l->pending_cap) {
    size_t cap = l->pending_cap == 0 ? 64 : l->pending_cap * 2;
    transfer **grown = realloc(l->pending, cap * sizeof *grown);
    if (grown == NULL) {
      transfer_finish(t, CURLE_OUT_OF_MEMORY);
      return NULL;
    }
    l->pending = grown;
    l->pending_cap = cap;
  }
  if (l->pending_count == 0) uv.prepare_start(l->prepare, on_prepare);
  l->pending[l->pending_count++] = t;
  t->added = 1;
  if (l->active++ == 0) set_alive(l, 1);
  return t;
}

static void *stamp_jobs(void *arg) {
  stamper *s = arg;
#ifdef __linux__
  pthread_setname_np(pthread_self(), "moat-stamp"); /* seen in top, perf and /proc/<pid>/task */
#endif
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (s->todo_head == NULL && !s->stop) pthread_cond_wait(&s->wake, &s->lock);
    if (s->stop) break;
    transfer *t = s->todo_head;
    s->todo_head = t->next_stamp;
    if (s->todo_head == NULL) s->todo_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    /* Aborted while it waited: loop_add ends it, unstamped. */
    if (!*t->aborted) transfer_prepare(t, 0);
    pthread_mutex_lock(&s->lock);
    t->next_stamp = NULL;
    int was_empty = s->done_head == NULL;
    if (s->done_tail != NULL) s->done_tail->next_stamp = t;
    else s->done_head = t;
    s->done_tail = t;
    /* The loop takes every finished job at once: one wake-up for a run of them. */
    if (was_empty) uv.async_send(s->async);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

static void on_stamped(uv_async_t *async) {
  moat_loop *l = async->data;
  stamper *s = l->stamper;
  pthread_mutex_lock(&s->lock);
  transfer *t = s->done_head;
  s->done_head = s->done_tail = NULL;
  pthread_mutex_unlock(&s->lock);
  while (t != NULL) {
    transfer *next = t->next_stamp;
    t->next_stamp = NULL;
    if (--s->waiting == 0) uv.unref((uv_handle_t *)s->async);
    /* Aborted meanwhile, it ends here: its error is delivered now. */
    if (loop_add(l, t) == NULL) l->drain(l->user);
    t = next;
  }
}

static stamper *stamper_open(moat_loop *l) {
  stamper *s = calloc(1, sizeof *s);
  uv_async_t *async = calloc(1, sizeof *async);
  if (s == NULL || async == NULL || uv.async_init(l->uv_loop, async, on_stamped) != 0) {
    free(async);
    free(s);
    return NULL;
  }
  async->data = l;
  s->async = async;
  uv.unref((uv_handle_t *)async);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->wake, NULL);
  if (pthread_create(&s->thread, NULL, stamp_jobs, s) != 0) {
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    async->data = async;
    uv.close((uv_handle_t *)async, free_handle);
    free(s);
    return NULL;
  }
  return s;
}

/* Transfers that never reached libcurl, at teardown: freed, nothing emitted. */
static void discard_all(transfer *t) {
  while (t != NULL) {
    transfer *next = t->next_stamp;
    transfer_free(t);
    t = next;
  }
}

/* Stops the thread; the transfers it has not handed back are discarded (teardown emits nothing). */
static void stamper_close(stamper *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->lock);
  s->stop = 1;
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->thread, NULL);
  discard_all(s->todo_head);
  discard_all(s->done_head);
  pthread_cond_destroy(&s->wake);
  pthread_mutex_destroy(&s->lock);
  s->async->data = s->async;
  uv.close((uv_handle_t *)s->async, free_handle);
  free(s);
}

/*
 * Bodies from this size, started while other transfers are in flight, are stamped and set up
 * on the stamping thread and then handed to libcurl: their MAC (about 45 µs at 64 KB) would
 * otherwise hold the loop every other request waits on.
 */
#define OFFLOAD_MIN_BODY (32 * 1024)

/* Queues a created transfer for the stamping thread; 0 when there is none (it could not be started). */
static int off_loop(moat_loop *l, transfer *t) {
  if (l->stamper == NULL && !l->stamper_failed) {
    l->stamper = stamper_open(l);
    l->stamper_failed = l->stamper == NULL;
  }
  stamper *s = l->stamper;
  if (s == NULL) return 0;
  t->next_stamp = NULL;
  /* A stamp on its way keeps the process alive, as the request it belongs to does. */
  if (s->waiting++ == 0) uv.ref((uv_handle_t *)s->async);
  pthread_mutex_lock(&s->lock);
  if (s->todo_tail != NULL) s->todo_tail->next_stamp = t;
  else s->todo_head = t;
  s->todo_tail = t;
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->lock);
  return 1;
}

void *moat_loop_start(moat_loop *l, moat_request_opts *opts, moat_emit emit, void *ctx, volatile int *aborted, void (*done)(void *ctx)) {
  transfer *t = loop_transfer_new(l, opts, emit, ctx, aborted, done);
  if (t == NULL) {
    /* opts are freed: the failure is the transfer's error. */
    moat_event *ev = event_new(MOAT_EV_ERROR);
    if (ev != NULL) emit(ctx, ev);
    done(ctx);
    return NULL;
  }
  const char *install_id = t->opts.install != NULL ? moat_install_key_iid(t->opts.install) : NULL;
  /* Alone on the loop, a large body is stamped as it goes out: the hop would only add two
     thread wake-ups to its latency. Only a body with a placeholder to stamp takes it. */
  if (l->active > 0 && t->opts.body_len >= OFFLOAD_MIN_BODY && moat_stamp_pending(t->opts.body, t->opts.body_len, install_id) &&
      off_loop(l, t))
    return t;
  transfer_prepare(t, 1);
  return loop_add(l, t);
}

void moat_loop_abort(moat_loop *l, void *handle) {
  transfer *t = handle;
  /* With the stamping thread: loop_add finds it aborted when it comes back, and ends it. */
  if (!t->added) return;
  /* Not yet handed to libcurl: out of the waiting list (removing it from libcurl is a no-op). */
  for (size_t i = 0; i < l->pending_count; i++) {
    if (l->pending[i] != t) continue;
    memmove(&l->pending[i], &l->pending[i + 1], (l->pending_count - i - 1) * sizeof *l->pending);
    if (--l->pending_count == 0) uv.prepare_stop(l->prepare);
    break;
  }
  lib->multi_remove_handle(l->multi, t->curl);
  if (--l->active == 0) set_alive(l, 0);
  transfer_finish(t, CURLE_ABORTED_BY_CALLBACK);
  l->drain(l->user);
}

void moat_loop_close(moat_loop *l) {
  if (l == NULL) return;
  stamper_close(l->stamper);
  lib->multi_cleanup(l->multi);
  while (l->spares > 0) lib->easy_cleanup(l->spare[--l->spares]);
  for (size_t i = 0; i < l->watch_cap; i++) {
    socket_watch *w = l->watches[i];
    if (w == NULL) continue;
    uv.poll_stop(&w->poll);
    w->poll.data = w;
    uv.close((uv_handle_t *)&w->poll, free_handle);
  }
  free(l->watches);
  uv.timer_stop(l->timer);
  l->timer->data = l->timer;
  uv.close((uv_handle_t *)l->timer, free_handle);
  uv.prepare_stop(l->prepare);
  l->prepare->data = l->prepare;
  uv.close((uv_handle_t *)l->prepare, free_handle);
  free(l->pending);
  free(l);
}
