#include "keystore.h"
#include <openssl/crypto.h>
#include "key.h"

const char *moat_key_id(void) { return MOAT_KID; }

size_t moat_key_len(void) { return MOAT_KEY_LEN; }

void moat_key_load(unsigned char *out) {
  /* The key never exists as contiguous plain bytes in the binary: masked and permuted. */
  for (size_t i = 0; i < MOAT_KEY_LEN; i++) out[MOAT_KEY_PERM[i]] = MOAT_KEY_MASKED[i] ^ MOAT_KEY_MASK[i];
}

void moat_wipe(void *p, size_t n) { OPENSSL_cleanse(p, n); }
