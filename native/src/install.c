/*
 * Per-install keys (see install.h). The state file, one per origin, is text:
 *
 *   moat-install/1
 *   origin=<origin>
 *   public=<base64url X25519 public key>
 *   seal=file | keyring:<ref> | keychain:<ref>
 *   iid=<install id>            \
 *   ekid=<enrollment key id>     | once enrolled, all four
 *   verifier=<base64url key>     |
 *   challenge=<base64url>       /
 *   secret=<base64url>
 *
 * `secret` is the private key itself (seal=file) or, sealed, nonce ‖ AES-256-GCM(private key)
 * ‖ tag under a wrapping key the keystore holds by <ref>, with every byte before the secret
 * line as associated data: an edited line does not open. K_i is never written: it is
 * derived again from the private key at each start.
 */
#include "install.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "crypto_api.h"
#include "harden.h"
#include "keystore.h"
#include "stamp.h"
#ifdef __linux__
#include <linux/keyctl.h>
#include <sys/syscall.h>
#endif

#define KEY_B64 43    /* base64url of 32 bytes */
#define SEALED_LEN 60 /* nonce 12 ‖ ciphertext 32 ‖ tag 16 */
#define SEALED_B64 80
#define MAX_FILE 2048
#define HEADER "moat-install/1\n"

const char *moat_install_code(moat_install_result r) {
  static const char *const CODES[] = {"",
                                      "ERR_NATIVE_INSTALL_NONE",
                                      "ERR_NATIVE_OPTIONS",
                                      "ERR_NATIVE_INSTALL_IO",
                                      "ERR_NATIVE_INSTALL_PERMISSIONS",
                                      "ERR_NATIVE_INSTALL_STATE",
                                      "ERR_NATIVE_INSTALL_SEALED",
                                      "ERR_NATIVE_INSTALL_KEY",
                                      "ERR_NATIVE_INSTALL_UNKNOWN",
                                      "ERR_NATIVE"};
  return (size_t)r < sizeof CODES / sizeof CODES[0] ? CODES[r] : "ERR_NATIVE";
}

const char *moat_seal_name(moat_seal s) {
  return s == MOAT_SEAL_KEYRING ? "keyring" : s == MOAT_SEAL_KEYCHAIN ? "keychain" : "file";
}

static moat_install_result fail(moat_install_result r, char *why, size_t why_len, const char *what, const char *got) {
  if (why != NULL && why_len > 0) snprintf(why, why_len, "expected %s, got %s", what, got);
  return r;
}

/* Every install operation needs libcrypto (opened on first use): without it, a crypto error that says so. */
static moat_install_result no_crypto(char *why, size_t why_len) {
  return fail(MOAT_INSTALL_CRYPTO, why, why_len, "libcrypto (OpenSSL 3) to load", moat_crypto_error());
}

/* ---- base64url (no padding), and the shapes of the values ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url_encode(const unsigned char *in, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 3 <= n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    out[o++] = B64[v >> 18];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = B64[(v >> 6) & 63];
    out[o++] = B64[v & 63];
  }
  if (n - i == 1) {
    out[o++] = B64[in[i] >> 2];
    out[o++] = B64[(in[i] & 3) << 4];
  } else if (n - i == 2) {
    unsigned v = (unsigned)in[i] << 8 | in[i + 1];
    out[o++] = B64[v >> 10];
    out[o++] = B64[(v >> 4) & 63];
    out[o++] = B64[(v & 15) << 2];
  }
  out[o] = '\0';
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Exactly `n` bytes from canonical base64url text (unused trailing bits zero); 1 when it is so. */
static int b64url_decode(const char *text, unsigned char *out, size_t n) {
  size_t len = strlen(text);
  if (len != (n * 4 + 2) / 3) return 0;
  unsigned acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value((unsigned char)text[i]);
    if (v < 0) return 0;
    acc = (acc << 6 | (unsigned)v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
    }
  }
  return o == n && (acc & ((1u << bits) - 1)) == 0;
}

/* An envelope kid (1*32 ALPHA / DIGIT / "_" / "-"): install ids and enrollment key ids. */
static int is_kid(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 32) return 0;
  for (size_t i = 0; i < n; i++)
    if (b64_value((unsigned char)s[i]) < 0) return 0;
  return 1;
}

static int is_origin(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > MOAT_INSTALL_MAX_ORIGIN) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
  return 1;
}

