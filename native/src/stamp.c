#include "stamp.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include "keystore.h"

static const char ANCHOR[] = "\"moat_att\":\"";
#define ANCHOR_LEN (sizeof(ANCHOR) - 1)

static int is_hex_lower(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

moat_stamp_result moat_stamp(unsigned char *body, size_t len) {
  if (len < ANCHOR_LEN + 3 || body[len - 1] != '}' || body[len - 2] != '"') return MOAT_STAMP_NO_ENVELOPE;
  size_t value_end = len - 2;
  size_t value_start = value_end;
  while (value_start > 0 && body[value_start - 1] != '"' && body[value_start - 1] != '\\') value_start--;
  if (value_start == 0 || body[value_start - 1] != '"') return MOAT_STAMP_NO_ENVELOPE;
  if (value_start < ANCHOR_LEN + 1) return MOAT_STAMP_NO_ENVELOPE;
  size_t anchor_start = value_start - ANCHOR_LEN;
  if (memcmp(body + anchor_start, ANCHOR, ANCHOR_LEN) != 0) return MOAT_STAMP_NO_ENVELOPE;
  if (body[anchor_start - 1] != ',' && body[anchor_start - 1] != '{') return MOAT_STAMP_NO_ENVELOPE;

  /* value = v1.<kid>.<ts:10>.<nonce:16>.<stamp:32-64 even> */
  const unsigned char *v = body + value_start;
  size_t vlen = value_end - value_start;
  if (vlen < 3 || memcmp(v, "v1.", 3) != 0) return MOAT_STAMP_NO_ENVELOPE;
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
  const char *kid = moat_key_id();
  if (kid_len != strlen(kid) || memcmp(v + dots[0] + 1, kid, kid_len) != 0) return MOAT_STAMP_WRONG_KID;
  if (dots[2] - dots[1] - 1 != 10 || dots[3] - dots[2] - 1 != 16) return MOAT_STAMP_NO_ENVELOPE;
  size_t stamp_start = value_start + dots[3] + 1;
  size_t stamp_len = value_end - stamp_start;
  if (stamp_len < 32 || stamp_len > 64 || stamp_len % 2 != 0) return MOAT_STAMP_NO_ENVELOPE;
  for (size_t i = stamp_start; i < value_end; i++) {
    if (!is_hex_lower(body[i])) return MOAT_STAMP_NO_ENVELOPE;
    if (body[i] != '0') return MOAT_STAMP_NOT_PLACEHOLDER;
  }

  unsigned char key[64];
  size_t key_len = moat_key_len();
  moat_key_load(key);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  /* The placeholder zeros are in place, so the MAC covers key id, time and nonce too. */
  unsigned char *ok = HMAC(EVP_sha256(), key, (int)key_len, body, len, mac, &mac_len);
  moat_wipe(key, sizeof key);
  if (ok == NULL || mac_len < stamp_len / 2) {
    moat_wipe(mac, sizeof mac);
    return MOAT_STAMP_CRYPTO;
  }
  static const char HEX[] = "0123456789abcdef";
  for (size_t i = 0; i < stamp_len / 2; i++) {
    body[stamp_start + 2 * i] = (unsigned char)HEX[mac[i] >> 4];
    body[stamp_start + 2 * i + 1] = (unsigned char)HEX[mac[i] & 15];
  }
  moat_wipe(mac, sizeof mac);
  return MOAT_STAMP_OK;
}
