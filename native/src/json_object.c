#include "json_object.h"
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Length of the strict UTF-8 sequence at p (Unicode Table 3-7: no overlongs, no surrogates, at most U+10FFFF), 0 if invalid. */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end) {
  size_t avail = (size_t)(end - p);
  unsigned char c = p[0];
  unsigned char lo = 0x80, hi = 0xBF;
  size_t n;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
  } else return 0;
  if (avail < n || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return n;
}

/*
 * Skips the string whose opening quote is at *pp; *pp ends after its closing quote.
 * *escaped says whether it held an escape. 0 when the string is malformed.
 */
static int skip_string(const unsigned char **pp, const unsigned char *end, int *escaped) {
  const unsigned char *p = *pp + 1;
  *escaped = 0;
  for (;;) {
#if defined(__SSE2__)
    /* Sixteen plain ASCII bytes at a time: a signed compare below 0x20 also catches every byte from 0x80. */
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)p);
      __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)), _mm_cmplt_epi8(v, space));
      int mask = _mm_movemask_epi8(stop);
      if (mask != 0) {
        p += __builtin_ctz((unsigned)mask);
        break;
      }
      p += 16;
    }
#endif
    if (p >= end) return 0;
    unsigned char c = *p;
    if (c == '"') {
      *pp = p + 1;
      return 1;
    }
    if (c == '\\') {
      *escaped = 1;
      if (end - p < 2) return 0;
      unsigned char e = p[1];
      if (e == 'u') {
        if (end - p < 6 || hex_value(p[2]) < 0 || hex_value(p[3]) < 0 || hex_value(p[4]) < 0 || hex_value(p[5]) < 0) return 0;
        p += 6;
      } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
        p += 2;
      } else {
        return 0;
      }
    } else if (c < 0x20) {
      return 0;
    } else if (c >= 0x80) {
      size_t n = utf8_sequence(p, end);
      if (n == 0) return 0;
      p += n;
    } else {
      p++;
    }
  }
}

/* Whether the string token [start, stop) (quotes included) names "moat_att" once unescaped. */
static int names_envelope(const unsigned char *start, const unsigned char *stop, int escaped) {
  static const char NAME[] = "moat_att";
  const unsigned char *p = start + 1, *end = stop - 1;
  if (!escaped) return end - p == 8 && memcmp(p, NAME, 8) == 0;
  size_t n = 0;
  while (p < end) {
    unsigned int c = *p;
    if (c == '\\') {
      unsigned char e = p[1];
      if (e == 'u') {
        c = (unsigned)(hex_value(p[2]) << 12 | hex_value(p[3]) << 8 | hex_value(p[4]) << 4 | hex_value(p[5]));
        p += 6;
      } else {
        c = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
        p += 2;
      }
    } else {
      p++;
    }
    /* A name longer than eight characters, or with any non-ASCII one, is another name. */
    if (n == 8 || c >= 0x80 || (unsigned char)NAME[n] != c) return 0;
    n++;
  }
  return n == 8;
}

static int digits(const unsigned char **pp, const unsigned char *end) {
  const unsigned char *p = *pp;
  while (p < end && *p >= '0' && *p <= '9') p++;
  int some = p > *pp;
  *pp = p;
  return some;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int skip_number(const unsigned char **pp, const unsigned char *end) {
  const unsigned char *p = *pp;
  if (*p == '-') p++;
  if (p >= end) return 0;
  if (*p == '0') p++;
  else if (!digits(&p, end)) return 0;
  if (p < end && *p == '.') {
    p++;
    if (!digits(&p, end)) return 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (!digits(&p, end)) return 0;
  }
  *pp = p;
  return 1;
}

static int skip_literal(const unsigned char **pp, const unsigned char *end, const char *word, size_t len) {
  if ((size_t)(end - *pp) < len || memcmp(*pp, word, len) != 0) return 0;
  *pp += len;
  return 1;
}

moat_json_object_result moat_json_object(const unsigned char *s, size_t len) {
  if (len < 2 || s[0] != '{' || s[len - 1] != '}') return MOAT_JSON_OTHER;
  const unsigned char *p = s + 1, *end = s + len;
  /* Open containers, outermost first: '{' or '['. The top-level object is stack[0]. */
  unsigned char stack[MOAT_JSON_MAX_DEPTH];
  size_t depth = 1;
  stack[0] = '{';
  int top_members = 0;
  p = skip_ws(p, end);
  if (p < end && *p == '}') {
    p++;
    depth = 0;
    goto after_value;
  }

member:
  /* p is at the member's name (after whitespace). */
  if (p >= end || *p != '"') return MOAT_JSON_OTHER;
  {
    const unsigned char *name = p;
    int escaped;
    if (!skip_string(&p, end, &escaped)) return MOAT_JSON_OTHER;
    if (depth == 1) {
      if (names_envelope(name, p, escaped)) return MOAT_JSON_OTHER;
      top_members = 1;
    }
  }
  p = skip_ws(p, end);
  if (p >= end || *p != ':') return MOAT_JSON_OTHER;
  p++;

value:
  p = skip_ws(p, end);
  if (p >= end) return MOAT_JSON_OTHER;
  switch (*p) {
    case '{':
    case '[': {
      if (depth == MOAT_JSON_MAX_DEPTH) return MOAT_JSON_OTHER;
      unsigned char open = *p;
      stack[depth++] = open;
      p = skip_ws(p + 1, end);
      if (p < end && *p == (open == '{' ? '}' : ']')) {
        p++;
        depth--;
        goto after_value;
      }
      if (open == '{') goto member;
      goto value;
    }
    case '"': {
      int escaped;
      if (!skip_string(&p, end, &escaped)) return MOAT_JSON_OTHER;
      break;
    }
    case 't':
      if (!skip_literal(&p, end, "true", 4)) return MOAT_JSON_OTHER;
      break;
    case 'f':
      if (!skip_literal(&p, end, "false", 5)) return MOAT_JSON_OTHER;
      break;
    case 'n':
      if (!skip_literal(&p, end, "null", 4)) return MOAT_JSON_OTHER;
      break;
    default:
      if (*p != '-' && (*p < '0' || *p > '9')) return MOAT_JSON_OTHER;
      if (!skip_number(&p, end)) return MOAT_JSON_OTHER;
  }

after_value:
  if (depth == 0) return p == end ? (top_members ? MOAT_JSON_MEMBERS : MOAT_JSON_EMPTY) : MOAT_JSON_OTHER;
  p = skip_ws(p, end);
  if (p >= end) return MOAT_JSON_OTHER;
  if (*p == ',') {
    p = skip_ws(p + 1, end);
    if (stack[depth - 1] == '{') goto member;
    goto value;
  }
  if (*p == (stack[depth - 1] == '{' ? '}' : ']')) {
    p++;
    depth--;
    goto after_value;
  }
  return MOAT_JSON_OTHER;
}
