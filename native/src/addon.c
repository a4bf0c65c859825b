/*
 * N-API glue of @moat/native: request() stamps and sends a body — on the event loop through
 * libcurl's multi interface, or on a transfer thread whose events come back through a
 * threadsafe function; keyId() names the compiled-in key. Nothing here returns, logs or
 * formats key material.
 */
#include <dlfcn.h>
#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "crypto_api.h"
#include "harden.h"
#include "install_addon.h"
#include "json_object.h"
#include "keystore.h"
#include "literal_scan.h"
#include "stamp.h"
#include "transport.h"

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, "ERR_NATIVE", "N-API call failed: " #call); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

/* Shared between the transfer thread, the threadsafe function and the abort function. */
typedef struct env_state env_state;

typedef struct {
  volatile int aborted;
  atomic_int refs;
  /* Thread mode: the transfer thread calls the threadsafe function only under `lock`, and
     not once it is gone: Node deletes it when its environment is torn down (a worker that
     is terminated), whether or not a thread still holds it. */
  int threaded;
  pthread_mutex_t lock;
  int tsfn_gone;
  napi_threadsafe_function tsfn;
  /* Loop mode: the environment, the JavaScript callback and the transfer while it runs. */
  env_state *state;
  napi_ref callback;
  napi_async_context async;
  void *transfer;
} control;

static void control_unref(control *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  if (c->threaded) pthread_mutex_destroy(&c->lock);
  free(c);
}

static void free_chunk(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void free_event(moat_event *ev) {
  if (ev == NULL) return;
  free(ev->data);
  free(ev);
}

typedef struct queued {
  control *c;
  moat_event *ev; /* NULL: the transfer is done, release its callback */
  struct queued *next;
} queued;

/* Property and event names, made once per environment: not a new string per request. */
enum {
  KEY_METHOD,
  KEY_URL,
  KEY_HEADERS,
  KEY_BODY,
  KEY_ENVELOPE,
  KEY_TIMEOUT_MS,
  KEY_CONNECT_TIMEOUT_MS,
  KEY_PINNED_PUBLIC_KEY,
  KEY_CA_FILE,
  KEY_PROXY,
  KEY_ABORT,
  KEY_RESOURCE, /* the async resource name of every request */
  KEY_COUNT
};
static const char *const KEY_NAMES[KEY_COUNT] = {"method", "url",    "headers", "body",   "envelope",
                                                 "timeoutMs", "connectTimeoutMs", "pinnedPublicKey", "caFile", "proxy", "abort", "moat-native-request"};
static const char *const EVENT_NAMES[] = {"headers", "data", "end", "error"};

struct env_state {
  napi_env env;
  moat_loop *loop; /* NULL: each request runs on a thread of its own */
  queued *head, *tail;
  int draining;
  /* One array holding the property names (by KEY_*), the event names (from NAME_EVENTS) and
     every handle's abort() (NAME_ABORT_FN), which finds its request through `this`: an
     array, as Node-API 8 references objects only, not strings. */
  napi_ref names;
  int loop_tried;
};

#define NAME_EVENTS KEY_COUNT
#define NAME_ABORT_FN (KEY_COUNT + 4)

static env_state *env_state_of(napi_env env);

/* Entry `index` of this environment's names; `fallback` made anew if it is missing (out of memory). */
static napi_value cached(napi_env env, uint32_t index, const char *fallback) {
  env_state *st = env_state_of(env);
  napi_value names, v = NULL;
  napi_valuetype type = napi_undefined;
  if (st == NULL || st->names == NULL || napi_get_reference_value(env, st->names, &names) != napi_ok || names == NULL ||
      napi_get_element(env, names, index, &v) != napi_ok || napi_typeof(env, v, &type) != napi_ok || type == napi_undefined) {
    v = NULL;
    if (fallback != NULL) napi_create_string_utf8(env, fallback, NAPI_AUTO_LENGTH, &v);
  }
  return v;
}

static napi_value key(napi_env env, int k) { return cached(env, (uint32_t)k, KEY_NAMES[k]); }

/* Response chunks up to this size reach JavaScript as copies, larger ones as their own memory. */
#define SMALL_CHUNK 4096

/* The callback's arguments for one event: ("headers", status, header block, stamp result), ("data", Buffer), ("end"), ("error", message). */
static void event_args(napi_env env, moat_event *ev, napi_value args[4]) {
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  args[0] = cached(env, NAME_EVENTS + (uint32_t)ev->type, EVENT_NAMES[ev->type]);
  args[1] = undefined;
  args[2] = undefined;
  args[3] = undefined;
  if (ev->type == MOAT_EV_HEADERS) {
    napi_create_int64(env, ev->status, &args[1]);
    napi_create_string_latin1(env, ev->data != NULL ? ev->data : "", ev->data != NULL ? ev->len : 0, &args[2]);
    napi_create_int32(env, ev->stamp_result, &args[3]);
  } else if (ev->type == MOAT_EV_DATA) {
    /* A large chunk's memory becomes the Buffer's: handed over, not copied (copied where
       external buffers are not allowed). A small one is copied: cheaper than a finalizer. */
    if (ev->data != NULL && ev->len > SMALL_CHUNK && napi_create_external_buffer(env, ev->len, ev->data, free_chunk, NULL, &args[1]) == napi_ok)
      ev->data = NULL;
    else {
      void *copy;
      napi_create_buffer_copy(env, ev->len, ev->data, &copy, &args[1]);
    }
  } else if (ev->type == MOAT_EV_ERROR) {
    napi_create_string_utf8(env, ev->data != NULL ? ev->data : "transport: error", ev->data != NULL ? ev->len : NAPI_AUTO_LENGTH, &args[1]);
  }
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  moat_event *ev = data;
  if (env == NULL || js_cb == NULL) {
    free_event(ev);
    return;
  }
  napi_value args[4], undefined;
  event_args(env, ev, args);
  free_event(ev);
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, js_cb, 4, args, NULL);
}

/* From the transfer thread. The queue is unbounded: a non-blocking call never waits while holding the lock. */
static void emit(void *ctx, moat_event *ev) {
  control *c = ctx;
  pthread_mutex_lock(&c->lock);
  napi_status status = c->tsfn_gone ? napi_closing : napi_call_threadsafe_function(c->tsfn, ev, napi_tsfn_nonblocking);
  pthread_mutex_unlock(&c->lock);
  if (status != napi_ok) free_event(ev);
}

/* The transfer thread's last touch of the request: it lets go of the function and of its reference. */
static void done(void *ctx) {
  control *c = ctx;
  pthread_mutex_lock(&c->lock);
  if (!c->tsfn_gone) napi_release_threadsafe_function(c->tsfn, napi_tsfn_release);
  pthread_mutex_unlock(&c->lock);
  control_unref(c);
}

/* On the environment's thread, when the function is released or its environment torn down. */
static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  control *c = data;
  pthread_mutex_lock(&c->lock);
  c->tsfn_gone = 1;
  c->aborted = 1; /* nobody is left to hear from the transfer: it stops */
  pthread_mutex_unlock(&c->lock);
  control_unref(c);
}

static void abort_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  control_unref(data);
}

static void loop_abort(control *c);

static napi_value abort_request(napi_env env, napi_callback_info info) {
  napi_value self;
  control *c = NULL;
  if (napi_get_cb_info(env, info, NULL, NULL, &self, NULL) != napi_ok || napi_unwrap(env, self, (void **)&c) != napi_ok || c == NULL) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected abort() called on the handle request() returned");
    return NULL;
  }
  c->aborted = 1;
  if (c->transfer != NULL) loop_abort(c);
  return NULL;
}

/* Bounds on what JavaScript hands request(): each length is checked before it is copied. */
#define MAX_BODY ((size_t)1 << 30)
#define MAX_URL 65536
#define MAX_METHOD 32
#define MAX_OPTION 16384
#define MAX_HEADERS 512
#define MAX_HEADER_LINE 65536
#define MAX_TIMEOUT_MS 0x7fffffffL

static const char *const TYPE_NAMES[] = {"undefined", "null",   "boolean", "number", "string",
                                         "symbol",    "object", "function", "external", "bigint"};

static const char *type_name(napi_valuetype t) {
  return (size_t)t < sizeof TYPE_NAMES / sizeof TYPE_NAMES[0] ? TYPE_NAMES[t] : "a value";
}

/* Throws `code`: "expected options.<name> <what>, got <got>". Returns 0. */
static int coded_error(napi_env env, const char *code, const char *name, const char *what, const char *got) {
  char msg[256];
  snprintf(msg, sizeof msg, "expected options.%s %s, got %s", name, what, got);
  napi_throw_type_error(env, code, msg);
  return 0;
}

static int options_error(napi_env env, const char *name, const char *what, const char *got) {
  return coded_error(env, "ERR_NATIVE_OPTIONS", name, what, got);
}

/*
 * A string value as a new C string of at most `max` bytes in UTF-8 with no NUL inside (a NUL
 * would cut the C string short: what is checked and what is sent would differ). 0 when it threw.
 */