static int is_ref(const char *s) {
  if (strlen(s) != 32) return 0;
  for (size_t i = 0; i < 32; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

/* ---- the state, as the file says it ---- */

typedef struct {
  char origin[MOAT_INSTALL_MAX_ORIGIN + 1];
  char pub[KEY_B64 + 1];
  moat_seal seal;
  char ref[33];
  int enrolled;
  char iid[33], ekid[33], verifier[KEY_B64 + 1], challenge[KEY_B64 + 1];
  char secret[SEALED_B64 + 1];
} state_text;

/* The file's text up to the secret line (the sealed secret's associated data); its length, 0 when it does not fit. */
static size_t state_head(const state_text *s, char *out, size_t cap) {
  char seal[48];
  if (s->seal == MOAT_SEAL_FILE)
    snprintf(seal, sizeof seal, "file");
  else
    snprintf(seal, sizeof seal, "%s:%s", moat_seal_name(s->seal), s->ref);
  int n = s->enrolled
              ? snprintf(out, cap, HEADER "origin=%s\npublic=%s\nseal=%s\niid=%s\nekid=%s\nverifier=%s\nchallenge=%s\n",
                         s->origin, s->pub, seal, s->iid, s->ekid, s->verifier, s->challenge)
              : snprintf(out, cap, HEADER "origin=%s\npublic=%s\nseal=%s\n", s->origin, s->pub, seal);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The next line "<name>=<value>\n" of `*at` into out (at most cap - 1 bytes); 0 when it is not that. */
static int take_line(const char **at, const char *end, const char *name, char *out, size_t cap) {
  size_t name_len = strlen(name);
  const char *p = *at;
  if ((size_t)(end - p) <= name_len || memcmp(p, name, name_len) != 0 || p[name_len] != '=') return 0;
  p += name_len + 1;
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (nl == NULL || (size_t)(nl - p) >= cap || memchr(p, '\0', (size_t)(nl - p)) != NULL) return 0;
  memcpy(out, p, (size_t)(nl - p));
  out[nl - p] = '\0';
  *at = nl + 1;
  return 1;
}

static int parse_seal(const char *v, state_text *s) {
  if (strcmp(v, "file") == 0) {
    s->seal = MOAT_SEAL_FILE;
    s->ref[0] = '\0';
    return 1;
  }
  if (strncmp(v, "keyring:", 8) == 0 && is_ref(v + 8))
    s->seal = MOAT_SEAL_KEYRING;
  else if (strncmp(v, "keychain:", 9) == 0 && is_ref(v + 9))
    s->seal = MOAT_SEAL_KEYCHAIN;
  else
    return 0;
  memcpy(s->ref, strchr(v, ':') + 1, 33);
  return 1;
}

/*
 * Parses a state file's bytes: the lines in their order, each value in its shape, nothing
 * after the secret line. Returns the length of the head (associated data), 0 when invalid.
 */
static size_t moat_install_parse(const unsigned char *bytes, size_t len, state_text *s) {
  memset(s, 0, sizeof *s);
  const char *at = (const char *)bytes, *end = at + len;
  char seal[48];
  unsigned char scratch[SEALED_LEN];
  if (len < sizeof HEADER - 1 || memcmp(at, HEADER, sizeof HEADER - 1) != 0) return 0;
  at += sizeof HEADER - 1;
  if (!take_line(&at, end, "origin", s->origin, sizeof s->origin) || !is_origin(s->origin)) return 0;
  if (!take_line(&at, end, "public", s->pub, sizeof s->pub) || !b64url_decode(s->pub, scratch, 32)) return 0;
  if (!take_line(&at, end, "seal", seal, sizeof seal) || !parse_seal(seal, s)) return 0;
  if (take_line(&at, end, "iid", s->iid, sizeof s->iid)) {
    s->enrolled = 1;
    if (!is_kid(s->iid) || !take_line(&at, end, "ekid", s->ekid, sizeof s->ekid) || !is_kid(s->ekid)) return 0;
    if (!take_line(&at, end, "verifier", s->verifier, sizeof s->verifier) || !b64url_decode(s->verifier, scratch, 32))
      return 0;
    if (!take_line(&at, end, "challenge", s->challenge, sizeof s->challenge) ||
        !b64url_decode(s->challenge, scratch, 32))
      return 0;
  }
  size_t head = (size_t)(at - (const char *)bytes);
  if (!take_line(&at, end, "secret", s->secret, sizeof s->secret) || at != end) return 0;
  int ok = b64url_decode(s->secret, scratch, s->seal == MOAT_SEAL_FILE ? 32 : SEALED_LEN);
  moat_wipe(scratch, sizeof scratch);
  return ok ? head : 0;
}

/* ---- keystores: a random wrapping key the system holds under a reference ---- */

#ifdef __linux__
static long persistent_keyring(void) {
  /* The user's persistent keyring, linked into this process's keyring so its keys are possessed. */
  return syscall(SYS_keyctl, KEYCTL_GET_PERSISTENT, (long)-1, (long)KEY_SPEC_PROCESS_KEYRING);
}

static void key_description(const char *ref, char out[64]) { snprintf(out, 64, "moat-install:%s", ref); }

static int keyring_store(const char *ref, const unsigned char wk[32]) {
  long ring = persistent_keyring();
  if (ring < 0) return 0;
  char desc[64];
  key_description(ref, desc);
  return syscall(SYS_add_key, "user", desc, wk, (size_t)32, ring) >= 0;
}

static int keyring_load(const char *ref, unsigned char wk[32]) {
  long ring = persistent_keyring();
  if (ring < 0) return 0;
  char desc[64];
  key_description(ref, desc);
  long key = syscall(SYS_keyctl, KEYCTL_SEARCH, ring, "user", desc, 0L);
  if (key < 0) return 0;
  unsigned char buf[64];
  long n = syscall(SYS_keyctl, KEYCTL_READ, key, buf, (long)sizeof buf);
  int ok = n == 32;
  if (ok) memcpy(wk, buf, 32);
  moat_wipe(buf, sizeof buf);
  return ok;
}

static void keyring_drop(const char *ref) {
  long ring = persistent_keyring();
  char desc[64];
  key_description(ref, desc);
  long key = ring < 0 ? -1 : syscall(SYS_keyctl, KEYCTL_SEARCH, ring, "user", desc, 0L);
  if (key >= 0) syscall(SYS_keyctl, KEYCTL_INVALIDATE, key);
}
#endif

#ifdef __APPLE__
/* UNTESTED (no macOS build here): the wrapping key as a generic password item of this user's login Keychain. */
#include <CoreFoundation/CoreFoundation.h>
#include <Security/Security.h>

static CFMutableDictionaryRef keychain_query(const char *ref) {
  CFMutableDictionaryRef q =
      CFDictionaryCreateMutable(NULL, 0, &kCFTypeDictionaryKeyCallBacks, &kCFTypeDictionaryValueCallBacks);
  CFStringRef account = CFStringCreateWithCString(NULL, ref, kCFStringEncodingUTF8);
  CFDictionarySetValue(q, kSecClass, kSecClassGenericPassword);
  CFDictionarySetValue(q, kSecAttrService, CFSTR("moat-install"));
  CFDictionarySetValue(q, kSecAttrAccount, account);
  CFRelease(account);
  return q;
}

static int keychain_store(const char *ref, const unsigned char wk[32]) {
  CFMutableDictionaryRef q = keychain_query(ref);
  CFDataRef data = CFDataCreate(NULL, wk, 32);
  CFDictionarySetValue(q, kSecValueData, data);
  CFDictionarySetValue(q, kSecAttrAccessible, kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly);
  OSStatus st = SecItemAdd(q, NULL);
  CFRelease(data);
  CFRelease(q);
  return st == errSecSuccess;
}

static int keychain_load(const char *ref, unsigned char wk[32]) {
  CFMutableDictionaryRef q = keychain_query(ref);
  CFDictionarySetValue(q, kSecReturnData, kCFBooleanTrue);
  CFDictionarySetValue(q, kSecMatchLimit, kSecMatchLimitOne);
  CFTypeRef out = NULL;
  OSStatus st = SecItemCopyMatching(q, &out);
  CFRelease(q);
  int ok = st == errSecSuccess && out != NULL && CFGetTypeID(out) == CFDataGetTypeID() &&
           CFDataGetLength((CFDataRef)out) == 32;
  if (ok) memcpy(wk, CFDataGetBytePtr((CFDataRef)out), 32);
  if (out != NULL) CFRelease(out);
  return ok;
}

static void keychain_drop(const char *ref) {
  CFMutableDictionaryRef q = keychain_query(ref);
  SecItemDelete(q);
  CFRelease(q);
}
#endif

/* A new wrapping key in the first keystore that takes it; MOAT_SEAL_FILE when none does. */
static moat_seal seal_new(int file_only, char ref[33], unsigned char wk[32]) {
  unsigned char r[16];
  if (file_only || RAND_bytes(r, sizeof r) != 1 || RAND_bytes(wk, 32) != 1) return MOAT_SEAL_FILE;
  static const char HEX[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    ref[2 * i] = HEX[r[i] >> 4];
    ref[2 * i + 1] = HEX[r[i] & 15];
  }
  ref[32] = '\0';
#if defined(__linux__)
  if (keyring_store(ref, wk)) return MOAT_SEAL_KEYRING;
#elif defined(__APPLE__)
  if (keychain_store(ref, wk)) return MOAT_SEAL_KEYCHAIN;
#endif
  ref[0] = '\0';
  return MOAT_SEAL_FILE;
}

static int seal_load(moat_seal seal, const char *ref, unsigned char wk[32]) {
#if defined(__linux__)
  if (seal == MOAT_SEAL_KEYRING) return keyring_load(ref, wk);
#elif defined(__APPLE__)
  if (seal == MOAT_SEAL_KEYCHAIN) return keychain_load(ref, wk);
#endif
  (void)seal;
  (void)ref;
  (void)wk;
  return 0;
}

static void seal_drop(moat_seal seal, const char *ref) {
#if defined(__linux__)
  if (seal == MOAT_SEAL_KEYRING) keyring_drop(ref);
#elif defined(__APPLE__)
  if (seal == MOAT_SEAL_KEYCHAIN) keychain_drop(ref);
#endif
  (void)seal;
  (void)ref;
}

/* ---- cryptography (OpenSSL EVP) ---- */

/* Secrets in one mlock'ed page excluded from core dumps, wiped when freed. */
typedef struct {
  unsigned char priv[32]; /* the install's private key */
  unsigned char wk[32];   /* a keystore's wrapping key */
  unsigned char z[32];    /* the X25519 shared secret */
  unsigned char k[32];    /* K_i */
} secrets;

static secrets *secrets_new(void) {
  int locked = 0, dontdump = 0;
  return moat_secure_alloc(sizeof(secrets), &locked, &dontdump);
}

static void secrets_free(secrets *s) { moat_secure_free(s, sizeof(secrets)); }

static int x25519_generate(unsigned char priv[32], unsigned char pub[32]) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
  EVP_PKEY *key = NULL;
  size_t priv_len = 32, pub_len = 32;
  int ok = ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &key) == 1 &&
           EVP_PKEY_get_raw_private_key(key, priv, &priv_len) == 1 &&
           EVP_PKEY_get_raw_public_key(key, pub, &pub_len) == 1 && priv_len == 32 && pub_len == 32;
  EVP_PKEY_free(key);
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

static int x25519_public(const unsigned char priv[32], unsigned char pub[32]) {
  EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
  size_t len = 32;
  int ok = key != NULL && EVP_PKEY_get_raw_public_key(key, pub, &len) == 1 && len == 32;
  EVP_PKEY_free(key);
  return ok;
}

/* Z = X25519(priv, peer): 1, 0 when OpenSSL failed, -1 when Z is all zero (a low-order point). */
static int x25519_shared(const unsigned char priv[32], const unsigned char peer_pub[32], unsigned char z[32]) {
  EVP_PKEY *own = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
  EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pub, 32);
  EVP_PKEY_CTX *ctx = own != NULL ? EVP_PKEY_CTX_new(own, NULL) : NULL;
  size_t len = 32;
  /* OpenSSL itself refuses an all-zero result (derive fails): both cases are checked. */
  int derived = ctx != NULL && peer != NULL && EVP_PKEY_derive_init(ctx) == 1 &&
                EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, z, &len) == 1 && len == 32;
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(peer);
  EVP_PKEY_free(own);
  unsigned char any = 0;
  for (int i = 0; derived && i < 32; i++) any |= z[i];
  if (derived && any != 0) return 1;
  moat_wipe(z, 32);
  return own != NULL && peer != NULL ? -1 : 0;
}

