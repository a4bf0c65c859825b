#ifndef MOAT_CRYPTO_API_H
#define MOAT_CRYPTO_API_H
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

/*
 * libcrypto, opened on first use instead of linked (as libcurl is): loading it costs a
 * process about 4 ms at start, which a scan, a hardening call or a client that has not sent
 * yet would pay for nothing. The headers give the types; dlsym gives the functions, all from
 * the one library, and the names below call through the table, so the code reads as if it
 * were linked. Every path that calls one of them has called moat_crypto_load() first.
 */
#define MOAT_CRYPTO_FUNCTIONS(X)                                                                                                   \
  X(CRYPTO_memcmp)                                                                                                                 \
  X(EVP_CIPHER_CTX_ctrl)                                                                                                           \
  X(EVP_CIPHER_CTX_free)                                                                                                           \
  X(EVP_CIPHER_CTX_new)                                                                                                            \
  X(EVP_DecryptFinal_ex)                                                                                                           \
  X(EVP_DecryptInit_ex)                                                                                                            \
  X(EVP_DecryptUpdate)                                                                                                             \
  X(EVP_Digest)                                                                                                                    \
  X(EVP_DigestFinal_ex)                                                                                                            \
  X(EVP_DigestInit_ex)                                                                                                             \
  X(EVP_DigestUpdate)                                                                                                              \
  X(EVP_EncryptFinal_ex)                                                                                                           \
  X(EVP_EncryptInit_ex)                                                                                                            \
  X(EVP_EncryptUpdate)                                                                                                             \
  X(EVP_MAC_CTX_dup)                                                                                                               \
  X(EVP_MAC_CTX_free)                                                                                                              \
  X(EVP_MAC_CTX_new)                                                                                                               \
  X(EVP_MAC_CTX_set_params)                                                                                                        \
  X(EVP_MAC_fetch)                                                                                                                 \
  X(EVP_MAC_final)                                                                                                                 \
  X(EVP_MAC_free)                                                                                                                  \
  X(EVP_MAC_init)                                                                                                                  \
  X(EVP_MAC_update)                                                                                                                \
  X(EVP_MD_CTX_free)                                                                                                               \
  X(EVP_MD_CTX_new)                                                                                                                \
  X(EVP_MD_fetch)                                                                                                                  \
  X(EVP_PKEY_CTX_add1_hkdf_info)                                                                                                   \
  X(EVP_PKEY_CTX_free)                                                                                                             \
  X(EVP_PKEY_CTX_new)                                                                                                              \
  X(EVP_PKEY_CTX_new_id)                                                                                                           \
  X(EVP_PKEY_CTX_set1_hkdf_key)                                                                                                    \
  X(EVP_PKEY_CTX_set1_hkdf_salt)                                                                                                   \
  X(EVP_PKEY_CTX_set_hkdf_md)                                                                                                      \
  X(EVP_PKEY_derive)                                                                                                               \
  X(EVP_PKEY_derive_init)                                                                                                          \
  X(EVP_PKEY_derive_set_peer)                                                                                                      \
  X(EVP_PKEY_free)                                                                                                                 \
  X(EVP_PKEY_get_raw_private_key)                                                                                                  \
  X(EVP_PKEY_get_raw_public_key)                                                                                                   \
  X(EVP_PKEY_keygen)                                                                                                               \
  X(EVP_PKEY_keygen_init)                                                                                                          \
  X(EVP_PKEY_new_raw_private_key)                                                                                                  \
  X(EVP_PKEY_new_raw_public_key)                                                                                                   \
  X(EVP_aes_256_gcm)                                                                                                               \
  X(EVP_sha256)                                                                                                                    \
  X(OSSL_PARAM_construct_end)                                                                                                      \
  X(OSSL_PARAM_construct_utf8_string)                                                                                              \
  X(RAND_bytes)

typedef struct {
#define MOAT_CRYPTO_FIELD(name) __typeof__(name) *name;
  MOAT_CRYPTO_FUNCTIONS(MOAT_CRYPTO_FIELD)
#undef MOAT_CRYPTO_FIELD
} moat_crypto_api;

/* The functions, once moat_crypto_load() has returned 1 (never written after that). */
extern moat_crypto_api moat_crypto_fns;

/* Loads libcrypto and resolves every function (thread-safe, once): 1 when they are there, 0 when not. */
int moat_crypto_load(void);

/* Why moat_crypto_load() returned 0 (a static string; never contains key material). */
const char *moat_crypto_error(void);

/* One name each, as in MOAT_CRYPTO_FUNCTIONS: a name defined here and not listed there does not
   compile; one listed there and not here stays an undefined symbol, and the addon does not load. */