static int string_value(napi_env env, napi_value v, const char *code, const char *name, size_t max, char **out) {
  size_t len = 0, written = 0;
  *out = NULL;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return coded_error(env, code, name, "as a string", "another value");
  if (len > max) {
    char what[64];
    snprintf(what, sizeof what, "of at most %zu bytes", max);
    return coded_error(env, code, name, what, "a longer string");
  }
  char *s = malloc(len + 1);
  if (s == NULL) {
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return 0;
  }
  if (napi_get_value_string_utf8(env, v, s, len + 1, &written) != napi_ok || written != len || memchr(s, '\0', len) != NULL) {
    free(s);
    return coded_error(env, code, name, "without a NUL character", "one with a NUL");
  }
  *out = s;
  return 1;
}

/*
 * options[k] as a new C string (see string_value); `*out` stays NULL when it is undefined or
 * null and not required. 0 when it threw (a getter's exception stays pending).
 */
static int get_string(napi_env env, napi_value obj, int k, int required, size_t max, char **out) {
  napi_value v;
  napi_valuetype t;
  *out = NULL;
  if (napi_get_property(env, obj, key(env, k), &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_string) return string_value(env, v, "ERR_NATIVE_OPTIONS", KEY_NAMES[k], max, out);
  if (!required && (t == napi_undefined || t == napi_null)) return 1;
  return options_error(env, KEY_NAMES[k], "as a string", type_name(t));
}

/* options[k] in milliseconds: absent, negative or not finite is 0 (none); capped. 0 when it threw. */
static int get_ms(napi_env env, napi_value obj, int k, long *out) {
  napi_value v;
  napi_valuetype t;
  double n = 0;
  *out = 0;
  if (napi_get_property(env, obj, key(env, k), &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_undefined || t == napi_null) return 1;
  if (t != napi_number || napi_get_value_double(env, v, &n) != napi_ok) return options_error(env, KEY_NAMES[k], "as a number", type_name(t));
  if (n > 0 && n == n) *out = n >= (double)MAX_TIMEOUT_MS ? MAX_TIMEOUT_MS : (long)n;
  return 1;
}

/* An HTTP method or field name: an RFC 9110 token. */
static int is_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || strchr("!#$%&'*+-.^_`|~", c) != NULL)) return 0;
  }
  return 1;
}

/*
 * Headers the transport owns. Host (the authority an r1 stamp covers), Content-Length (the
 * length of the bytes it sends), Connection and its kin and Expect are its own: a line from
 * JavaScript is dropped and the transport's value goes out. A body always goes out with its
 * Content-Length; Transfer-Encoding, TE, Trailer and Upgrade would make the peer read the
 * message another way (request smuggling): such a line is refused.
 */
static const struct {
  const char *name;
  int refused;
} OWNED_HEADERS[] = {{"host", 0},          {"content-length", 0}, {"connection", 0}, {"keep-alive", 0},
                     {"proxy-connection", 0}, {"expect", 0},      {"transfer-encoding", 1}, {"te", 1},
                     {"trailer", 1},       {"upgrade", 1}};

/* -1: refused, 0: dropped, 1: sent as given. */
static int header_policy(const char *name, size_t n) {
  for (size_t i = 0; i < sizeof OWNED_HEADERS / sizeof OWNED_HEADERS[0]; i++)
    if (strlen(OWNED_HEADERS[i].name) == n && strncasecmp(name, OWNED_HEADERS[i].name, n) == 0) return OWNED_HEADERS[i].refused ? -1 : 0;
  return 1;
}

static int header_error(napi_env env, uint32_t i, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "expected options.headers[%u] as %s", i, what);
  napi_throw_type_error(env, "ERR_NATIVE_HEADER", msg);
  return 0;
}

/*
 * options.headers ("name: value" lines) into opts->headers. A line that is not a string, has
 * no token name before its colon, holds CR, LF or NUL (it would smuggle headers), or names a
 * header the transport refuses throws ERR_NATIVE_HEADER; nothing is sent. 0 when it threw.
 */
static int read_headers(napi_env env, napi_value options, const moat_curl_api *curl, moat_request_opts *opts) {
  napi_value headers, line;
  napi_valuetype t;
  bool is_array = false;
  uint32_t n = 0;
  if (napi_get_property(env, options, key(env, KEY_HEADERS), &headers) != napi_ok || napi_typeof(env, headers, &t) != napi_ok) return 0;
  if (t == napi_undefined || t == napi_null) return 1;
  if (napi_is_array(env, headers, &is_array) != napi_ok || !is_array || napi_get_array_length(env, headers, &n) != napi_ok)
    return options_error(env, "headers", "as an array of strings", type_name(t));
  if (n > MAX_HEADERS) return options_error(env, "headers", "of at most 512 lines", "more");
  for (uint32_t i = 0; i < n; i++) {
    char *s = NULL;
    if (napi_get_element(env, headers, i, &line) != napi_ok) return 0; /* a getter threw: its exception is pending */
    if (napi_typeof(env, line, &t) != napi_ok || t != napi_string) return header_error(env, i, "a string");
    if (!string_value(env, line, "ERR_NATIVE_HEADER", "headers[]", MAX_HEADER_LINE, &s)) return 0;
    char *colon = strchr(s, ':');
    int policy = colon != NULL && is_token(s, (size_t)(colon - s)) ? header_policy(s, (size_t)(colon - s)) : 2;
    if (policy == 2 || policy == -1 || strpbrk(s, "\r\n") != NULL) {
      free(s);
      return header_error(env, i, policy == -1 ? "a header the transport sets itself (a message is framed by its Content-Length)"
                                                : "\"name: value\" with a token name and no CR or LF");
    }
    if (policy == 1) {
      /* libcurl reads "name:" as "do not send name": an empty value is spelled "name;". */
      if (colon[strspn(colon + 1, " \t") + 1] == '\0') {
        colon[0] = ';';
        colon[1] = '\0';
      }
      struct curl_slist *grown = curl->slist_append(opts->headers, s);
      if (grown == NULL) {
        free(s);
        napi_throw_error(env, "ERR_NATIVE", "out of memory");
        return 0;
      }
      opts->headers = grown;
    }
    free(s);
  }
  return 1;
}

/*
 * Loop mode (Node): transfers run on this environment's libuv loop through libcurl's multi
 * interface, so a request costs no thread and no cross-thread wake-up. libcurl's callbacks
 * only queue events; they reach JavaScript after libcurl returns, in order, inside a callback
 * scope per transfer (promise jobs run when it closes, as after any I/O callback).
 */
static void enqueue(env_state *st, control *c, moat_event *ev) {
  queued *q = calloc(1, sizeof *q);
  if (q == NULL) {
    free_event(ev);
    return;
  }
  q->c = c;
  q->ev = ev;
  if (st->tail != NULL) st->tail->next = q;
  else st->head = q;
  st->tail = q;
}

static void loop_emit(void *ctx, moat_event *ev) {
  control *c = ctx;
  enqueue(c->state, c, ev);
}

static void loop_done(void *ctx) {
  control *c = ctx;
  c->transfer = NULL;
  enqueue(c->state, c, NULL);
}

/* Releases a finished transfer's callback and async context (outside any callback scope). */
static void release_control(napi_env env, control *c) {
  napi_delete_reference(env, c->callback);
  napi_async_destroy(env, c->async);
  control_unref(c);
}

static void drain(void *user) {
  env_state *st = user;
  if (st->draining) return; /* an abort from a callback: the running drain delivers its events */
  st->draining = 1;
  napi_env env = st->env;
  while (st->head != NULL) {
    /* The events one transfer queued in a row (headers, data, end: a small response comes in
       one read) run in one callback scope: promise jobs run once, after the last of them. */
    control *c = st->head->c;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value recv, cb = NULL;
    napi_get_global(env, &recv); /* the receiver and the scope's resource must be objects */
    napi_callback_scope callback_scope = NULL;
    int done = 0;
    while (st->head != NULL && st->head->c == c && !done) {
      queued *q = st->head;
      st->head = q->next;
      if (st->head == NULL) st->tail = NULL;
      if (q->ev == NULL) {
        done = 1; /* the transfer's last item: released once its scope is closed */
      } else {
        if (cb == NULL && napi_get_reference_value(env, c->callback, &cb) != napi_ok) cb = NULL;
        if (cb != NULL && (callback_scope != NULL || napi_open_callback_scope(env, recv, c->async, &callback_scope) == napi_ok)) {
          napi_value args[4], result;
          event_args(env, q->ev, args);
          if (napi_call_function(env, recv, cb, 4, args, &result) == napi_pending_exception) {
            napi_value error;
            napi_get_and_clear_last_exception(env, &error);
            napi_fatal_exception(env, error);
          }
        }
        free_event(q->ev);
      }
      free(q);
    }
    if (callback_scope != NULL) napi_close_callback_scope(env, callback_scope);
    napi_close_handle_scope(env, scope);
    if (done) release_control(env, c);
  }
  st->draining = 0;
}

static void loop_abort(control *c) {
  env_state *st = c->state;
  void *t = c->transfer;
  c->transfer = NULL;
  moat_loop_abort(st->loop, t);
}