/* K_i = HKDF-SHA-256(Z, salt = challenge, info = lp(["moat-install/1", iid, ekid, public (base64url)])). */
static int derive_install_key(const unsigned char z[32], const unsigned char challenge[32], const state_text *s,
                              unsigned char k[32]) {
  static const char LABEL[] = "moat-install/1";
  unsigned char info[4 * 4 + sizeof LABEL + 32 + 32 + KEY_B64];
  size_t at = moat_lp_item(info, LABEL, sizeof LABEL - 1);
  at += moat_lp_item(info + at, s->iid, strlen(s->iid));
  at += moat_lp_item(info + at, s->ekid, strlen(s->ekid));
  at += moat_lp_item(info + at, s->pub, strlen(s->pub));
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
  size_t len = 32;
  int ok = ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) == 1 &&
           EVP_PKEY_CTX_set1_hkdf_salt(ctx, challenge, 32) == 1 && EVP_PKEY_CTX_set1_hkdf_key(ctx, z, 32) == 1 &&
           EVP_PKEY_CTX_add1_hkdf_info(ctx, info, (int)at) == 1 && EVP_PKEY_derive(ctx, k, &len) == 1 && len == 32;
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

/* AES-256-GCM of the 32-byte private key under wk, `aad` authenticated: out = nonce ‖ ciphertext ‖ tag. */
static int seal_secret(const unsigned char wk[32], const unsigned char priv[32], const char *aad, size_t aad_len,
                       unsigned char out[SEALED_LEN]) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n = 0;
  int ok = ctx != NULL && RAND_bytes(out, 12) == 1 && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, wk, out) == 1 &&
           EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)aad_len) == 1 &&
           EVP_EncryptUpdate(ctx, out + 12, &n, priv, 32) == 1 && n == 32 &&
           EVP_EncryptFinal_ex(ctx, out + 44, &n) == 1 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 44) == 1;
  EVP_CIPHER_CTX_free(ctx);
  return ok;
}

