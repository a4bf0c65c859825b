#include "stamp.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "crypto_api.h"
#include "keystore.h"

static const char ANCHOR[] = "\"moat_att\":\"";
#define ANCHOR_LEN (sizeof(ANCHOR) - 1)

/* Fetched and set up once: OpenSSL 3 looks algorithms up in its provider store, which per
   request would cost more than the MAC of a small body. The template holds the digest
   choice only, never key material; each stamp duplicates it and sets the key. */
static EVP_MAC_CTX *hmac_template;
static EVP_MD *sha256_md;

/* Lowercase hex of `n` bytes into out[0, 2n): the one spelling a stamp has. */
static void hex_lower(const unsigned char *bytes, size_t n, unsigned char *out) {
  static const char HEX[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = (unsigned char)HEX[bytes[i] >> 4];
    out[2 * i + 1] = (unsigned char)HEX[bytes[i] & 15];
  }
}

static int is_hex_lower(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

size_t moat_lp_item(unsigned char *out, const char *bytes, size_t len) {
  out[0] = (unsigned char)(len >> 24);
  out[1] = (unsigned char)(len >> 16);
  out[2] = (unsigned char)(len >> 8);
  out[3] = (unsigned char)len;
  memcpy(out + 4, bytes, len);
  return 4 + len;
}

/* hex(SHA-256(credential)): the MAC covers the credential's digest, never the credential. */
static int credential_digest_hex(const char *credential, unsigned char out[64]) {
  unsigned char digest[32];
  unsigned int digest_len = 0;
  if (sha256_md == NULL || !EVP_Digest(credential, strlen(credential), digest, &digest_len, sha256_md, NULL) || digest_len != 32) return 0;
  hex_lower(digest, 32, out);
  moat_wipe(digest, sizeof digest);
  return 1;
}

/* lp(["moat-req/1", method, authority, path, hex(SHA-256(credential))]) into the MAC, in one update. */
static int mac_request_base(EVP_MAC_CTX *mac, const moat_request_components *r) {
  static const char LABEL[] = "moat-req/1";
  unsigned char digest_hex[64];
  if (!credential_digest_hex(r->credential, digest_hex)) return 0;
  size_t method_len = strlen(r->method), authority_len = strlen(r->authority), path_len = strlen(r->path);
  size_t len = 5 * 4 + (sizeof LABEL - 1) + method_len + authority_len + path_len + 64;
  unsigned char small[1024];
  unsigned char *base = len <= sizeof small ? small : malloc(len);
  if (base == NULL) return 0;
  size_t at = moat_lp_item(base, LABEL, sizeof LABEL - 1);
  at += moat_lp_item(base + at, r->method, method_len);
  at += moat_lp_item(base + at, r->authority, authority_len);
  at += moat_lp_item(base + at, r->path, path_len);
  at += moat_lp_item(base + at, (const char *)digest_hex, 64);
  int ok = EVP_MAC_update(mac, base, at);
  moat_wipe(base, at);
  moat_wipe(digest_hex, sizeof digest_hex);
  if (base != small) free(base);
  return ok;
}

struct moat_mac_key {
  EVP_MAC_CTX *ctx;
};

static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static void fetch_hmac(void) {
  /* Without libcrypto both stay NULL: every stamp and key then fails as a crypto error. */
  if (!moat_crypto_load()) return;
  sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
  EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = alg != NULL ? EVP_MAC_CTX_new(alg) : NULL;
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0), OSSL_PARAM_construct_end()};
  if (ctx != NULL && EVP_MAC_CTX_set_params(ctx, params)) hmac_template = ctx;
  else EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(alg);
}