static void env_cleanup(void *arg) {
  env_state *st = arg;
  moat_loop_close(st->loop);
  if (st->names != NULL) napi_delete_reference(st->env, st->names);
  while (st->head != NULL) {
    queued *q = st->head;
    st->head = q->next;
    free_event(q->ev);
    free(q);
  }
  free(st);
}

static napi_value abort_request(napi_env env, napi_callback_info info);

/* This environment's state, made on first use with its names (NULL out of memory). */
static env_state *env_state_of(napi_env env) {
  env_state *st = NULL;
  if (napi_get_instance_data(env, (void **)&st) == napi_ok && st != NULL) return st;
  st = calloc(1, sizeof *st);
  if (st == NULL) return NULL;
  st->env = env;
  napi_set_instance_data(env, st, NULL, NULL);
  napi_add_env_cleanup_hook(env, env_cleanup, st);
  /* Property keys as the engine's own internalized strings where the runtime offers them
     (Node-API 10): a lookup then needs no string-table search. Looked up at run time, as
     a runtime without them would refuse to load the addon otherwise. */
  napi_status (*property_key)(napi_env, const char *, size_t, napi_value *) = NULL;
  *(void **)(&property_key) = dlsym(RTLD_DEFAULT, "node_api_create_property_key_latin1");
  napi_value names, v;
  if (napi_create_array_with_length(env, NAME_ABORT_FN + 1, &names) != napi_ok) return st;
  for (int k = 0; k < KEY_COUNT; k++)
    if ((property_key != NULL ? property_key(env, KEY_NAMES[k], NAPI_AUTO_LENGTH, &v)
                              : napi_create_string_utf8(env, KEY_NAMES[k], NAPI_AUTO_LENGTH, &v)) == napi_ok)
      napi_set_element(env, names, (uint32_t)k, v);
  for (uint32_t e = 0; e < 4; e++)
    if (napi_create_string_utf8(env, EVENT_NAMES[e], NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_element(env, names, NAME_EVENTS + e, v);
  if (napi_create_function(env, "abort", NAPI_AUTO_LENGTH, abort_request, NULL, &v) == napi_ok) napi_set_element(env, names, NAME_ABORT_FN, v);
  napi_create_reference(env, names, 1, &st->names);
  return st;
}

/* This environment's loop transport, or NULL: no libuv (Bun), MOAT_NATIVE_TRANSPORT=thread, or no libcurl. */
static env_state *loop_state(napi_env env) {
  env_state *st = env_state_of(env);
  if (st == NULL) return NULL;
  if (!st->loop_tried) {
    st->loop_tried = 1;
    const char *forced = getenv("MOAT_NATIVE_TRANSPORT");
    napi_value global;
    bool bun = false;
    struct uv_loop_s *uv_loop = NULL;
    if (napi_get_global(env, &global) == napi_ok) napi_has_named_property(env, global, "Bun", &bun);
    if ((forced == NULL || strcmp(forced, "thread") != 0) && !bun && moat_transport_ready() != NULL && napi_get_uv_event_loop(env, &uv_loop) == napi_ok)
      st->loop = moat_loop_open(uv_loop, drain, st);
  }
  return st->loop != NULL ? st : NULL;
}

/* transportMode() → "loop" (libcurl's multi interface on this environment's libuv loop) or "thread" (a thread per request). */
static napi_value transport_mode(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_string_utf8(env, moat_transport_ready() != NULL && loop_state(env) != NULL ? "loop" : "thread", NAPI_AUTO_LENGTH, &out));
  return out;
}

/* An envelope value's characters ([vr]1.<kid>.<ts>.<nonce>.<stamp>): nothing that could leave its JSON string. */
static int envelope_value_ok(const char *v) {
  size_t n = strlen(v);
  if (n == 0 || n > 160) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-')) return 0;
  }
  return 1;
}

/*
 * options.body into the addon's own copy, which it stamps: JavaScript never holds the
 * stamped bytes. A string is encoded as UTF-8 straight into that copy (lone surrogates as
 * U+FFFD, as Buffer.from does). With options.envelope the copy gains the envelope member as
 * the protocol's appendEnvelope adds it (SPEC.md §4.3) — before the closing brace, or as the
 * only member of an empty object — when the body is such an object (moat_json_object);
 * otherwise it throws ERR_NATIVE_ENVELOPE_BODY and nothing is sent. 0 when it threw.
 */
static int read_body(napi_env env, napi_value options, moat_request_opts *opts) {
  napi_value body;
  napi_valuetype type;
  bool is_buffer = false;
  char *envelope = NULL;
  /* The envelope first: a getter that runs now cannot detach the body's memory under us. */
  if (!get_string(env, options, KEY_ENVELOPE, 0, 160, &envelope)) return 0;
  if (envelope != NULL && !envelope_value_ok(envelope)) {
    free(envelope);
    return options_error(env, "envelope", "as an envelope value ([vr]1.<kid>.<ts>.<nonce>.<stamp>)", "other characters");
  }
  if (napi_get_property(env, options, key(env, KEY_BODY), &body) != napi_ok || napi_typeof(env, body, &type) != napi_ok) {
    free(envelope);
    return 0;
  }
  void *data = NULL;
  size_t len = 0;
  int ok = 1;
  if (type == napi_string) {
    /* Its length in UTF-16 units, which the engine knows without reading the string. */
    ok = napi_get_value_string_utf16(env, body, NULL, 0, &len) == napi_ok && len <= MAX_BODY / 3;
  } else if (napi_is_buffer(env, body, &is_buffer) == napi_ok && is_buffer) {
    ok = napi_get_buffer_info(env, body, &data, &len) == napi_ok && len <= MAX_BODY;
  } else {
    free(envelope);
    return type == napi_undefined || type == napi_null ? 1 : options_error(env, "body", "as a string or a Buffer", type_name(type));
  }
  if (!ok) {
    free(envelope);
    return options_error(env, "body", "of at most 1 GiB", "a larger one");
  }
  /* The member: "moat_att":"<envelope>" — after a comma, or alone in braces. */
  static const char NAME[] = "\"moat_att\":\"";
  size_t name_len = sizeof NAME - 1, envelope_len = envelope != NULL ? strlen(envelope) : 0;
  size_t extra = envelope != NULL ? name_len + envelope_len + 2 : 0;
  /* Room for the member, and for the terminating NUL napi writes after a string. A string is
     first written into room for one byte per unit (plus a character's worth): an ASCII
     string fits, in one pass. Only when it may not have fitted is its UTF-8 length counted
     — a second pass over it — and it is written again. */
  size_t room = type == napi_string ? len + 5 : len;
  unsigned char *copy = malloc(room + extra + 1);
  if (copy != NULL && type == napi_string) {
    size_t written = 0;
    napi_get_value_string_utf8(env, body, (char *)copy, room + 1, &written);
    if (written + 4 >= room) {
      free(copy);
      copy = NULL;
      if (napi_get_value_string_utf8(env, body, NULL, 0, &room) == napi_ok && (copy = malloc(room + extra + 1)) != NULL)
        napi_get_value_string_utf8(env, body, (char *)copy, room + 1, &written);
    }
    len = written;
  } else if (copy != NULL && len > 0) {
    memcpy(copy, data, len);
  }
  if (copy == NULL) {
    free(envelope);
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return 0;
  }
  size_t total = len;
  if (envelope != NULL) {
    moat_json_object_result shape = moat_json_object(copy, len);
    if (shape == MOAT_JSON_OTHER) {
      free(copy);
      free(envelope);
      napi_throw_error(env, "ERR_NATIVE_ENVELOPE_BODY", "expected a JSON object text in UTF-8 without a \"moat_att\" member to append the envelope to; nothing was sent");
      return 0;
    }
    size_t at = shape == MOAT_JSON_EMPTY ? 1 : len;
    copy[at - 1] = shape == MOAT_JSON_EMPTY ? '{' : ',';
    memcpy(copy + at, NAME, name_len);
    memcpy(copy + at + name_len, envelope, envelope_len);
    total = at + name_len + envelope_len + 2;
    copy[total - 2] = '"';
    copy[total - 1] = '}';
    free(envelope);
  }
  opts->body = copy;
  opts->body_len = total;
  return 1;
}

/* The handle request() returns: { abort() }, holding the request's control until collected. */
static napi_value abort_handle(napi_env env, control *c) {
  napi_value handle = NULL;
  /* Without the wrap, the handle's reference to the control is dropped now: abort() then
     finds nothing, and the transfer still ends. */
  if (napi_create_object(env, &handle) != napi_ok || napi_wrap(env, handle, c, abort_finalize, NULL, NULL) != napi_ok) {
    control_unref(c);
    if (handle == NULL) napi_get_undefined(env, &handle);
    return handle;
  }
  napi_value abort_fn = cached(env, NAME_ABORT_FN, NULL);
  napi_value name = key(env, KEY_ABORT);
  if (abort_fn != NULL && name != NULL) napi_set_property(env, handle, name, abort_fn);
  return handle;
}