static int open_secret(const unsigned char wk[32], const unsigned char in[SEALED_LEN], const char *aad, size_t aad_len,
                       unsigned char priv[32]) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  unsigned char tag[16];
  memcpy(tag, in + 44, 16);
  int n = 0;
  int ok = ctx != NULL && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, wk, in) == 1 &&
           EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)aad_len) == 1 &&
           EVP_DecryptUpdate(ctx, priv, &n, in + 12, 32) == 1 && n == 32 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 && EVP_DecryptFinal_ex(ctx, tag, &n) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) moat_wipe(priv, 32);
  return ok;
}

/* ---- the directory and the file ---- */

/* dir/<hex(SHA-256("moat-install-file/1" ‖ origin))[0..32]>.install: a name without the origin's characters. */
static char *state_path(const char *dir, const char *origin) {
  unsigned char digest[32];
  unsigned int digest_len = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
           EVP_DigestUpdate(md, "moat-install-file/1", 19) == 1 && EVP_DigestUpdate(md, origin, strlen(origin)) == 1 &&
           EVP_DigestFinal_ex(md, digest, &digest_len) == 1;
  EVP_MD_CTX_free(md);
  if (!ok) return NULL;
  size_t cap = strlen(dir) + 1 + 32 + 9;
  char *path = malloc(cap);
  if (path == NULL) return NULL;
  int n = snprintf(path, cap, "%s/", dir);
  for (int i = 0; i < 16; i++) n += snprintf(path + n, cap - (size_t)n, "%02x", digest[i]);
  snprintf(path + n, cap - (size_t)n, ".install");
  return path;
}