#ifndef MOAT_CRYPTO_LOADER
#define CRYPTO_memcmp (*moat_crypto_fns.CRYPTO_memcmp)
#define EVP_CIPHER_CTX_ctrl (*moat_crypto_fns.EVP_CIPHER_CTX_ctrl)
#define EVP_CIPHER_CTX_free (*moat_crypto_fns.EVP_CIPHER_CTX_free)
#define EVP_CIPHER_CTX_new (*moat_crypto_fns.EVP_CIPHER_CTX_new)
#define EVP_DecryptFinal_ex (*moat_crypto_fns.EVP_DecryptFinal_ex)
#define EVP_DecryptInit_ex (*moat_crypto_fns.EVP_DecryptInit_ex)
#define EVP_DecryptUpdate (*moat_crypto_fns.EVP_DecryptUpdate)
#define EVP_Digest (*moat_crypto_fns.EVP_Digest)
#define EVP_DigestFinal_ex (*moat_crypto_fns.EVP_DigestFinal_ex)
#define EVP_DigestInit_ex (*moat_crypto_fns.EVP_DigestInit_ex)
#define EVP_DigestUpdate (*moat_crypto_fns.EVP_DigestUpdate)
#define EVP_EncryptFinal_ex (*moat_crypto_fns.EVP_EncryptFinal_ex)
#define EVP_EncryptInit_ex (*moat_crypto_fns.EVP_EncryptInit_ex)
#define EVP_EncryptUpdate (*moat_crypto_fns.EVP_EncryptUpdate)
#define EVP_MAC_CTX_dup (*moat_crypto_fns.EVP_MAC_CTX_dup)
#define EVP_MAC_CTX_free (*moat_crypto_fns.EVP_MAC_CTX_free)
#define EVP_MAC_CTX_new (*moat_crypto_fns.EVP_MAC_CTX_new)
#define EVP_MAC_CTX_set_params (*moat_crypto_fns.EVP_MAC_CTX_set_params)
#define EVP_MAC_fetch (*moat_crypto_fns.EVP_MAC_fetch)
#define EVP_MAC_final (*moat_crypto_fns.EVP_MAC_final)
#define EVP_MAC_free (*moat_crypto_fns.EVP_MAC_free)
#define EVP_MAC_init (*moat_crypto_fns.EVP_MAC_init)
#define EVP_MAC_update (*moat_crypto_fns.EVP_MAC_update)
#define EVP_MD_CTX_free (*moat_crypto_fns.EVP_MD_CTX_free)
#define EVP_MD_CTX_new (*moat_crypto_fns.EVP_MD_CTX_new)
#define EVP_MD_fetch (*moat_crypto_fns.EVP_MD_fetch)
#define EVP_PKEY_CTX_add1_hkdf_info (*moat_crypto_fns.EVP_PKEY_CTX_add1_hkdf_info)
#define EVP_PKEY_CTX_free (*moat_crypto_fns.EVP_PKEY_CTX_free)
#define EVP_PKEY_CTX_new (*moat_crypto_fns.EVP_PKEY_CTX_new)
#define EVP_PKEY_CTX_new_id (*moat_crypto_fns.EVP_PKEY_CTX_new_id)
#define EVP_PKEY_CTX_set1_hkdf_key (*moat_crypto_fns.EVP_PKEY_CTX_set1_hkdf_key)
#define EVP_PKEY_CTX_set1_hkdf_salt (*moat_crypto_fns.EVP_PKEY_CTX_set1_hkdf_salt)
#define EVP_PKEY_CTX_set_hkdf_md (*moat_crypto_fns.EVP_PKEY_CTX_set_hkdf_md)
#define EVP_PKEY_derive (*moat_crypto_fns.EVP_PKEY_derive)
#define EVP_PKEY_derive_init (*moat_crypto_fns.EVP_PKEY_derive_init)
#define EVP_PKEY_derive_set_peer (*moat_crypto_fns.EVP_PKEY_derive_set_peer)
#define EVP_PKEY_free (*moat_crypto_fns.EVP_PKEY_free)
#define EVP_PKEY_get_raw_private_key (*moat_crypto_fns.EVP_PKEY_get_raw_private_key)
#define EVP_PKEY_get_raw_public_key (*moat_crypto_fns.EVP_PKEY_get_raw_public_key)
#define EVP_PKEY_keygen (*moat_crypto_fns.EVP_PKEY_keygen)
#define EVP_PKEY_keygen_init (*moat_crypto_fns.EVP_PKEY_keygen_init)
#define EVP_PKEY_new_raw_private_key (*moat_crypto_fns.EVP_PKEY_new_raw_private_key)
#define EVP_PKEY_new_raw_public_key (*moat_crypto_fns.EVP_PKEY_new_raw_public_key)
#define EVP_aes_256_gcm (*moat_crypto_fns.EVP_aes_256_gcm)
#define EVP_sha256 (*moat_crypto_fns.EVP_sha256)
#define OSSL_PARAM_construct_end (*moat_crypto_fns.OSSL_PARAM_construct_end)
#define OSSL_PARAM_construct_utf8_string (*moat_crypto_fns.OSSL_PARAM_construct_utf8_string)
#define RAND_bytes (*moat_crypto_fns.RAND_bytes)
#endif

#endif
