/*
 * N-API glue of the per-install keys (install.h): installOpen, installActivate,
 * installForget, and request()'s options.install. What crosses into JavaScript is public:
 * the install's public key, its id, the enrollment key id and how it is sealed.
 */
#include "install_addon.h"
#include <stdio.h>
#include <string.h>
#include "install.h"

/* Throws a result's typed error with `why`; NULL for the caller to return. */
static napi_value throw_result(napi_env env, moat_install_result r, const char *why) {
  const char *msg = why[0] != '\0'             ? why
                    : r == MOAT_INSTALL_CRYPTO ? "OpenSSL failed (out of memory?)"
                                               : "install state failed";
  if (r == MOAT_INSTALL_ARG)
    napi_throw_type_error(env, moat_install_code(r), msg);
  else
    napi_throw_error(env, moat_install_code(r), msg);
  return NULL;
}

/* A string argument into buf (at most cap - 1 bytes, no NUL inside); 0 when it threw. */
static int arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap) {
  napi_valuetype t;
  size_t len = 0;
  char msg[128];
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string ||
      napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    snprintf(msg, sizeof msg, "expected %s as a string, got another value", name);
  } else if (len >= cap) {
    snprintf(msg, sizeof msg, "expected %s of at most %zu bytes, got %zu", name, cap - 1, len);
  } else if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok || memchr(buf, '\0', len) != NULL) {
    snprintf(msg, sizeof msg, "expected %s without a NUL character, got one with a NUL", name);
  } else {
    return 1;
  }
  napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", msg);
  return 0;
}

/* options.create (default true) and options.keystore ('auto' default, or 'file'); 0 when it threw. */
static int open_options(napi_env env, napi_value options, int *create, int *file_only) {
  napi_valuetype t;
  *create = 1;
  *file_only = 0;
  if (napi_typeof(env, options, &t) != napi_ok || t == napi_undefined || t == napi_null) return 1;
  napi_value v;
  bool b = true;
  if (t != napi_object || napi_get_named_property(env, options, "create", &v) != napi_ok ||
      napi_typeof(env, v, &t) != napi_ok) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected installOpen(path, origin, options?: object)");
    return 0;
  }
  if (t == napi_boolean && napi_get_value_bool(env, v, &b) == napi_ok)
    *create = b;
  else if (t != napi_undefined) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected options.create as a boolean, got another value");
    return 0;
  }
  char keystore[8] = "auto";
  if (napi_get_named_property(env, options, "keystore", &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t != napi_undefined && !arg_string(env, v, "options.keystore", keystore, sizeof keystore)) return 0;
  if (strcmp(keystore, "auto") != 0 && strcmp(keystore, "file") != 0) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS",
                          "expected options.keystore as 'auto' or 'file', got another string");
    return 0;
  }
  *file_only = strcmp(keystore, "file") == 0;
  return 1;
}

static int set_string(napi_env env, napi_value obj, const char *name, const char *value) {
  napi_value v;
  return napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok &&
         napi_set_named_property(env, obj, name, v) == napi_ok;
}

