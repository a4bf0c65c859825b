#include "curl_api.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static moat_curl_api api;
static const moat_curl_api *loaded;
static char error[256] = "libcurl not loaded";
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The library's ABI-4 name, found on the dynamic linker's own search path. */
#ifdef __APPLE__
#define MOAT_LIBCURL "libcurl.4.dylib"
#else
#define MOAT_LIBCURL "libcurl.so.4"
#endif

static void load(void) {
  void *lib = dlopen(MOAT_LIBCURL, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    snprintf(error, sizeof error, "libcurl unavailable: %s", dlerror());
    return;
  }
#define RESOLVE(field, symbol)                                                    \
  do {                                                                            \
    *(void **)(&api.field) = dlsym(lib, symbol);                                  \
    if (api.field == NULL) {                                                      \
      snprintf(error, sizeof error, "libcurl unavailable: no symbol %s", symbol); \
      return;                                                                     \
    }                                                                             \
  } while (0)
  RESOLVE(global_init, "curl_global_init");
  RESOLVE(share_init, "curl_share_init");
  RESOLVE(share_setopt, "curl_share_setopt");
  RESOLVE(easy_init, "curl_easy_init");
  RESOLVE(easy_setopt, "curl_easy_setopt");
  RESOLVE(easy_perform, "curl_easy_perform");
  RESOLVE(easy_getinfo, "curl_easy_getinfo");
  RESOLVE(easy_cleanup, "curl_easy_cleanup");
  RESOLVE(easy_reset, "curl_easy_reset");
  RESOLVE(easy_strerror, "curl_easy_strerror");
  RESOLVE(slist_append, "curl_slist_append");
  RESOLVE(slist_free_all, "curl_slist_free_all");
  RESOLVE(url, "curl_url");
  RESOLVE(url_set, "curl_url_set");
  RESOLVE(url_get, "curl_url_get");
  RESOLVE(url_cleanup, "curl_url_cleanup");
  RESOLVE(free, "curl_free");
  RESOLVE(multi_init, "curl_multi_init");
  RESOLVE(multi_setopt, "curl_multi_setopt");
  RESOLVE(multi_add_handle, "curl_multi_add_handle");
  RESOLVE(multi_remove_handle, "curl_multi_remove_handle");
  RESOLVE(multi_socket_action, "curl_multi_socket_action");
  RESOLVE(multi_info_read, "curl_multi_info_read");
  RESOLVE(multi_cleanup, "curl_multi_cleanup");
#undef RESOLVE
  if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(error, sizeof error, "libcurl initialisation failed");
    return;
  }
  loaded = &api;
}

const moat_curl_api *moat_curl(void) {
  pthread_once(&once, load);
  return loaded;
}

const char *moat_curl_error(void) {
  return error;
}