/* The user's alone: owned by this user, nobody else may read, write or enter it. */
static moat_install_result owner_only(const struct stat *st, const char *what, char *why, size_t why_len) {
  if (st->st_uid == geteuid() && (st->st_mode & 077) == 0) return MOAT_INSTALL_OK;
  char got[96];
  snprintf(got, sizeof got, "mode %04o owned by uid %ld", (unsigned)(st->st_mode & 07777), (long)st->st_uid);
  return fail(MOAT_INSTALL_PERMISSIONS, why, why_len, what, got);
}

/* Makes `dir` and its missing parents (0700) when `create`; checks it is a directory that is the user's alone. */
static moat_install_result check_dir(const char *dir, int create, char *why, size_t why_len) {
  if (create) {
    char *p = strdup(dir);
    if (p == NULL) return MOAT_INSTALL_CRYPTO;
    for (char *s = p + 1; *s != '\0'; s++) {
      if (*s != '/') continue;
      *s = '\0';
      mkdir(p, 0700);
      *s = '/';
    }
    mkdir(p, 0700);
    free(p);
  }
  struct stat st;
  if (stat(dir, &st) != 0) {
    if (errno == ENOENT && !create) return MOAT_INSTALL_NONE;
    return fail(MOAT_INSTALL_IO, why, why_len, "an install state directory that can be made and read", strerror(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return fail(MOAT_INSTALL_IO, why, why_len, "the install state directory to be a directory", "another file");
  return owner_only(&st, "an install state directory only its owner can open (0700)", why, why_len);
}

/* The state file's bytes (at most MAX_FILE) into buf; NONE when it does not exist. */
static moat_install_result read_state(const char *path, unsigned char *buf, size_t *len, char *why, size_t why_len) {
  /* O_NONBLOCK: a named pipe in its place opens at once and is refused below, instead of blocking the open (and the event loop) forever. */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return MOAT_INSTALL_NONE;
    if (errno == ELOOP) return fail(MOAT_INSTALL_PERMISSIONS, why, why_len, "an install state file", "a symbolic link");
    return fail(MOAT_INSTALL_IO, why, why_len, "a readable install state file", strerror(errno));
  }
  struct stat st;
  moat_install_result r = MOAT_INSTALL_OK;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    r = fail(MOAT_INSTALL_IO, why, why_len, "an install state file", "another kind of file");
  else
    r = owner_only(&st, "an install state file only its owner can read or write (0600)", why, why_len);
  size_t n = 0;
  while (r == MOAT_INSTALL_OK) {
    ssize_t got = read(fd, buf + n, MAX_FILE + 1 - n);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      r = fail(MOAT_INSTALL_IO, why, why_len, "a readable install state file", strerror(errno));
    else if (got == 0)
      break;
    else if ((n += (size_t)got) > MAX_FILE)
      r = fail(MOAT_INSTALL_STATE, why, why_len, "an install state file of at most 2048 bytes", "a larger one");
  }
  close(fd);
  *len = n;
  return r;
}

static int write_all(int fd, const char *text, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, text, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    text += n;
    len -= (size_t)n;
  }
  return 1;
}

/* Writes the file atomically: a new 0600 file beside it, fsync, rename over it, fsync of the directory. */
static moat_install_result write_state(const char *dir, const char *path, const char *text, size_t len, char *why,
                                       size_t why_len) {
  unsigned char r[8];
  if (RAND_bytes(r, sizeof r) != 1) return MOAT_INSTALL_CRYPTO;
  size_t cap = strlen(path) + 48;
  char *tmp = malloc(cap);
  if (tmp == NULL) return MOAT_INSTALL_CRYPTO;
  snprintf(tmp, cap, "%s.%ld.%02x%02x%02x%02x.tmp", path, (long)getpid(), r[0], r[1], r[2], r[3]);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  int ok = fd >= 0 && fchmod(fd, 0600) == 0 && write_all(fd, text, len) && fsync(fd) == 0;
  int err = errno;
  if (fd >= 0 && close(fd) != 0) ok = 0;
  if (ok && rename(tmp, path) != 0) {
    ok = 0;
    err = errno;
  }
  if (!ok) unlink(tmp);
  free(tmp);
  if (!ok) return fail(MOAT_INSTALL_IO, why, why_len, "a writable install state directory", strerror(err));
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd); /* the rename itself durable; a file system that cannot is no reason to fail */
    close(dfd);
  }
  return MOAT_INSTALL_OK;
}

