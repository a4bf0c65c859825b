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
  MOAT_STAMP_NO_REQUEST = 5 /* an r1 envelope, but the request's components are not known: left unstamped */
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