/* options into `opts` (which the caller frees either way); 0 when it threw and nothing is to be sent. */
static int read_request(napi_env env, napi_value options, const moat_curl_api *curl, moat_request_opts *opts) {
  if (!get_string(env, options, KEY_METHOD, 1, MAX_METHOD, &opts->method) || !get_string(env, options, KEY_URL, 1, MAX_URL, &opts->url))
    return 0;
  if (!is_token(opts->method, strlen(opts->method))) return options_error(env, "method", "as an HTTP method (a token)", "other characters");
  if (opts->url[0] == '\0') return options_error(env, "url", "as a URL", "an empty string");
  return read_body(env, options, opts) && get_string(env, options, KEY_PINNED_PUBLIC_KEY, 0, MAX_OPTION, &opts->pinned_pubkey) &&
         get_string(env, options, KEY_CA_FILE, 0, MAX_OPTION, &opts->ca_file) &&
         get_string(env, options, KEY_PROXY, 0, MAX_OPTION, &opts->proxy) &&
         get_ms(env, options, KEY_TIMEOUT_MS, &opts->timeout_ms) && get_ms(env, options, KEY_CONNECT_TIMEOUT_MS, &opts->connect_timeout_ms) &&
         read_headers(env, options, curl, opts) && moat_install_request_option(env, options, &opts->install);
}

/* request(options, onEvent) → { abort() } */
static napi_value request(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t0, t1;
  if (argc < 2 || napi_typeof(env, argv[0], &t0) != napi_ok || napi_typeof(env, argv[1], &t1) != napi_ok || t0 != napi_object || t1 != napi_function) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected request(options: object, onEvent: function)");
    return NULL;
  }
  const moat_curl_api *curl = moat_transport_ready();
  if (curl == NULL) {
    napi_throw_error(env, "ERR_NATIVE_TRANSPORT", moat_curl_error());
    return NULL;
  }
  moat_request_opts opts;
  memset(&opts, 0, sizeof opts);
  if (!read_request(env, argv[0], curl, &opts)) {
    moat_request_opts_free(&opts);
    return NULL;
  }
  control *c = calloc(1, sizeof *c);
  if (c == NULL) {
    moat_request_opts_free(&opts);
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  atomic_init(&c->refs, 2);
  napi_value name = key(env, KEY_RESOURCE);
  env_state *st = loop_state(env);
  if (st != NULL) {
    if (napi_create_reference(env, argv[1], 1, &c->callback) != napi_ok || napi_async_init(env, NULL, name, &c->async) != napi_ok) {
      if (c->callback != NULL) napi_delete_reference(env, c->callback);
      free(c);
      moat_request_opts_free(&opts);
      napi_throw_error(env, "ERR_NATIVE", "cannot create the response channel");
      return NULL;
    }
    c->state = st;
    napi_value handle = abort_handle(env, c);
    c->transfer = moat_loop_start(st->loop, &opts, loop_emit, c, &c->aborted, loop_done);
    /* A transfer that could not start has queued its error: deliver it now. */
    if (c->transfer == NULL) drain(st);
    return handle;
  }
  /* Three holders: the handle, the function's finalizer and the transfer thread. */
  atomic_init(&c->refs, 3);
  c->threaded = 1;
  pthread_mutex_init(&c->lock, NULL);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, c, tsfn_finalize, c, call_js, &c->tsfn) != napi_ok) {
    pthread_mutex_destroy(&c->lock);
    free(c);
    moat_request_opts_free(&opts);
    napi_throw_error(env, "ERR_NATIVE", "cannot create the response channel");
    return NULL;
  }
  napi_value handle = abort_handle(env, c);
  if (moat_transport_start(&opts, emit, c, &c->aborted, done) != 0) {
    napi_release_threadsafe_function(c->tsfn, napi_tsfn_abort);
    control_unref(c); /* the thread's reference: no thread */
    napi_throw_error(env, "ERR_NATIVE", "cannot start the transfer thread");
    return NULL;
  }
  return handle;
}

static napi_value key_id(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_string_utf8(env, moat_key_id(), NAPI_AUTO_LENGTH, &out));
  return out;
}

static napi_value set_undumpable(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_int32(env, moat_set_undumpable(), &out));
  return out;
}

static napi_value get_dumpable(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_int32(env, moat_get_dumpable(), &out));
  return out;
}

typedef struct {
  void *p;
  size_t size;
} secure_block;

static void secure_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  secure_block *b = hint;
  moat_secure_free(b->p, b->size);
  free(b);
}

/* secureBuffer(size) → { buffer, locked, dontdump }: wiped, unlocked and unmapped when collected. */
static napi_value secure_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t size = 0;
  if (argc < 1 || napi_get_value_int64(env, argv[0], &size) != napi_ok || size <= 0 || size > (1 << 20)) {
    napi_throw_range_error(env, "ERR_NATIVE_OPTIONS", "expected secureBuffer(size) with 0 < size <= 1048576");
    return NULL;
  }
  int locked = 0, dontdump = 0;
  void *p = moat_secure_alloc((size_t)size, &locked, &dontdump);
  if (p == NULL) {
    napi_throw_error(env, "ERR_NATIVE", "cannot map secure memory");
    return NULL;
  }
  secure_block *b = malloc(sizeof *b);
  if (b == NULL) {
    moat_secure_free(p, (size_t)size);
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  b->p = p;
  b->size = (size_t)size;
  napi_value buffer, out, v;
  if (napi_create_external_buffer(env, (size_t)size, p, secure_finalize, b, &buffer) != napi_ok) {
    moat_secure_free(p, (size_t)size);
    free(b);
    napi_throw_error(env, "ERR_NATIVE", "external buffers are not allowed here");
    return NULL;
  }
  CHECK(napi_create_object(env, &out));
  CHECK(napi_set_named_property(env, out, "buffer", buffer));
  CHECK(napi_get_boolean(env, locked, &v));
  CHECK(napi_set_named_property(env, out, "locked", v));
  CHECK(napi_get_boolean(env, dontdump, &v));
  CHECK(napi_set_named_property(env, out, "dontdump", v));
  return out;
}

static napi_value scrub_env_block(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[256];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok || len == 0 || len >= sizeof name - 1 || strchr(name, '=') != NULL) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected scrubEnvBlock(name) with a variable name");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_int64(env, moat_scrub_env_block(name), &out));
  return out;
}

/* Bounds on what JavaScript hands the scanner. */
#define MAX_LITERALS (1u << 20)
#define MAX_LITERAL 65536
#define MAX_PATHS (1u << 24)

/* A compiled literal or regex set (freed with the handle). */
typedef struct {
  moat_literals *m;
  int regex;
} literal_set;

static void literal_set_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  literal_set *set = data;
  moat_literals_free(set->m);
  free(set);
}

/* Whether `value` is an external: only then is its type tag read (reading one converts the
   value to an object, which throws for null and undefined). */
static int is_external(napi_env env, napi_value value) {
  napi_valuetype type;
  return napi_typeof(env, value, &type) == napi_ok && type == napi_external;
}

/* Tags a compiled set's external, so no other external (a verifier key) is taken for one. */
static const napi_type_tag LITERAL_SET_TAG = {0x6d6f61745f736574ULL, 0x6c69746572616c31ULL};

/* The JavaScript handle of a compiled set: an external that frees it when collected. */
static napi_value wrap_set(napi_env env, literal_set *set) {
  napi_value handle;
  if (napi_create_external(env, set, literal_set_finalize, NULL, &handle) != napi_ok) {
    literal_set_finalize(env, set, NULL);
    napi_throw_error(env, "ERR_NATIVE", "cannot create the set's handle");
    return NULL;
  }
  /* Untagged, the handle is refused everywhere; the finalizer still frees the set. */
  if (napi_type_tag_object(env, handle, &LITERAL_SET_TAG) != napi_ok) {
    napi_throw_error(env, "ERR_NATIVE", "cannot tag the set's handle");
    return NULL;
  }
  return handle;
}

/* The compiled set a handle holds, or NULL when it is not such a handle. */
static literal_set *set_arg(napi_env env, napi_value value) {
  bool tagged = false;
  literal_set *set = NULL;
  if (!is_external(env, value) || napi_check_object_type_tag(env, value, &LITERAL_SET_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, value, (void **)&set) != napi_ok)
    return NULL;
  return set;
}

/* Arrays for n literals: pointers, lengths, case flags; 0 when out of memory (thrown, nothing left allocated). */
static int literal_arrays(napi_env env, size_t n, const char ***patterns, size_t **lengths, int **caseless) {
  *patterns = calloc(n, sizeof **patterns);
  *lengths = calloc(n, sizeof **lengths);
  *caseless = calloc(n, sizeof **caseless);
  if (*patterns != NULL && *lengths != NULL && *caseless != NULL) return 1;
  free(*patterns);
  free(*lengths);
  free(*caseless);
  napi_throw_error(env, "ERR_NATIVE", "out of memory");
  return 0;
}

/* Compiles (or loads `serialized` for) the literals, frees the arrays, and returns the set's handle or throws. */
static napi_value compile_literals(napi_env env, const char **patterns, size_t *lengths, int *caseless, unsigned n, const void *serialized,
                                   size_t serialized_len, bool direct) {
  literal_set *set = calloc(1, sizeof *set);
  if (set != NULL)
    set->m = direct ? moat_literals_direct(patterns, lengths, caseless, n)
                    : moat_literals_compile(patterns, lengths, caseless, n, serialized, serialized_len);
  free(patterns);
  free(caseless);
  free(lengths);
  if (set == NULL || set->m == NULL) {
    free(set);
    napi_throw_error(env, "ERR_NATIVE_SCAN", set == NULL ? "out of memory" : moat_literal_error());
    return NULL;
  }
  return wrap_set(env, set);
}

