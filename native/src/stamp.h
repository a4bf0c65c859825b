#ifndef MOAT_STAMP_H
#define MOAT_STAMP_H
#include <stddef.h>

/* Outcome of moat_stamp(). */
typedef enum {
  MOAT_STAMP_OK = 0,
  MOAT_STAMP_NO_ENVELOPE = 1, /* no anchored envelope: the body is sent unstamped */
  MOAT_STAMP_NOT_PLACEHOLDER = 2, /* the stamp region is not all '0' (already stamped?) */
  MOAT_STAMP_WRONG_KID = 3, /* the envelope names another key id than the compiled-in one */
  MOAT_STAMP_CRYPTO = 4,
  MOAT_STAMP_NO_REQUEST = 5 /* an r1 or i1 envelope, but the request's components are not known: left unstamped */
} moat_stamp_result;

/*
 * What an r1 stamp covers besides the body (SPEC.md §5.3), taken from the request the
 * transport actually sends: its method, the authority it sets as Host, the path of the URL
 * it hands libcurl, and the credential header it sends.
 */
typedef struct {
  const char *method;
  const char *authority;
  const char *path;
  const char *credential; /* "" when the request carries none */
  /* An install's stamp (i1, SPEC.md §5.4): its id and keyed MAC state; NULL for the release key. */
  const char *install_id;
  const struct moat_mac_key *install_key;
} moat_request_components;

/*
 * Finds the anchored envelope — the body ends with ,"moat_att":"v1.<kid>.<ts>.<nonce>.<000…>"}
 * (or {"moat_att":…}) — and overwrites its placeholder in place with the truncated
 * HMAC-SHA-256 of the whole body (placeholder in place), keyed with the compiled-in key.
 * For an r1 envelope the MAC reads the request base of `request` first; `request` NULL
 * leaves an r1 envelope unstamped. Only that anchored position is ever written; the body
 * length never changes.
 */
moat_stamp_result moat_stamp(unsigned char *body, size_t len, const moat_request_components *request);

/* Whether the body ends with an anchored placeholder one moat_stamp would write: for the compiled-in
   key, or (install_id not NULL) an i1 placeholder for that install. */
int moat_stamp_pending(const unsigned char *body, size_t len, const char *install_id);

/* One lp() item (SPEC.md §5.3) into out: the length as a 32-bit big-endian integer, then the bytes. */
size_t moat_lp_item(unsigned char *out, const char *bytes, size_t len);

/*
 * The same stamp computed while the body goes out (a large body's MAC then overlaps with
 * its sending): moat_stamp_begin checks the envelope as moat_stamp does and keys the MAC
 * (reading the r1 request base), moat_stamp_advance takes the body up to `upto` — any byte
 * before the stamp region may be sent once it is in — and moat_stamp_finish takes the rest
 * and writes the stamp, after which the region may be sent. Results are moat_stamp's; a
 * stream that begun with anything but MOAT_STAMP_OK holds nothing. moat_stamp_abandon
 * frees a stream that will not be finished.
 */
typedef struct {
  struct evp_mac_ctx_st *mac;
  size_t hashed;      /* body bytes the MAC has taken */
  size_t stamp_start; /* the placeholder's first hex digit */
  size_t stamp_len;   /* its hex digits */
} moat_stamp_stream;

moat_stamp_result moat_stamp_begin(moat_stamp_stream *s, const unsigned char *body, size_t len, const moat_request_components *request);
int moat_stamp_advance(moat_stamp_stream *s, const unsigned char *body, size_t upto);
moat_stamp_result moat_stamp_finish(moat_stamp_stream *s, unsigned char *body, size_t len);
void moat_stamp_abandon(moat_stamp_stream *s);

/* A verifier's stamping key, set up once: the HMAC state after the key (what EVP_MAC_init
   computes per call otherwise). Freeing it wipes the key material (EVP_MAC_CTX_free). */
typedef struct moat_mac_key moat_mac_key;

/* NULL when OpenSSL cannot set the key up (or out of memory). */
moat_mac_key *moat_mac_key_new(const unsigned char *key, size_t len);
void moat_mac_key_free(moat_mac_key *key);

/* Outcome of moat_stamp_check(). */
typedef enum { MOAT_CHECK_MISMATCH = 0, MOAT_CHECK_MATCH = 1, MOAT_CHECK_REGION = -1, MOAT_CHECK_CRYPTO = -2 } moat_check_result;

/*
 * Verifies a received stamp as SPEC.md §5.2 computes it: HMAC-SHA-256 over `base` (the r1
 * request base, or none) and the body with [stamp_start, stamp_end) read as ASCII '0', its
 * first (stamp_end - stamp_start) / 2 bytes in lowercase hex compared with the region in
 * constant time. The region must hold 32-64 hex digits, an even count, inside the body.
 */
moat_check_result moat_stamp_check(const moat_mac_key *key, const unsigned char *base, size_t base_len, const unsigned char *body, size_t len,
                                   size_t stamp_start, size_t stamp_end);

#endif
