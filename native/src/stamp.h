#ifndef MOAT_STAMP_H
#define MOAT_STAMP_H
#include <stddef.h>

/* Outcome of moat_stamp(). */
typedef enum {
  MOAT_STAMP_OK = 0,
  MOAT_STAMP_NO_ENVELOPE = 1, /* no anchored envelope: the body is sent unstamped */
  MOAT_STAMP_NOT_PLACEHOLDER = 2, /* the stamp region is not all '0' (already stamped?) */
  MOAT_STAMP_WRONG_KID = 3, /* the envelope names another key id than the compiled-in one */
  MOAT_STAMP_CRYPTO = 4
} moat_stamp_result;

/*
 * Finds the anchored envelope — the body ends with ,"moat_att":"v1.<kid>.<ts>.<nonce>.<000…>"}
 * (or {"moat_att":…}) — and overwrites its placeholder in place with the truncated
 * HMAC-SHA-256 of the whole body (placeholder in place), keyed with the compiled-in key.
 * Only that anchored position is ever written; the body length never changes.
 */
moat_stamp_result moat_stamp(unsigned char *body, size_t len);

#endif
