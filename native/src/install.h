#ifndef MOAT_INSTALL_H
#define MOAT_INSTALL_H
#include <stddef.h>

/*
 * Per-install keys (protocol 1.2, SPEC.md §5.4). An install is an X25519 key pair made here,
 * kept in a state file per origin under a directory only the user can open, its private key
 * sealed by the operating system's keystore where one answers (the Linux kernel's persistent
 * keyring; the macOS Keychain) or by the file's permissions alone. Once the verifier enrolled
 * it, K_i = HKDF-SHA-256(X25519(install, verifier), challenge, lp(label, iid, ekid, public))
 * is derived here and kept as a keyed HMAC state; neither the private key nor K_i ever leaves
 * this file's functions (no function returns them).
 */

typedef enum {
  MOAT_INSTALL_OK = 0,
  MOAT_INSTALL_NONE = 1,        /* no state for the origin, and none was to be made */
  MOAT_INSTALL_ARG = 2,         /* an argument out of its shape */
  MOAT_INSTALL_IO = 3,          /* the directory or the file cannot be made, read or written */
  MOAT_INSTALL_PERMISSIONS = 4, /* the directory or the file is not the user's alone */
  MOAT_INSTALL_STATE = 5,       /* the file is not a valid install state (corrupt, edited, another origin's) */
  MOAT_INSTALL_SEALED = 6,  /* the keystore key that sealed the file is gone (a reboot empties the kernel keyring) */
  MOAT_INSTALL_KEY = 7,     /* the verifier's key makes an all-zero shared secret (RFC 7748 §6.1) */
  MOAT_INSTALL_UNKNOWN = 8, /* no install open for the origin, or not one waiting for its enrollment */
  MOAT_INSTALL_CRYPTO = 9   /* OpenSSL failed (out of memory) */
} moat_install_result;

/* The typed error code of a result ("ERR_NATIVE_INSTALL_…"). */
const char *moat_install_code(moat_install_result r);

/* Where a state's private key is sealed. */
typedef enum { MOAT_SEAL_FILE = 0, MOAT_SEAL_KEYRING = 1, MOAT_SEAL_KEYCHAIN = 2 } moat_seal;
const char *moat_seal_name(moat_seal s);

typedef struct {
  char public_key[44]; /* base64url, 43 characters */
  int enrolled;
  char install_id[33];
  char ekid[33];
  moat_seal sealed;
} moat_install_info;

/* Longest origin string taken (it names the state; any printable ASCII without spaces). */
#define MOAT_INSTALL_MAX_ORIGIN 512
#define MOAT_INSTALL_MAX_DIR 4000

/*
 * Loads the state for `origin` from directory `dir` (made 0700 when missing and `create`), or
 * with `create` makes a key pair and writes it (0600, atomically). `file_only` never asks a
 * keystore. An enrolled state is active at once (its K_i derived); a new one waits for
 * moat_install_activate. `why` gets a message for a failure ("expected …, got …").
 */
moat_install_result moat_install_open(const char *dir, const char *origin, int create, int file_only,
                                      moat_install_info *info, char *why, size_t why_len);

/*
 * Derives K_i for the install waiting at `origin` (verifier_key and challenge base64url of 32
 * bytes), writes the enrolled state and makes K_i the origin's stamping key.
 */
moat_install_result moat_install_activate(const char *origin, const char *install_id, const char *ekid,
                                          const char *verifier_key, const char *challenge, char *why, size_t why_len);

/* Drops the origin's install: its key from memory and (dir not NULL, or the open one's) its state file. */
moat_install_result moat_install_forget(const char *origin, const char *dir, char *why, size_t why_len);

/* An active install's stamping key, shared with the transfers that use it (counted references). */
typedef struct moat_install_key moat_install_key;

/* A reference to the origin's active key, or NULL (none open, or not enrolled). */
moat_install_key *moat_install_key_get(const char *origin);
void moat_install_key_put(moat_install_key *key);
const char *moat_install_key_iid(const moat_install_key *key);
const struct moat_mac_key *moat_install_key_mac(const moat_install_key *key);

#endif
