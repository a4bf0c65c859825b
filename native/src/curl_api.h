#ifndef MOAT_CURL_API_H
#define MOAT_CURL_API_H
#include <curl/curl.h>

/*
 * libcurl, opened on first use instead of linked: loading it and its dependencies costs
 * about 5 ms, which every process that only hardens itself or never sends a request would
 * pay at start. The headers give the types; dlsym gives the functions.
 */
typedef struct {
  CURLcode (*global_init)(long flags);
  CURLSH *(*share_init)(void);
  CURLSHcode (*share_setopt)(CURLSH *share, CURLSHoption option, ...);
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
  CURLcode (*easy_perform)(CURL *curl);
  CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
  void (*easy_cleanup)(CURL *curl);
  void (*easy_reset)(CURL *curl);
  const char *(*easy_strerror)(CURLcode code);
  struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
  void (*slist_free_all)(struct curl_slist *list);
  CURLU *(*url)(void);
  CURLUcode (*url_set)(CURLU *handle, CURLUPart what, const char *part, unsigned int flags);
  CURLUcode (*url_get)(const CURLU *handle, CURLUPart what, char **part, unsigned int flags);
  void (*url_cleanup)(CURLU *handle);
  void (*free)(void *p);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *multi, CURLMoption option, ...);
  CURLMcode (*multi_add_handle)(CURLM *multi, CURL *easy);
  CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *easy);
  CURLMcode (*multi_socket_action)(CURLM *multi, curl_socket_t s, int ev_bitmask, int *running_handles);
  CURLMsg *(*multi_info_read)(CURLM *multi, int *msgs_in_queue);
  CURLMcode (*multi_cleanup)(CURLM *multi);
} moat_curl_api;

/* libcurl, loaded and globally initialised (thread-safe, once); NULL when it cannot be. */
const moat_curl_api *moat_curl(void);

/* Why moat_curl() returned NULL (a static string; never contains key material). */
const char *moat_curl_error(void);

#endif