/* literalsCompile(patterns: Buffer[], caseless: boolean[], serialized?: Buffer) → handle */
static napi_value literals_compile(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool a0 = false, a1 = false;
  void *serialized = NULL;
  size_t serialized_len = 0;
  bool has_serialized = false;
  if (argc >= 3 && napi_is_buffer(env, argv[2], &has_serialized) == napi_ok && has_serialized)
    napi_get_buffer_info(env, argv[2], &serialized, &serialized_len);
  uint32_t n = 0, n2 = 0;
  if (argc < 2 || napi_is_array(env, argv[0], &a0) != napi_ok || napi_is_array(env, argv[1], &a1) != napi_ok || !a0 || !a1 ||
      napi_get_array_length(env, argv[0], &n) != napi_ok || napi_get_array_length(env, argv[1], &n2) != napi_ok || n != n2 || n == 0) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected literalsCompile(patterns: Buffer[], caseless: boolean[]) of one non-zero length");
    return NULL;
  }
  if (n > MAX_LITERALS) {
    napi_throw_range_error(env, "ERR_NATIVE_OPTIONS", "expected literalsCompile() of at most 1048576 patterns");
    return NULL;
  }
  const char **patterns;
  size_t *lengths;
  int *caseless;
  napi_value *items = malloc(n * sizeof *items);
  if (items == NULL || !literal_arrays(env, n, &patterns, &lengths, &caseless)) {
    if (items == NULL) napi_throw_error(env, "ERR_NATIVE", "out of memory");
    free(items);
    return NULL;
  }
  /* Every element is read (a getter may run) before any buffer's memory is: a getter that
     ran later could detach a buffer whose pointer was already taken. */
  const char *problem = NULL;
  for (uint32_t i = 0; i < n && problem == NULL; i++) {
    napi_value flag;
    bool fold = false;
    if (napi_get_element(env, argv[0], i, &items[i]) != napi_ok || napi_get_element(env, argv[1], i, &flag) != napi_ok) problem = "";
    else if (napi_get_value_bool(env, flag, &fold) != napi_ok) problem = "expected every caseless flag as a boolean";
    caseless[i] = fold;
  }
  for (uint32_t i = 0; i < n && problem == NULL; i++) {
    bool is_buffer = false;
    void *data = NULL;
    size_t len = 0;
    if (napi_is_buffer(env, items[i], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, items[i], &data, &len) != napi_ok ||
        len == 0 || len > MAX_LITERAL)
      problem = "expected every pattern as a non-empty Buffer of at most 65536 bytes";
    patterns[i] = data;
    lengths[i] = len;
  }
  free(items);
  if (problem != NULL) {
    free(patterns);
    free(lengths);
    free(caseless);
    if (problem[0] != '\0') napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", problem); /* else a getter's exception is pending */
    return NULL;
  }
  return compile_literals(env, patterns, lengths, caseless, n, has_serialized ? serialized : NULL, serialized_len, false);
}

/* literalsCompilePacked(packed: Buffer, lengths: Uint32Array, caseless: Uint8Array, serialized?: Buffer, direct?: boolean) → handle:
   literalsCompile with the literals back to back in one buffer (a cached set loads without one object per literal);
   `direct`: a set searched without libhs, built in linear time (moat_literals_direct). */
static napi_value literals_compile_packed(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *packed = NULL, *serialized = NULL, *lengths_data = NULL, *caseless_data = NULL;
  size_t packed_len = 0, serialized_len = 0, n = 0, n2 = 0, offset = 0;
  bool is_buffer = false, has_serialized = false, t1 = false, t2 = false;
  napi_typedarray_type type1, type2;
  napi_value ab;
  int ok = argc >= 3 && napi_is_buffer(env, argv[0], &is_buffer) == napi_ok && is_buffer &&
           napi_get_buffer_info(env, argv[0], &packed, &packed_len) == napi_ok && napi_is_typedarray(env, argv[1], &t1) == napi_ok && t1 &&
           napi_get_typedarray_info(env, argv[1], &type1, &n, &lengths_data, &ab, &offset) == napi_ok && type1 == napi_uint32_array &&
           napi_is_typedarray(env, argv[2], &t2) == napi_ok && t2 &&
           napi_get_typedarray_info(env, argv[2], &type2, &n2, &caseless_data, &ab, &offset) == napi_ok && type2 == napi_uint8_array &&
           n == n2 && n > 0 && n <= MAX_LITERALS;
  if (ok && argc >= 4 && napi_is_buffer(env, argv[3], &has_serialized) == napi_ok && has_serialized)
    napi_get_buffer_info(env, argv[3], &serialized, &serialized_len);
  const uint32_t *lengths32 = lengths_data;
  size_t total = 0;
  for (size_t i = 0; ok && i < n; i++) {
    ok = lengths32[i] > 0 && lengths32[i] <= MAX_LITERAL;
    total += lengths32[i];
  }
  if (!ok || total != packed_len) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS",
                          "expected literalsCompilePacked(packed: Buffer, lengths: Uint32Array, caseless: Uint8Array) with non-zero lengths summing to the buffer's");
    return NULL;
  }
  const char **patterns;
  size_t *lengths;
  int *caseless;
  if (!literal_arrays(env, n, &patterns, &lengths, &caseless)) return NULL;
  const char *at = packed;
  for (size_t i = 0; i < n; i++) {
    patterns[i] = at;
    lengths[i] = lengths32[i];
    caseless[i] = ((const uint8_t *)caseless_data)[i] != 0;
    at += lengths32[i];
  }
  bool direct = false;
  if (argc >= 5) napi_get_value_bool(env, argv[4], &direct);
  return compile_literals(env, patterns, lengths, caseless, (unsigned)n, has_serialized ? serialized : NULL, serialized_len, direct);
}

/* The patterns of regexCompile(Async)(patterns: string[]) copied into `patterns` (n of them, each to be freed); 0 with an
   exception thrown or pending. */
static int regex_patterns(napi_env env, size_t argc, napi_value array, char *patterns[64], uint32_t *count, const char *name) {
  bool is_array = false;
  uint32_t n = 0;
  if (argc < 1 || napi_is_array(env, array, &is_array) != napi_ok || !is_array || napi_get_array_length(env, array, &n) != napi_ok ||
      n == 0 || n > 64) {
    char message[96];
    snprintf(message, sizeof message, "expected %s(patterns: string[]) of 1-64 patterns", name);
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", message);
    return 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    size_t len = 0, written = 0;
    if (napi_get_element(env, array, i, &item) != napi_ok) {
      for (uint32_t k = 0; k < i; k++) free(patterns[k]);
      return 0; /* a getter threw: its exception is pending */
    }
    /* A NUL would end the pattern libhs reads early. */
    if (!(napi_get_value_string_utf8(env, item, NULL, 0, &len) == napi_ok && len <= MAX_LITERAL && (patterns[i] = malloc(len + 1)) != NULL &&
          napi_get_value_string_utf8(env, item, patterns[i], len + 1, &written) == napi_ok && written == len && strlen(patterns[i]) == len)) {
      for (uint32_t k = 0; k <= i; k++) free(patterns[k]);
      napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected every pattern as a string of at most 65536 bytes without NUL");
      return 0;
    }
  }
  *count = n;
  return 1;
}

/* The regular-expression set of `patterns` (n of them), or NULL with `error` saying why (the calling thread's message:
   regexCompileAsync calls it on libuv's thread pool). */
static literal_set *regex_set(char *const *patterns, uint32_t n, char error[static 256]) {
  literal_set *set = calloc(1, sizeof *set);
  if (set == NULL) {
    snprintf(error, 256, "out of memory");
    return NULL;
  }
  set->m = moat_regex_compile((const char *const *)patterns, n);
  set->regex = 1;
  if (set->m == NULL) {
    snprintf(error, 256, "%s", moat_literal_error());
    free(set);
    return NULL;
  }
  return set;
}

/* regexCompile(patterns: string[]) → handle; literalsScan on it gives (index, start, end) triples by start. */
static napi_value regex_compile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *patterns[64] = {0};
  uint32_t n = 0;
  if (!regex_patterns(env, argc, argv[0], patterns, &n, "regexCompile")) return NULL;
  char error[256];
  literal_set *set = regex_set(patterns, n, error);
  for (uint32_t i = 0; i < n; i++) free(patterns[i]);
  if (set == NULL) {
    napi_throw_error(env, "ERR_NATIVE_SCAN", error);
    return NULL;
  }
  return wrap_set(env, set);
}

/* One regexCompileAsync call: its patterns, compiled on libuv's thread pool into `set`, or `error` saying why not. */
typedef struct {
  char *patterns[64];
  uint32_t count;
  literal_set *set;
  char error[256];
  napi_async_work work;
  napi_deferred deferred;
} regex_call;