/* installOpen(path, origin, { create?, keystore? }?) → { publicKey, enrolled, installId?, ekid?, sealed } | null */
static napi_value install_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  char dir[MOAT_INSTALL_MAX_DIR + 1], origin[MOAT_INSTALL_MAX_ORIGIN + 1], why[256] = "";
  int create, file_only;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS",
                          "expected installOpen(path: string, origin: string, options?: object)");
    return NULL;
  }
  if (!arg_string(env, argv[0], "path", dir, sizeof dir) || !arg_string(env, argv[1], "origin", origin, sizeof origin))
    return NULL;
  if (!open_options(env, argc > 2 ? argv[2] : NULL, &create, &file_only)) return NULL;
  moat_install_info state;
  moat_install_result r = moat_install_open(dir, origin, create, file_only, &state, why, sizeof why);
  if (r == MOAT_INSTALL_NONE) {
    napi_get_null(env, &out);
    return out;
  }
  if (r != MOAT_INSTALL_OK) return throw_result(env, r, why);
  napi_value enrolled;
  if (napi_create_object(env, &out) != napi_ok || !set_string(env, out, "publicKey", state.public_key) ||
      napi_get_boolean(env, state.enrolled != 0, &enrolled) != napi_ok ||
      napi_set_named_property(env, out, "enrolled", enrolled) != napi_ok ||
      (state.enrolled &&
       (!set_string(env, out, "installId", state.install_id) || !set_string(env, out, "ekid", state.ekid))) ||
      !set_string(env, out, "sealed", moat_seal_name(state.sealed))) {
    napi_throw_error(env, "ERR_NATIVE", "cannot make the install's description");
    return NULL;
  }
  return out;
}

/* installActivate(origin, installId, ekid, verifierPublicKey, challenge) */
static napi_value install_activate(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  char origin[MOAT_INSTALL_MAX_ORIGIN + 1], iid[33], ekid[33], verifier[64], challenge[64], why[256] = "";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(
        env, "ERR_NATIVE_OPTIONS",
        "expected installActivate(origin, installId, ekid, verifierPublicKey, challenge): five strings");
    return NULL;
  }
  if (!arg_string(env, argv[0], "origin", origin, sizeof origin) ||
      !arg_string(env, argv[1], "installId", iid, sizeof iid) || !arg_string(env, argv[2], "ekid", ekid, sizeof ekid) ||
      !arg_string(env, argv[3], "verifierPublicKey", verifier, sizeof verifier) ||
      !arg_string(env, argv[4], "challenge", challenge, sizeof challenge))
    return NULL;
  moat_install_result r = moat_install_activate(origin, iid, ekid, verifier, challenge, why, sizeof why);
  if (r != MOAT_INSTALL_OK) return throw_result(env, r, why);
  return NULL;
}

/* installForget(origin, path?): the key from memory, the state file (under path, or the open one's) from disk. */
static napi_value install_forget(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char origin[MOAT_INSTALL_MAX_ORIGIN + 1], dir[MOAT_INSTALL_MAX_DIR + 1], why[256] = "";
  napi_valuetype t = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, "ERR_NATIVE_OPTIONS", "expected installForget(origin: string, path?: string)");
    return NULL;
  }
  if (!arg_string(env, argv[0], "origin", origin, sizeof origin)) return NULL;
  if (argc > 1 && napi_typeof(env, argv[1], &t) == napi_ok && t != napi_undefined &&
      !arg_string(env, argv[1], "path", dir, sizeof dir))
    return NULL;
  moat_install_result r = moat_install_forget(origin, argc > 1 && t != napi_undefined ? dir : NULL, why, sizeof why);
  if (r != MOAT_INSTALL_OK) return throw_result(env, r, why);
  return NULL;
}

int moat_install_request_option(napi_env env, napi_value options, struct moat_install_key **out) {
  napi_value v;
  napi_valuetype t;
  char origin[MOAT_INSTALL_MAX_ORIGIN + 1];
  *out = NULL;
  if (napi_get_named_property(env, options, "install", &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_undefined || t == napi_null) return 1;
  if (!arg_string(env, v, "options.install", origin, sizeof origin)) return 0;
  *out = moat_install_key_get(origin);
  if (*out != NULL) return 1;
  napi_throw_error(env, "ERR_NATIVE_INSTALL_UNKNOWN",
                   "expected options.install to name an origin with an enrolled install, got one without");
  return 0;
}

int moat_install_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"installOpen", NULL, install_open, NULL, NULL, NULL, napi_default, NULL},
      {"installActivate", NULL, install_activate, NULL, NULL, NULL, napi_default, NULL},
      {"installForget", NULL, install_forget, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props) == napi_ok;
}