/* The anchored envelope's stamp region [*start, *start + *hex_len), and whether it is r1. */
static moat_stamp_result find_placeholder(const unsigned char *body, size_t len, const char *install_id, size_t *start, size_t *hex_len,
                                          int *bound) {
  if (len < ANCHOR_LEN + 3 || body[len - 1] != '}' || body[len - 2] != '"') return MOAT_STAMP_NO_ENVELOPE;
  size_t value_end = len - 2;
  size_t value_start = value_end;
  while (value_start > 0 && body[value_start - 1] != '"' && body[value_start - 1] != '\\') value_start--;
  if (value_start == 0 || body[value_start - 1] != '"') return MOAT_STAMP_NO_ENVELOPE;
  if (value_start < ANCHOR_LEN + 1) return MOAT_STAMP_NO_ENVELOPE;
  size_t anchor_start = value_start - ANCHOR_LEN;
  if (memcmp(body + anchor_start, ANCHOR, ANCHOR_LEN) != 0) return MOAT_STAMP_NO_ENVELOPE;
  if (body[anchor_start - 1] != ',' && body[anchor_start - 1] != '{') return MOAT_STAMP_NO_ENVELOPE;

  /* value = (v1|r1|i1).<kid>.<ts:10>.<nonce:16>.<stamp:32-64 even>; an i1 kid is the install id */
  const unsigned char *v = body + value_start;
  size_t vlen = value_end - value_start;
  int install = vlen >= 3 && memcmp(v, "i1.", 3) == 0;
  if (vlen < 3 || (!install && memcmp(v, "v1.", 3) != 0 && memcmp(v, "r1.", 3) != 0)) return MOAT_STAMP_NO_ENVELOPE;
  /* An i1 placeholder only with its install's key, and that key only for an i1 placeholder. */
  if (install != (install_id != NULL)) return MOAT_STAMP_WRONG_KID;
  *bound = v[0] != 'v';
  size_t dots[4];
  int ndots = 0;
  for (size_t i = 2; i < vlen && ndots < 5; i++) {
    if (v[i] == '.') {
      if (ndots == 4) return MOAT_STAMP_NO_ENVELOPE;
      dots[ndots++] = i;
    }
  }
  if (ndots != 4) return MOAT_STAMP_NO_ENVELOPE;
  size_t kid_len = dots[1] - dots[0] - 1;
  const char *kid = install ? install_id : moat_key_id();
  if (kid_len != strlen(kid) || memcmp(v + dots[0] + 1, kid, kid_len) != 0) return MOAT_STAMP_WRONG_KID;
  if (dots[2] - dots[1] - 1 != 10 || dots[3] - dots[2] - 1 != 16) return MOAT_STAMP_NO_ENVELOPE;
  size_t stamp_start = value_start + dots[3] + 1;
  size_t stamp_len = value_end - stamp_start;
  if (stamp_len < 32 || stamp_len > 64 || stamp_len % 2 != 0) return MOAT_STAMP_NO_ENVELOPE;
  for (size_t i = stamp_start; i < value_end; i++) {
    if (!is_hex_lower(body[i])) return MOAT_STAMP_NO_ENVELOPE;
    if (body[i] != '0') return MOAT_STAMP_NOT_PLACEHOLDER;
  }
  *start = stamp_start;
  *hex_len = stamp_len;
  return MOAT_STAMP_OK;
}

int moat_stamp_pending(const unsigned char *body, size_t len, const char *install_id) {
  size_t start, hex_len;
  int bound;
  return find_placeholder(body, len, install_id, &start, &hex_len, &bound) == MOAT_STAMP_OK;
}

moat_stamp_result moat_stamp_begin(moat_stamp_stream *s, const unsigned char *body, size_t len, const moat_request_components *request) {
  memset(s, 0, sizeof *s);
  int bound = 0;
  const struct moat_mac_key *install = request != NULL && request->install_id != NULL ? request->install_key : NULL;
  const char *install_id = install != NULL ? request->install_id : NULL;
  moat_stamp_result found = find_placeholder(body, len, install_id, &s->stamp_start, &s->stamp_len, &bound);
  if (found != MOAT_STAMP_OK) return found;
  if (bound && (request == NULL || request->method == NULL || request->authority == NULL || request->path == NULL || request->credential == NULL))
    return MOAT_STAMP_NO_REQUEST;

  pthread_once(&hmac_once, fetch_hmac);
  int ok;
  if (install != NULL) {
    /* The install's key was set up once (moat_mac_key_new): a copy of its keyed state, one HMAC as for r1. */
    s->mac = EVP_MAC_CTX_dup(install->ctx);
    ok = s->mac != NULL && mac_request_base(s->mac, request);
  } else {
    unsigned char key[64];
    size_t key_len = moat_key_len();
    moat_key_load(key);
    s->mac = hmac_template != NULL ? EVP_MAC_CTX_dup(hmac_template) : NULL;
    ok = s->mac != NULL && EVP_MAC_init(s->mac, key, key_len, NULL) && (!bound || mac_request_base(s->mac, request));
    moat_wipe(key, sizeof key);
  }
  if (!ok) {
    moat_stamp_abandon(s);
    return MOAT_STAMP_CRYPTO;
  }
  return MOAT_STAMP_OK;
}

