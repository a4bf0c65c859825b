#ifndef MOAT_TRANSPORT_H
#define MOAT_TRANSPORT_H
#include "curl_api.h"
#include <stddef.h>

typedef enum { MOAT_EV_HEADERS = 0, MOAT_EV_DATA = 1, MOAT_EV_END = 2, MOAT_EV_ERROR = 3 } moat_event_type;

/* One event from the transfer thread to JavaScript; the receiver frees data and the event. */
typedef struct {
  moat_event_type type;
  long status;        /* HEADERS: HTTP status */
  int stamp_result;   /* HEADERS: moat_stamp_result of the request body */
  char *data;         /* HEADERS: raw header block; DATA: body bytes; ERROR: message */
  size_t len;
} moat_event;

typedef void (*moat_emit)(void *ctx, moat_event *ev);

typedef struct {
  char *method;
  char *url;
  struct curl_slist *headers;
  unsigned char *body; /* owned; stamped in place on the transfer thread */
  size_t body_len;
  long timeout_ms;
  long connect_timeout_ms;
  char *pinned_pubkey; /* "sha256//<base64>" list, or NULL */
  char *ca_file;       /* extra CA bundle, or NULL */
  char *proxy;         /* the proxy every request goes through ("http://host:port", "socks5://…"), or NULL */
  struct moat_install_key *install; /* a reference: stamp i1 with this install's key (options.install), or NULL */
} moat_request_opts;

/* Frees what `opts` holds (the body wiped first); members left NULL are skipped. */
void moat_request_opts_free(moat_request_opts *opts);

/*
 * The transport's libcurl, loaded on first use with its connection, DNS and TLS caches set
 * up; NULL when libcurl cannot be loaded (moat_curl_error() says why).
 */
const moat_curl_api *moat_transport_ready(void);

/*
 * Stamps the body (one of 32 KB or more as it goes out) and performs the transfer on a new
 * thread, emitting events as the response arrives. `aborted` is polled by the transfer; setting it aborts. Takes ownership
 * of `opts` members. Returns 0 when the thread started.
 */
int moat_transport_start(moat_request_opts *opts, moat_emit emit, void *ctx, volatile int *aborted, void (*done)(void *ctx));

/*
 * Loop mode: transfers driven by libcurl's multi interface on the caller's libuv loop
 * (Node's), with no thread per request. Events are emitted synchronously from inside
 * libcurl's callbacks, so the caller queues them; `drain(user)` runs after each burst of
 * activity, outside libcurl, to deliver them. libuv's functions are looked up at run time:
 * where they are missing (Bun), moat_loop_open returns NULL and the thread mode serves.
 */
typedef struct moat_loop moat_loop;
moat_loop *moat_loop_open(void *uv_loop, void (*drain)(void *user), void *user);

/*
 * Stamps the body and adds the transfer to the loop; returns its handle for moat_loop_abort,
 * or NULL when it could not start (opts freed, its error emitted). A body of 32 KB or more is
 * stamped as it goes out when it is alone on the loop; among other transfers, on the loop's
 * stamping thread before libcurl gets it.
 */
void *moat_loop_start(moat_loop *l, moat_request_opts *opts, moat_emit emit, void *ctx, volatile int *aborted, void (*done)(void *ctx));

/* Ends a transfer at once with its "aborted" error (outside libcurl's callbacks only). */
void moat_loop_abort(moat_loop *l, void *transfer);

/* Ends every transfer without emitting and frees the loop's handles (environment teardown). */
void moat_loop_close(moat_loop *l);

#endif