/* The whole file for state `s` and private key sec->priv (sealed under sec->wk unless seal=file) into out. */
static size_t state_file(const state_text *s, const secrets *sec, char *out, size_t cap) {
  size_t head = state_head(s, out, cap);
  if (head == 0) return 0;
  char secret[SEALED_B64 + 1];
  if (s->seal == MOAT_SEAL_FILE) {
    b64url_encode(sec->priv, 32, secret);
  } else {
    unsigned char sealed[SEALED_LEN];
    if (!seal_secret(sec->wk, sec->priv, out, head, sealed)) return 0;
    b64url_encode(sealed, SEALED_LEN, secret);
  }
  int n = snprintf(out + head, cap - head, "secret=%s\n", secret);
  moat_wipe(secret, sizeof secret);
  return n > 0 && (size_t)n < cap - head ? head + (size_t)n : 0;
}

/* ---- open installs, by origin ---- */

struct moat_install_key {
  atomic_int refs;
  char iid[33];
  moat_mac_key *mac;
};

typedef struct entry {
  struct entry *next;
  char *dir, *path;
  state_text st; /* without its secret */
  secrets *sec;  /* the private key while the install waits for its enrollment; NULL once active */
  moat_install_key *key;
} entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *registry;

void moat_install_key_put(moat_install_key *key) {
  if (key == NULL || atomic_fetch_sub(&key->refs, 1) != 1) return;
  moat_mac_key_free(key->mac); /* EVP_MAC_CTX_free wipes K_i */
  free(key);
}

const char *moat_install_key_iid(const moat_install_key *key) { return key->iid; }
const struct moat_mac_key *moat_install_key_mac(const moat_install_key *key) { return key->mac; }

static void entry_free(entry *e) {
  if (e == NULL) return;
  moat_install_key_put(e->key);
  secrets_free(e->sec);
  free(e->dir);
  free(e->path);
  moat_wipe(&e->st, sizeof e->st);
  free(e);
}

/* Unlinks and returns the origin's entry (under the lock), or NULL. */
static entry *registry_take(const char *origin) {
  for (entry **at = &registry; *at != NULL; at = &(*at)->next) {
    if (strcmp((*at)->st.origin, origin) != 0) continue;
    entry *e = *at;
    *at = e->next;
    e->next = NULL;
    return e;
  }
  return NULL;
}

moat_install_key *moat_install_key_get(const char *origin) {
  moat_install_key *key = NULL;
  pthread_mutex_lock(&registry_lock);
  for (entry *e = registry; e != NULL; e = e->next) {
    if (strcmp(e->st.origin, origin) != 0) continue;
    key = e->key;
    if (key != NULL) atomic_fetch_add(&key->refs, 1);
    break;
  }
  pthread_mutex_unlock(&registry_lock);
  return key;
}

/* K_i for enrolled state `s` from sec->priv, as a new stamping key; KEY for an all-zero secret. */
static moat_install_result make_key(const state_text *s, secrets *sec, moat_install_key **out) {
  unsigned char peer[32], challenge[32];
  if (!b64url_decode(s->verifier, peer, 32) || !b64url_decode(s->challenge, challenge, 32)) return MOAT_INSTALL_STATE;
  int z = x25519_shared(sec->priv, peer, sec->z);
  if (z != 1) return z < 0 ? MOAT_INSTALL_KEY : MOAT_INSTALL_CRYPTO;
  int ok = derive_install_key(sec->z, challenge, s, sec->k);
  moat_install_key *key = ok ? calloc(1, sizeof *key) : NULL;
  if (key != NULL) key->mac = moat_mac_key_new(sec->k, 32);
  moat_wipe(sec->z, 32);
  moat_wipe(sec->k, 32);
  if (key == NULL || key->mac == NULL) {
    free(key);
    return MOAT_INSTALL_CRYPTO;
  }
  atomic_init(&key->refs, 1);
  memcpy(key->iid, s->iid, sizeof key->iid);
  *out = key;
  return MOAT_INSTALL_OK;
}