int moat_stamp_advance(moat_stamp_stream *s, const unsigned char *body, size_t upto) {
  if (s->mac == NULL) return 0;
  if (upto <= s->hashed) return 1;
  /* The placeholder zeros are still in place, so the MAC covers key id, time and nonce too. */
  if (!EVP_MAC_update(s->mac, body + s->hashed, upto - s->hashed)) return 0;
  s->hashed = upto;
  return 1;
}

moat_stamp_result moat_stamp_finish(moat_stamp_stream *s, unsigned char *body, size_t len) {
  unsigned char mac[32];
  size_t out_len = 0;
  int ok = moat_stamp_advance(s, body, len) && EVP_MAC_final(s->mac, mac, &out_len, sizeof mac) && out_len == sizeof mac;
  moat_stamp_abandon(s);
  if (ok) hex_lower(mac, s->stamp_len / 2, body + s->stamp_start);
  moat_wipe(mac, sizeof mac);
  return ok ? MOAT_STAMP_OK : MOAT_STAMP_CRYPTO;
}

void moat_stamp_abandon(moat_stamp_stream *s) {
  if (s->mac != NULL) EVP_MAC_CTX_free(s->mac);
  s->mac = NULL;
}

moat_stamp_result moat_stamp(unsigned char *body, size_t len, const moat_request_components *request) {
  moat_stamp_stream s;
  moat_stamp_result begun = moat_stamp_begin(&s, body, len, request);
  return begun == MOAT_STAMP_OK ? moat_stamp_finish(&s, body, len) : begun;
}

moat_mac_key *moat_mac_key_new(const unsigned char *key, size_t len) {
  pthread_once(&hmac_once, fetch_hmac);
  moat_mac_key *k = calloc(1, sizeof *k);
  if (k == NULL) return NULL;
  k->ctx = hmac_template != NULL ? EVP_MAC_CTX_dup(hmac_template) : NULL;
  if (k->ctx == NULL || !EVP_MAC_init(k->ctx, key, len, NULL)) {
    moat_mac_key_free(k);
    return NULL;
  }
  return k;
}

void moat_mac_key_free(moat_mac_key *key) {
  if (key == NULL) return;
  if (key->ctx != NULL) EVP_MAC_CTX_free(key->ctx);
  free(key);
}

moat_check_result moat_stamp_check(const moat_mac_key *key, const unsigned char *base, size_t base_len, const unsigned char *body, size_t len,
                                   size_t stamp_start, size_t stamp_end) {
  if (stamp_start > stamp_end || stamp_end > len) return MOAT_CHECK_REGION;
  size_t hex_len = stamp_end - stamp_start;
  if (hex_len < 32 || hex_len > 64 || hex_len % 2 != 0) return MOAT_CHECK_REGION;
  /* A copy of the keyed state: the key is not set up again per body. */
  EVP_MAC_CTX *mac = EVP_MAC_CTX_dup(key->ctx);
  unsigned char zeros[64];
  memset(zeros, '0', sizeof zeros);
  unsigned char digest[32];
  size_t out_len = 0;
  int ok = mac != NULL && (base_len == 0 || EVP_MAC_update(mac, base, base_len)) && EVP_MAC_update(mac, body, stamp_start) &&
           EVP_MAC_update(mac, zeros, hex_len) && EVP_MAC_update(mac, body + stamp_end, len - stamp_end) &&
           EVP_MAC_final(mac, digest, &out_len, sizeof digest) && out_len == sizeof digest;
  EVP_MAC_CTX_free(mac);
  if (!ok) {
    moat_wipe(digest, sizeof digest);
    return MOAT_CHECK_CRYPTO;
  }
  unsigned char expected[64];
  hex_lower(digest, hex_len / 2, expected);
  /* Only the lowercase hex spelling matches, compared without an early exit. */
  int same = CRYPTO_memcmp(expected, body + stamp_start, hex_len) == 0;
  moat_wipe(digest, sizeof digest);
  moat_wipe(expected, sizeof expected);
  return same ? MOAT_CHECK_MATCH : MOAT_CHECK_MISMATCH;
}
