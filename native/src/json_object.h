#ifndef MOAT_JSON_OBJECT_H
#define MOAT_JSON_OBJECT_H
#include <stddef.h>

/* What moat_json_object() found. */
typedef enum {
  MOAT_JSON_MEMBERS = 0, /* an object with members, none named "moat_att" */
  MOAT_JSON_EMPTY = 1,   /* an object without members */
  MOAT_JSON_OTHER = 2    /* anything else: the caller takes the protocol's own path */
} moat_json_object_result;

/* Containers nested deeper than this are left to the caller (MOAT_JSON_OTHER). */
#define MOAT_JSON_MAX_DEPTH 512

/*
 * Whether `s` is a body the protocol's appendEnvelope (SPEC.md §4.3) extends as it stands:
 * '{' first and '}' last, one well-formed JSON text (RFC 8259, the grammar of JSON.parse)
 * in strict UTF-8, and no top-level member named "moat_att" after unescaping. Then the
 * envelope member goes before the last byte (MEMBERS) or replaces the whole body (EMPTY).
 * Everything else — malformed JSON, invalid UTF-8, an envelope already there, nesting
 * deeper than MOAT_JSON_MAX_DEPTH — is OTHER, and the caller's full path decides.
 */
moat_json_object_result moat_json_object(const unsigned char *s, size_t len);

#endif