/* Opens a state file's secret into sec->priv and checks it is the private key of `public`. */
static moat_install_result unseal(const state_text *s, const unsigned char *file, size_t head, secrets *sec, char *why,
                                  size_t why_len) {
  if (s->seal == MOAT_SEAL_FILE) {
    if (!b64url_decode(s->secret, sec->priv, 32)) return MOAT_INSTALL_STATE;
  } else {
    unsigned char sealed[SEALED_LEN];
    if (!seal_load(s->seal, s->ref, sec->wk))
      return fail(MOAT_INSTALL_SEALED, why, why_len, "the keystore key that sealed the install state",
                  "none (gone, or no keystore answers)");
    int opened = b64url_decode(s->secret, sealed, SEALED_LEN) &&
                 open_secret(sec->wk, sealed, (const char *)file, head, sec->priv);
    moat_wipe(sec->wk, 32);
    if (!opened)
      return fail(MOAT_INSTALL_STATE, why, why_len, "a sealed install state that opens",
                  "one that does not (edited or corrupted)");
  }
  unsigned char pub[32], stated[32];
  if (!x25519_public(sec->priv, pub) || !b64url_decode(s->pub, stated, 32) || CRYPTO_memcmp(pub, stated, 32) != 0)
    return fail(MOAT_INSTALL_STATE, why, why_len, "the install state's private key to match its public key",
                "another key");
  return MOAT_INSTALL_OK;
}

/* A new key pair for `origin`, sealed and written to `path`. */
static moat_install_result make_state(entry *e, int file_only, char *why, size_t why_len) {
  unsigned char pub[32];
  if (!x25519_generate(e->sec->priv, pub)) return MOAT_INSTALL_CRYPTO;
  b64url_encode(pub, 32, e->st.pub);
  e->st.seal = seal_new(file_only, e->st.ref, e->sec->wk);
  char text[MAX_FILE];
  size_t len = state_file(&e->st, e->sec, text, sizeof text);
  moat_wipe(e->sec->wk, 32);
  moat_install_result r = len == 0 ? MOAT_INSTALL_CRYPTO : write_state(e->dir, e->path, text, len, why, why_len);
  moat_wipe(text, sizeof text);
  if (r != MOAT_INSTALL_OK) seal_drop(e->st.seal, e->st.ref);
  return r;
}

/* Loads the state at e->path into e (NONE when there is no file). */
static moat_install_result load_state(entry *e, const char *origin, char *why, size_t why_len) {
  unsigned char file[MAX_FILE + 1];
  size_t len = 0;
  moat_install_result r = read_state(e->path, file, &len, why, why_len);
  size_t head = r == MOAT_INSTALL_OK ? moat_install_parse(file, len, &e->st) : 0;
  if (r == MOAT_INSTALL_OK && head == 0)
    r = fail(MOAT_INSTALL_STATE, why, why_len, "an install state file (moat-install/1)", "other bytes");
  if (r == MOAT_INSTALL_OK && strcmp(e->st.origin, origin) != 0)
    r = fail(MOAT_INSTALL_STATE, why, why_len, "the install state of this origin", "another origin's");
  if (r == MOAT_INSTALL_OK) r = unseal(&e->st, file, head, e->sec, why, why_len);
  moat_wipe(file, sizeof file);
  moat_wipe(e->st.secret, sizeof e->st.secret);
  if (r == MOAT_INSTALL_OK && e->st.enrolled) {
    r = make_key(&e->st, e->sec, &e->key);
    if (r == MOAT_INSTALL_KEY)
      r = fail(r, why, why_len, "an enrolled state whose verifier key is not a low-order point", "one that is");
    secrets_free(e->sec); /* enrolled: K_i is all it takes from now on */
    e->sec = NULL;
  }
  return r;
}

static entry *entry_new(const char *dir, const char *origin) {
  entry *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->dir = strdup(dir);
  e->path = state_path(dir, origin);
  e->sec = secrets_new();
  snprintf(e->st.origin, sizeof e->st.origin, "%s", origin);
  if (e->dir == NULL || e->path == NULL || e->sec == NULL) {
    entry_free(e);
    return NULL;
  }
  return e;
}

moat_install_result moat_install_open(const char *dir, const char *origin, int create, int file_only,
                                      moat_install_info *info, char *why, size_t why_len) {
  memset(info, 0, sizeof *info);
  if (!is_origin(origin))
    return fail(MOAT_INSTALL_ARG, why, why_len, "origin as 1-512 printable ASCII characters without spaces",
                "another string");
  size_t dir_len = strlen(dir);
  if (dir_len == 0 || dir_len > MOAT_INSTALL_MAX_DIR)
    return fail(MOAT_INSTALL_ARG, why, why_len, "path as a directory path", "an empty or longer one");
  if (!moat_crypto_load()) return no_crypto(why, why_len);
  moat_install_result r = check_dir(dir, create, why, why_len);
  if (r != MOAT_INSTALL_OK) return r;
  entry *e = entry_new(dir, origin);
  if (e == NULL) return MOAT_INSTALL_CRYPTO;
  r = load_state(e, origin, why, why_len);
  if (r == MOAT_INSTALL_NONE && create) r = make_state(e, file_only, why, why_len);
  if (r != MOAT_INSTALL_OK) {
    entry_free(e);
    return r;
  }
  memcpy(info->public_key, e->st.pub, sizeof info->public_key);
  info->enrolled = e->st.enrolled;
  memcpy(info->install_id, e->st.iid, sizeof info->install_id);
  memcpy(info->ekid, e->st.ekid, sizeof info->ekid);
  info->sealed = e->st.seal;
  pthread_mutex_lock(&registry_lock);
  entry *old = registry_take(origin);
  e->next = registry;
  registry = e;
  pthread_mutex_unlock(&registry_lock);
  entry_free(old);
  return MOAT_INSTALL_OK;
}

