#define MOAT_CRYPTO_LOADER
#include "crypto_api.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

moat_crypto_api moat_crypto_fns;
static int loaded;
static char error[256] = "libcrypto not loaded";
static pthread_once_t once = PTHREAD_ONCE_INIT;

#ifdef __APPLE__
/* Linked there (binding.gyp): the table holds the linked functions. */
static void load(void) {
#define MOAT_CRYPTO_LINKED(name) moat_crypto_fns.name = &name;
  MOAT_CRYPTO_FUNCTIONS(MOAT_CRYPTO_LINKED)
#undef MOAT_CRYPTO_LINKED
  loaded = 1;
}
#else
/* OpenSSL 3's name (the headers the addon is built with), on the dynamic linker's own search path. */
#define MOAT_LIBCRYPTO "libcrypto.so.3"

/* Every function from `scope` into `out`: NULL, or the name of the first one it lacks. */
static const char *resolve(void *scope, moat_crypto_api *out) {
#define MOAT_CRYPTO_RESOLVE(name)                      \
  *(void **)(&out->name) = dlsym(scope, #name);        \
  if (out->name == NULL) return #name;
  MOAT_CRYPTO_FUNCTIONS(MOAT_CRYPTO_RESOLVE)
#undef MOAT_CRYPTO_RESOLVE
  return NULL;
}

/*
 * The process's own OpenSSL 3 when it exports one whole (Node does, for addons: the addon then
 * shares Node's, as a linked addon did, and nothing is loaded); else libcrypto.so.3 (Bun
 * exports none). All functions come from one of the two, never some from each.
 */
static void load(void) {
  moat_crypto_api found;
  unsigned long (*version)(void);
  *(void **)(&version) = dlsym(RTLD_DEFAULT, "OpenSSL_version_num");
  if (version == NULL || version() < 0x30000000UL || resolve(RTLD_DEFAULT, &found) != NULL) {
    void *lib = dlopen(MOAT_LIBCRYPTO, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
      snprintf(error, sizeof error, "libcrypto unavailable: %s", dlerror());
      return;
    }
    const char *missing = resolve(lib, &found);
    if (missing != NULL) {
      snprintf(error, sizeof error, "libcrypto unavailable: no symbol %s", missing);
      return;
    }
  }
  /* Published whole: the table is written once, before moat_crypto_load() first returns 1. */
  moat_crypto_fns = found;
  loaded = 1;
}
#endif

int moat_crypto_load(void) {
  pthread_once(&once, load);
  return loaded;
}

const char *moat_crypto_error(void) { return error; }
