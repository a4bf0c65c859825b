#ifndef MOAT_KEYSTORE_H
#define MOAT_KEYSTORE_H
#include <stddef.h>

/* Key id of the compiled-in attestation key (public). */
const char *moat_key_id(void);

/*
 * Reconstructs the compiled-in key into `out` (at least moat_key_len() bytes). The caller
 * must wipe it with moat_wipe() as soon as it is used.
 */
size_t moat_key_len(void);
void moat_key_load(unsigned char *out);
void moat_wipe(void *p, size_t n);

#endif