static void regex_execute(napi_env env, void *data) {
  (void)env;
  regex_call *call = data;
  call->set = regex_set(call->patterns, call->count, call->error);
}

static void regex_complete(napi_env env, napi_status status, void *data) {
  regex_call *call = data;
  napi_value handle = NULL, thrown;
  if (status == napi_ok && call->set != NULL) {
    handle = wrap_set(env, call->set); /* its finalizer frees the set, wrapped or not */
    call->set = NULL;
    if (handle != NULL) napi_resolve_deferred(env, call->deferred, handle);
    else if (napi_get_and_clear_last_exception(env, &thrown) == napi_ok) napi_reject_deferred(env, call->deferred, thrown);
  } else {
    if (call->set != NULL) {
      moat_literals_free(call->set->m);
      free(call->set);
    }
    napi_value code, message, error;
    if (napi_create_string_utf8(env, "ERR_NATIVE_SCAN", NAPI_AUTO_LENGTH, &code) == napi_ok &&
        napi_create_string_utf8(env, status == napi_ok ? call->error : "the compile was cancelled", NAPI_AUTO_LENGTH, &message) == napi_ok &&
        napi_create_error(env, code, message, &error) == napi_ok)
      napi_reject_deferred(env, call->deferred, error);
  }
  for (uint32_t i = 0; i < call->count; i++) free(call->patterns[i]);
  napi_delete_async_work(env, call->work);
  free(call);
}

/* regexCompileAsync(patterns: string[]) → Promise<handle>: regexCompile on libuv's thread pool, so a scan compiles its
   regular expressions while it derives its literals. Bad arguments throw at once; a pattern libhs refuses rejects. */
static napi_value regex_compile_async(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  regex_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  if (!regex_patterns(env, argc, argv[0], call->patterns, &call->count, "regexCompileAsync")) {
    free(call);
    return NULL;
  }
  napi_value promise, name;
  if (napi_create_promise(env, &call->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "moat.regexCompile", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, regex_execute, regex_complete, call, &call->work) != napi_ok ||
      napi_queue_async_work(env, call->work) != napi_ok) {
    if (call->work != NULL) napi_delete_async_work(env, call->work);
    for (uint32_t i = 0; i < call->count; i++) free(call->patterns[i]);
    free(call);
    napi_throw_error(env, "ERR_NATIVE", "cannot start the compile");
    return NULL;
  }
  return promise;
}

/* literalsSerialize(handle) → Buffer: the compiled database, for a cache. */
static napi_value literals_serialize(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  literal_set *set = NULL;
  if (argc < 1 || (set = set_arg(env, argv[0])) == NULL) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected literalsSerialize(handle)");
    return NULL;
  }
  char *bytes = NULL;
  size_t len = 0;
  if (moat_literals_serialize(set->m, &bytes, &len) != 0) {
    napi_throw_error(env, "ERR_NATIVE_SCAN", "cannot serialize the literal set");
    return NULL;
  }
  napi_value out;
  void *copy;
  napi_status st = napi_create_buffer_copy(env, len, bytes, &copy, &out);
  free(bytes);
  if (st != napi_ok) {
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  return out;
}

/* literalsVersion() → libhs's version string, or undefined when libhs cannot be loaded. */
static napi_value literals_version(napi_env env, napi_callback_info info) {
  (void)info;
  const char *v = moat_literals_version();
  napi_value out;
  if (v == NULL) CHECK(napi_get_undefined(env, &out));
  else CHECK(napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &out));
  return out;
}

static int by_start_then_id(const void *a, const void *b) {
  const int32_t *x = a, *y = b;
  if (x[1] != y[1]) return x[1] < y[1] ? -1 : 1;
  return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* The bytes of a Uint8Array argument; 0 when it is not one. */
static int uint8_arg(napi_env env, napi_value value, const unsigned char **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value arraybuffer;
  size_t offset = 0;
  void *bytes = NULL;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &bytes, &arraybuffer, &offset) != napi_ok || type != napi_uint8_array)
    return 0;
  /* An empty array may have no backing store; hand C a valid pointer anyway. */
  static const unsigned char empty[1] = {0};
  *data = bytes != NULL ? bytes : empty;
  return 1;
}

/* sha256(data: Uint8Array) → Buffer: SHA-256 with the addon's libcrypto (opened on first use), so
   a process that loaded the addon names its caches without starting node:crypto (about 10 ms). */
static napi_value sha256(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  const unsigned char *data = NULL;
  size_t len = 0;
  if (argc < 1 || !uint8_arg(env, argv[0], &data, &len)) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected sha256(data: Uint8Array)");
    return NULL;
  }
  if (!moat_crypto_load()) {
    char why[320];
    snprintf(why, sizeof why, "expected libcrypto (OpenSSL 3) to load, got %s", moat_crypto_error());
    napi_throw_error(env, "ERR_NATIVE_CRYPTO", why);
    return NULL;
  }
  unsigned char digest[32];
  unsigned int digest_len = 0;
  if (!EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL) || digest_len != sizeof digest) {
    napi_throw_error(env, "ERR_NATIVE", "SHA-256 failed");
    return NULL;
  }
  napi_value out;
  void *copy;
  CHECK(napi_create_buffer_copy(env, sizeof digest, digest, &copy, &out));
  return out;
}

/* literalsScan(handle, bytes: Uint8Array) → Int32Array of (literal index, start offset) pairs, by start then index */
static napi_value literals_scan(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  literal_set *set = NULL;
  const unsigned char *data = NULL;
  size_t length = 0;
  if (argc < 2 || (set = set_arg(env, argv[0])) == NULL || !uint8_arg(env, argv[1], &data, &length)) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected literalsScan(handle, bytes: Uint8Array)");
    return NULL;
  }
  int32_t *pairs = NULL;
  size_t count = 0;
  if (moat_literals_scan(set->m, data, length, &pairs, &count) != 0) {
    napi_throw_error(env, "ERR_NATIVE_SCAN", "the literal scan failed");
    return NULL;
  }
  size_t width = set->regex ? 3 : 2;
  if (count > 1) qsort(pairs, count, width * sizeof *pairs, by_start_then_id);
  napi_value buffer, out;
  void *dest = NULL;
  if (napi_create_arraybuffer(env, count * width * sizeof(int32_t), &dest, &buffer) != napi_ok) {
    free(pairs);
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  if (count > 0) memcpy(dest, pairs, count * width * sizeof(int32_t));
  free(pairs);
  CHECK(napi_create_typedarray(env, napi_int32_array, count * width, buffer, 0, &out));
  return out;
}

/* A typed array argument of `type`; 0 when it is not one. */
static int typed_arg(napi_env env, napi_value value, napi_typedarray_type type, void **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type got;
  napi_value arraybuffer;
  size_t offset = 0;
  static uint32_t empty[1];
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &got, length, data, &arraybuffer, &offset) != napi_ok || got != type)
    return 0;
  if (*data == NULL) *data = empty;
  return 1;
}

/* A new typed array of `type` holding a copy of `count` items of `size` bytes. */
static napi_value typed_copy(napi_env env, napi_typedarray_type type, const void *items, size_t count, size_t size) {
  napi_value buffer, out;
  void *dest = NULL;
  if (napi_create_arraybuffer(env, count * size, &dest, &buffer) != napi_ok) return NULL;
  if (count > 0) memcpy(dest, items, count * size);
  if (napi_create_typedarray(env, type, count, buffer, 0, &out) != napi_ok) return NULL;
  return out;
}

/* literalsForms(units: Uint16Array, lengths: Uint32Array, spellings: Uint32Array, flags: number)
   → { packed: Buffer, lengths, offsets, owners: Uint32Array, kinds: Uint8Array, sources, maxLength: number, regex: Uint32Array }:
   every needle form of the codenames (moat_needle_forms) as moat-scan's literal set (moat_forms_plan). */
