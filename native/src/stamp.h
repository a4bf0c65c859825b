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

#endif
