#ifndef MOAT_INSTALL_ADDON_H
#define MOAT_INSTALL_ADDON_H
#include <node_api.h>

struct moat_install_key;

/* Defines installOpen, installActivate and installForget on `exports`; 0 when it could not. */
int moat_install_define(napi_env env, napi_value exports);

/*
 * request()'s options.install: an origin whose enrolled install stamps the request (i1).
 * `*out` gets a reference to its key (NULL when the option is absent); 0 when it threw
 * (ERR_NATIVE_INSTALL_UNKNOWN: no enrolled install for that origin).
 */
int moat_install_request_option(napi_env env, napi_value options, struct moat_install_key **out);

#endif