static napi_value literals_forms(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *units = NULL, *lengths = NULL, *spellings = NULL;
  size_t units_len = 0, strings = 0, codenames = 0;
  uint32_t flags = 0;
  if (argc < 4 || !typed_arg(env, argv[0], napi_uint16_array, &units, &units_len) ||
      !typed_arg(env, argv[1], napi_uint32_array, &lengths, &strings) ||
      !typed_arg(env, argv[2], napi_uint32_array, &spellings, &codenames) || napi_get_value_uint32(env, argv[3], &flags) != napi_ok ||
      codenames > MAX_LITERALS) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS",
                          "expected literalsForms(units: Uint16Array, lengths: Uint32Array, spellings: Uint32Array, flags: number)");
    return NULL;
  }
  moat_forms forms;
  if (moat_needle_forms(units, units_len, lengths, strings, spellings, codenames, (int)flags, &forms) != 0) {
    napi_throw_range_error(env, "ERR_NATIVE_OPTIONS", "expected literalsForms() of 1-8 spellings of 1-65536 units per codename");
    return NULL;
  }
  moat_plan plan;
  int planned = moat_forms_plan(&forms, &plan) == 0;
  moat_forms_free(&forms);
  napi_value out, packed, lens, offsets, owners, kinds, regex, sources, max_length;
  int ok = planned && napi_create_object(env, &out) == napi_ok &&
           napi_create_buffer_copy(env, plan.bytes_len, plan.bytes_len > 0 ? (const void *)plan.bytes : (const void *)"", NULL, &packed) ==
               napi_ok &&
           (lens = typed_copy(env, napi_uint32_array, plan.lengths, plan.count, sizeof *plan.lengths)) != NULL &&
           (offsets = typed_copy(env, napi_uint32_array, plan.offsets, plan.count, sizeof *plan.offsets)) != NULL &&
           (owners = typed_copy(env, napi_uint32_array, plan.owners, plan.count, sizeof *plan.owners)) != NULL &&
           (kinds = typed_copy(env, napi_uint8_array, plan.kinds, plan.count, sizeof *plan.kinds)) != NULL &&
           (regex = typed_copy(env, napi_uint32_array, plan.regex, 3 * plan.regex_count, sizeof *plan.regex)) != NULL &&
           napi_create_uint32(env, (uint32_t)plan.sources, &sources) == napi_ok &&
           napi_create_uint32(env, plan.max_length, &max_length) == napi_ok &&
           napi_set_named_property(env, out, "packed", packed) == napi_ok && napi_set_named_property(env, out, "lengths", lens) == napi_ok &&
           napi_set_named_property(env, out, "offsets", offsets) == napi_ok && napi_set_named_property(env, out, "owners", owners) == napi_ok &&
           napi_set_named_property(env, out, "kinds", kinds) == napi_ok && napi_set_named_property(env, out, "regex", regex) == napi_ok &&
           napi_set_named_property(env, out, "sources", sources) == napi_ok &&
           napi_set_named_property(env, out, "maxLength", max_length) == napi_ok;
  if (planned) moat_plan_free(&plan);
  if (!ok) {
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  return out;
}

/* literalsDirectStride(lengths: Uint32Array) → number: the stride a direct set of literals of these lengths is probed
   with (1: every position); a caller builds such a set rather than compile one when it is above 1. */
static napi_value literals_direct_stride(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *lengths = NULL;
  size_t count = 0;
  if (argc < 1 || !typed_arg(env, argv[0], napi_uint32_array, &lengths, &count) || count == 0) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected literalsDirectStride(lengths: Uint32Array) of at least one length");
    return NULL;
  }
  uint32_t shortest = UINT32_MAX;
  for (size_t i = 0; i < count; i++)
    if (((const uint32_t *)lengths)[i] < shortest) shortest = ((const uint32_t *)lengths)[i];
  napi_value out;
  CHECK(napi_create_uint32(env, moat_literals_direct_stride(count, shortest), &out));
  return out;
}

/* One prefilter run on libuv's thread pool (the scan starts its own threads from there). */
typedef struct {
  moat_prefilter job;
  char **paths;
  napi_ref refs[3];
  napi_async_work work;
  napi_deferred deferred;
  int rc;
} prefilter_call;

static void prefilter_execute(napi_env env, void *data) {
  (void)env;
  prefilter_call *call = data;
  call->rc = moat_prefilter_run(&call->job);
}

static void prefilter_free(napi_env env, prefilter_call *call) {
  for (size_t i = 0; i < call->job.count; i++) free(call->paths[i]);
  free(call->paths);
  for (int k = 0; k < 3; k++)
    if (call->refs[k] != NULL) napi_delete_reference(env, call->refs[k]);
  free(call->job.flags);
  free(call->job.errors);
  free(call->job.sizes);
  if (call->job.events != NULL)
    for (size_t i = 0; i < call->job.count; i++) free(call->job.events[i].items);
  free(call->job.events);
  free(call);
}

/* Sets obj[name] to a new typed array of `count` items of `size` bytes; its memory, or NULL when it could not be made. */
static void *typed_member(napi_env env, napi_value obj, const char *name, napi_typedarray_type type, size_t count, size_t size) {
  void *dest = NULL;
  napi_value buffer, value;
  if (napi_create_arraybuffer(env, (count == 0 ? 1 : count) * size, &dest, &buffer) != napi_ok ||
      napi_create_typedarray(env, type, count, buffer, 0, &value) != napi_ok || napi_set_named_property(env, obj, name, value) != napi_ok)
    return NULL;
  return dest;
}

static void prefilter_complete(napi_env env, napi_status status, void *data) {
  prefilter_call *call = data;
  napi_value result = NULL;
  size_t n = call->job.count;
  void *dest = NULL;
  if (status == napi_ok && call->rc == 0 && napi_create_object(env, &result) == napi_ok) {
    if ((dest = typed_member(env, result, "flags", napi_uint8_array, n, 1)) != NULL && n > 0) memcpy(dest, call->job.flags, n);
    if ((dest = typed_member(env, result, "errors", napi_int32_array, n, sizeof(int32_t))) != NULL && n > 0)
      memcpy(dest, call->job.errors, n * sizeof(int32_t));
    if ((dest = typed_member(env, result, "sizes", napi_float64_array, n, sizeof(double))) != NULL && n > 0)
      memcpy(dest, call->job.sizes, n * sizeof(double));
    /* events: every file's triples in one array; eventStarts[i]..eventStarts[i + 1] are file i's. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += call->job.events[i].n;
    if ((dest = typed_member(env, result, "events", napi_float64_array, total, sizeof(double))) != NULL) {
      size_t at = 0;
      for (size_t i = 0; i < n; i++) {
        if (call->job.events[i].n > 0) memcpy((double *)dest + at, call->job.events[i].items, call->job.events[i].n * sizeof(double));
        at += call->job.events[i].n;
      }
    }
    if ((dest = typed_member(env, result, "eventStarts", napi_float64_array, n + 1, sizeof(double))) != NULL) {
      double *starts = dest;
      size_t at = 0;
      for (size_t i = 0; i < n; i++) {
        starts[i] = (double)at;
        at += call->job.events[i].n;
      }
      starts[n] = (double)at;
    }
    /* This prefilter lists the windows that may hold a split literal (MOAT_PREFILTER_SPLIT_WINDOW). */
    napi_value split_listed;
    if (napi_get_boolean(env, true, &split_listed) == napi_ok) napi_set_named_property(env, result, "splitWindows", split_listed);
    napi_resolve_deferred(env, call->deferred, result);
  } else {
    napi_value message, error;
    napi_create_string_utf8(env, call->rc != 0 ? "the prefilter could not run (libhs not loaded or bad arguments)" : "the prefilter failed",
                            NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_reject_deferred(env, call->deferred, error);
  }
  napi_delete_async_work(env, call->work);
  prefilter_free(env, call);
}

/*
 * prefilterFiles(literals, triggers | null, audit | null, paths: string[], chunk, maxLength,
 * auditCarry, threads) → Promise<{ flags: Uint8Array, errors: Int32Array, sizes: Float64Array,
 * events: Float64Array, eventStarts: Float64Array }>: per file, what it may hold
 * (MOAT_PREFILTER_*), the errno that kept it unread, its size, and the audit's matches.
 */
static napi_value prefilter_files(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  literal_set *sets[3] = {NULL, NULL, NULL};
  bool is_array = false;
  uint32_t n = 0, chunk = 0, max_len = 0, audit_carry = 0, threads = 0;
  int ok = argc == 8 && (sets[0] = set_arg(env, argv[0])) != NULL && !sets[0]->regex &&
           napi_is_array(env, argv[3], &is_array) == napi_ok && is_array && napi_get_array_length(env, argv[3], &n) == napi_ok &&
           napi_get_value_uint32(env, argv[4], &chunk) == napi_ok && napi_get_value_uint32(env, argv[5], &max_len) == napi_ok &&
           napi_get_value_uint32(env, argv[6], &audit_carry) == napi_ok && napi_get_value_uint32(env, argv[7], &threads) == napi_ok &&
           chunk > 0 && chunk <= 0x7fff0000u && max_len <= 0x10000u && audit_carry <= 0x10000u && n <= MAX_PATHS;
  for (int k = 1; ok && k < 3; k++) {
    napi_valuetype type;
    ok = napi_typeof(env, argv[k], &type) == napi_ok &&
         (type == napi_null || ((sets[k] = set_arg(env, argv[k])) != NULL && sets[k]->regex));
  }
  if (!ok) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS",
                          "expected prefilterFiles(literals, triggers | null, audit | null, paths: string[], chunk > 0, maxLength <= 65536, "
                          "auditCarry <= 65536, threads)");
    return NULL;
  }
  prefilter_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    napi_throw_error(env, "ERR_NATIVE", "out of memory");
    return NULL;
  }
  call->paths = calloc(n == 0 ? 1 : n, sizeof *call->paths);
  call->job.flags = calloc(n == 0 ? 1 : n, 1);
  call->job.errors = calloc(n == 0 ? 1 : n, sizeof(int));
  call->job.sizes = calloc(n == 0 ? 1 : n, sizeof(double));
  call->job.events = calloc(n == 0 ? 1 : n, sizeof(event_list));
  call->job.count = n;
  int failed = call->paths == NULL || call->job.flags == NULL || call->job.errors == NULL || call->job.sizes == NULL || call->job.events == NULL;
  for (uint32_t i = 0; !failed && i < n; i++) {
    napi_value item;
    size_t len = 0;
    if (napi_get_element(env, argv[3], i, &item) != napi_ok) {
      failed = 2; /* a getter threw: its exception is pending */
      break;
    }
    size_t written = 0;
    failed = napi_get_value_string_utf8(env, item, NULL, 0, &len) != napi_ok || len > 4096 || (call->paths[i] = malloc(len + 1)) == NULL ||
             napi_get_value_string_utf8(env, item, call->paths[i], len + 1, &written) != napi_ok || strlen(call->paths[i]) != len;
  }
  if (failed) {
    prefilter_free(env, call);
    if (failed == 1) napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected every path as a string of at most 4096 bytes without NUL");
    return NULL;
  }
  /* The sets stay alive (referenced) until the run completes. */
  for (int k = 0; k < 3; k++)
    if (sets[k] != NULL) napi_create_reference(env, argv[k], 1, &call->refs[k]);
  call->job.literals = sets[0]->m;
  call->job.triggers = sets[1] != NULL ? sets[1]->m : NULL;
  call->job.audit = sets[2] != NULL ? sets[2]->m : NULL;
  call->job.paths = (const char *const *)call->paths;
  call->job.chunk = chunk;
  call->job.max_len = max_len;
  call->job.audit_carry = audit_carry;
  call->job.threads = threads;
  napi_value promise, name;
  if (napi_create_promise(env, &call->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "moat.prefilter", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, prefilter_execute, prefilter_complete, call, &call->work) != napi_ok ||
      napi_queue_async_work(env, call->work) != napi_ok) {
    prefilter_free(env, call);
    napi_throw_error(env, "ERR_NATIVE", "cannot start the prefilter");
    return NULL;
  }
  return promise;
}

