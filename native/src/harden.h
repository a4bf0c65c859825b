#ifndef MOAT_HARDEN_H
#define MOAT_HARDEN_H
#include <stddef.h>

/* prctl(PR_SET_DUMPABLE, 0): returns 0, or an errno. Non-Linux: ENOSYS. */
int moat_set_undumpable(void);
/* prctl(PR_GET_DUMPABLE): 1, 0, or -errno. */
int moat_get_dumpable(void);

/* Page-aligned memory, mlock'ed and excluded from core dumps where the OS allows. */
void *moat_secure_alloc(size_t size, int *locked, int *dontdump);
void moat_secure_free(void *p, size_t size);

/*
 * Overwrites the value of NAME in the process's original environment block (what
 * /proc/self/environ shows) with NUL bytes. Returns the number of bytes wiped, or -errno.
 */
long moat_scrub_env_block(const char *name);

#endif
