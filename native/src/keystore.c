#ifdef __APPLE__
#define __STDC_WANT_LIB_EXT1__ 1 /* memset_s */
#endif
#include "keystore.h"
#include <string.h>
#include "key.h"

const char *moat_key_id(void) { return MOAT_KID; }

size_t moat_key_len(void) { return MOAT_KEY_LEN; }

void moat_key_load(unsigned char *out) {
  /* The key never exists as contiguous plain bytes in the binary: masked and permuted. */
  for (size_t i = 0; i < MOAT_KEY_LEN; i++) out[MOAT_KEY_PERM[i]] = MOAT_KEY_MASKED[i] ^ MOAT_KEY_MASK[i];
}

/* A wipe the compiler may not drop as a dead store (libcrypto's OPENSSL_cleanse does the same;
   the C library's needs no library loaded). */
void moat_wipe(void *p, size_t n) {
#ifdef __APPLE__
  memset_s(p, n, 0, n);
#else
  explicit_bzero(p, n);
#endif
}