/* Tags a verifier key's external, so no other external (a literal set) is taken for one. */
static const napi_type_tag MAC_KEY_TAG = {0x6d6f61745f6d6163ULL, 0x6b65795f76310001ULL};

static void mac_key_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  moat_mac_key_free(data);
}

/* stampKey(key: Uint8Array) → a handle holding the keyed HMAC state (verifier side; the bytes are not kept). */
static napi_value stamp_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  const unsigned char *key = NULL;
  size_t key_len = 0;
  if (argc < 1 || !uint8_arg(env, argv[0], &key, &key_len) || key_len < 32 || key_len > 1024) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected stampKey(key: Uint8Array) of 32-1024 bytes");
    return NULL;
  }
  moat_mac_key *mac = moat_mac_key_new(key, key_len);
  if (mac == NULL) {
    napi_throw_error(env, "ERR_NATIVE_CRYPTO", "cannot set up HMAC-SHA-256 with this key");
    return NULL;
  }
  napi_value handle;
  if (napi_create_external(env, mac, mac_key_finalize, NULL, &handle) != napi_ok) {
    moat_mac_key_free(mac);
    napi_throw_error(env, "ERR_NATIVE", "cannot create the key's handle");
    return NULL;
  }
  /* Untagged, the handle is refused by stampMatches; the finalizer still frees it. */
  if (napi_type_tag_object(env, handle, &MAC_KEY_TAG) != napi_ok) {
    napi_throw_error(env, "ERR_NATIVE", "cannot tag the key's handle");
    return NULL;
  }
  return handle;
}

/* jsonObject(bytes: Uint8Array) → 0 (an object with members, no "moat_att"), 1 (an empty object), 2 (anything else) */
static napi_value json_object(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  const unsigned char *data = NULL;
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !uint8_arg(env, argv[0], &data, &length)) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected jsonObject(bytes: Uint8Array)");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_uint32(env, (uint32_t)moat_json_object(data, length), &out));
  return out;
}

/* stampMatches(key, base: Uint8Array | null, body: Uint8Array, stampStart, stampEnd) → whether the received stamp is genuine */
static napi_value stamp_matches(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool tagged = false;
  moat_mac_key *key = NULL;
  napi_valuetype base_type = napi_undefined;
  const unsigned char *base = NULL, *body = NULL;
  size_t base_len = 0, body_len = 0;
  double start = -1, end = -1;
  if (argc < 5 || !is_external(env, argv[0]) || napi_check_object_type_tag(env, argv[0], &MAC_KEY_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, argv[0], (void **)&key) != napi_ok || napi_typeof(env, argv[1], &base_type) != napi_ok ||
      (base_type != napi_null && !uint8_arg(env, argv[1], &base, &base_len)) || !uint8_arg(env, argv[2], &body, &body_len) ||
      napi_get_value_double(env, argv[3], &start) != napi_ok || napi_get_value_double(env, argv[4], &end) != napi_ok) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected stampMatches(key, base: Uint8Array | null, body: Uint8Array, stampStart, stampEnd)");
    return NULL;
  }
  /* Whole offsets inside the body; moat_stamp_check refuses a region of the wrong length. */
  int whole = start >= 0 && end >= start && end <= (double)body_len && start == (double)(size_t)start && end == (double)(size_t)end;
  moat_check_result r = whole ? moat_stamp_check(key, base, base_len, body, body_len, (size_t)start, (size_t)end) : MOAT_CHECK_REGION;
  if (r == MOAT_CHECK_REGION) {
    napi_throw_range_error(env, "ERR_NATIVE_STAMP_REGION", "expected a stamp region of 32-64 even hex digits inside the body");
    return NULL;
  }
  if (r == MOAT_CHECK_CRYPTO) {
    napi_throw_error(env, "ERR_NATIVE_CRYPTO", "HMAC-SHA-256 failed");
    return NULL;
  }
  napi_value out;
  CHECK(napi_get_boolean(env, r == MOAT_CHECK_MATCH, &out));
  return out;
}

/*
 * Keeps this library mapped until the process ends. Node unloads an addon when the last
 * environment that loaded it goes (a worker that exits, when the main thread never loaded
 * it), yet code here still runs after that: libuv calls the close callbacks of the loop's
 * handles later, and a transfer thread finishes its last steps after its worker is gone.
 * Loading itself once more with RTLD_NODELETE makes the unload a no-op.
 */
static void pin_library(void) {
  static atomic_int pinned;
  Dl_info self;
  if (atomic_exchange(&pinned, 1) != 0) return;
  if (dladdr((void *)&pin_library, &self) != 0 && self.dli_fname != NULL) {
    if (dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) == NULL) atomic_store(&pinned, 0);
  }
}

static napi_value init(napi_env env, napi_value exports) {
  pin_library();
  /* request() takes options.envelope: callers may leave the append to the addon. */
  napi_value appends_envelope;
  CHECK(napi_get_boolean(env, true, &appends_envelope));
  napi_property_descriptor props[] = {
      {"request", NULL, request, NULL, NULL, NULL, napi_default, NULL},
      {"keyId", NULL, key_id, NULL, NULL, NULL, napi_default, NULL},
      {"setUndumpable", NULL, set_undumpable, NULL, NULL, NULL, napi_default, NULL},
      {"getDumpable", NULL, get_dumpable, NULL, NULL, NULL, napi_default, NULL},
      {"secureBuffer", NULL, secure_buffer, NULL, NULL, NULL, napi_default, NULL},
      {"scrubEnvBlock", NULL, scrub_env_block, NULL, NULL, NULL, napi_default, NULL},
      {"literalsCompile", NULL, literals_compile, NULL, NULL, NULL, napi_default, NULL},
      {"literalsCompilePacked", NULL, literals_compile_packed, NULL, NULL, NULL, napi_default, NULL},
      {"literalsDirectStride", NULL, literals_direct_stride, NULL, NULL, NULL, napi_default, NULL},
      {"literalsScan", NULL, literals_scan, NULL, NULL, NULL, napi_default, NULL},
      {"literalsForms", NULL, literals_forms, NULL, NULL, NULL, napi_default, NULL},
      {"literalsSerialize", NULL, literals_serialize, NULL, NULL, NULL, napi_default, NULL},
      {"regexCompile", NULL, regex_compile, NULL, NULL, NULL, napi_default, NULL},
      {"regexCompileAsync", NULL, regex_compile_async, NULL, NULL, NULL, napi_default, NULL},
      {"literalsVersion", NULL, literals_version, NULL, NULL, NULL, napi_default, NULL},
      {"prefilterFiles", NULL, prefilter_files, NULL, NULL, NULL, napi_default, NULL},
      {"transportMode", NULL, transport_mode, NULL, NULL, NULL, napi_default, NULL},
      {"stampKey", NULL, stamp_key, NULL, NULL, NULL, napi_default, NULL},
      {"stampMatches", NULL, stamp_matches, NULL, NULL, NULL, napi_default, NULL},
      {"jsonObject", NULL, json_object, NULL, NULL, NULL, napi_default, NULL},
      {"sha256", NULL, sha256, NULL, NULL, NULL, napi_default, NULL},
      {"appendsEnvelope", NULL, NULL, NULL, NULL, appends_envelope, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  if (!moat_install_define(env, exports)) napi_throw_error(env, "ERR_NATIVE", "cannot define the install functions");
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