/* The enrolled state written and made active (under the lock). */
static moat_install_result activate(entry *e, state_text *next, char *why, size_t why_len) {
  moat_install_key *key = NULL;
  moat_install_result r = make_key(next, e->sec, &key);
  if (r == MOAT_INSTALL_KEY)
    return fail(r, why, why_len, "a verifier key that is not a low-order point", "one whose shared secret is all zero");
  if (r != MOAT_INSTALL_OK) return r;
  if (next->seal != MOAT_SEAL_FILE && !seal_load(next->seal, next->ref, e->sec->wk)) {
    moat_install_key_put(key);
    return fail(MOAT_INSTALL_SEALED, why, why_len, "the keystore key that sealed the install state", "none (gone)");
  }
  char text[MAX_FILE];
  size_t len = state_file(next, e->sec, text, sizeof text);
  moat_wipe(e->sec->wk, 32);
  r = len == 0 ? MOAT_INSTALL_CRYPTO : write_state(e->dir, e->path, text, len, why, why_len);
  moat_wipe(text, sizeof text);
  if (r != MOAT_INSTALL_OK) {
    moat_install_key_put(key);
    return r;
  }
  e->st = *next;
  e->key = key;
  secrets_free(e->sec);
  e->sec = NULL;
  return MOAT_INSTALL_OK;
}

moat_install_result moat_install_activate(const char *origin, const char *install_id, const char *ekid,
                                          const char *verifier_key, const char *challenge, char *why, size_t why_len) {
  unsigned char scratch[32];
  if (!is_kid(install_id))
    return fail(MOAT_INSTALL_ARG, why, why_len, "installId as a key id (1-32 of A-Z a-z 0-9 _ -)", "another string");
  if (!is_kid(ekid))
    return fail(MOAT_INSTALL_ARG, why, why_len, "ekid as a key id (1-32 of A-Z a-z 0-9 _ -)", "another string");
  if (!b64url_decode(verifier_key, scratch, 32))
    return fail(MOAT_INSTALL_ARG, why, why_len, "verifierPublicKey as base64url of 32 bytes", "another string");
  if (!b64url_decode(challenge, scratch, 32))
    return fail(MOAT_INSTALL_ARG, why, why_len, "challenge as base64url of 32 bytes", "another string");
  if (!moat_crypto_load()) return no_crypto(why, why_len);
  pthread_mutex_lock(&registry_lock);
  entry *e = registry;
  while (e != NULL && strcmp(e->st.origin, origin) != 0) e = e->next;
  moat_install_result r;
  if (e == NULL || e->sec == NULL) {
    r = fail(MOAT_INSTALL_UNKNOWN, why, why_len, "an install opened for this origin and waiting for its enrollment",
             e == NULL ? "none (installOpen first)" : "one already enrolled (installForget first)");
  } else {
    state_text next = e->st;
    next.enrolled = 1;
    snprintf(next.iid, sizeof next.iid, "%s", install_id);
    snprintf(next.ekid, sizeof next.ekid, "%s", ekid);
    snprintf(next.verifier, sizeof next.verifier, "%s", verifier_key);
    snprintf(next.challenge, sizeof next.challenge, "%s", challenge);
    r = activate(e, &next, why, why_len);
  }
  pthread_mutex_unlock(&registry_lock);
  return r;
}

moat_install_result moat_install_forget(const char *origin, const char *dir, char *why, size_t why_len) {
  if (!moat_crypto_load()) return no_crypto(why, why_len);
  pthread_mutex_lock(&registry_lock);
  entry *e = registry_take(origin);
  pthread_mutex_unlock(&registry_lock);
  char *path = dir != NULL ? state_path(dir, origin) : e != NULL ? strdup(e->path) : NULL;
  moat_install_result r = MOAT_INSTALL_OK;
  if (path != NULL) {
    /* The keystore's key of the file's seal goes with it (a file that does not parse has none to find). */
    unsigned char file[MAX_FILE + 1];
    size_t len = 0;
    state_text s;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
      close(fd);
      fd = -1;
    }
    if (fd >= 0) {
      ssize_t n = read(fd, file, MAX_FILE);
      len = n > 0 ? (size_t)n : 0;
      close(fd);
      if (moat_install_parse(file, len, &s) != 0) seal_drop(s.seal, s.ref);
      moat_wipe(&s, sizeof s);
      moat_wipe(file, sizeof file);
    }
    if (unlink(path) != 0 && errno != ENOENT)
      r = fail(MOAT_INSTALL_IO, why, why_len, "a removable install state file", strerror(errno));
    free(path);
  }
  if (e != NULL && e->st.seal != MOAT_SEAL_FILE) seal_drop(e->st.seal, e->st.ref);
  entry_free(e);
  return r;
}
