#ifndef MOAT_LITERAL_SCAN_H
#define MOAT_LITERAL_SCAN_H
#include <stddef.h>
#include <stdint.h>

/* A compiled set of literals (Hyperscan/Vectorscan, opened with dlopen on first use). */
typedef struct moat_literals moat_literals;

/*
 * Compiles `count` literals (bytes and lengths; `caseless[i]` folds ASCII case), or loads
 * `serialized` (a database moat_literals_serialize gave for the same literals) when it is
 * given and valid; NULL on failure.
 */
moat_literals *moat_literals_compile(const char *const *patterns, const size_t *lengths, const int *caseless, unsigned count,
                                     const char *serialized, size_t serialized_len);

/*
 * The same literals as a direct set: no libhs database, built in linear time and searched with
 * a prefix filter (for sets too large for libhs to compile quickly); every literal at least 4
 * bytes. It cannot be serialized. NULL on failure.
 */
moat_literals *moat_literals_direct(const char *const *patterns, const size_t *lengths, const int *caseless, unsigned count);
/* The stride a direct set of `count` literals, the shortest `shortest` bytes long, is probed with: every stride-th
   position (1: every one). A set probed with a stride above 1 is built and searched faster than libhs compiles it. */
unsigned moat_literals_direct_stride(size_t count, size_t shortest);

/*
 * Compiles regular expressions (libhs syntax, leftmost start of match reported). Scanning
 * such a set gives (expression index, start, end) triples instead of pairs.
 */
moat_literals *moat_regex_compile(const char *const *patterns, unsigned count);

/* The compiled database as bytes (malloc'ed; the caller frees them). 0 on success. */
int moat_literals_serialize(const moat_literals *m, char **bytes, size_t *len);

/* libhs's version string, NULL when it cannot be loaded. */
const char *moat_literals_version(void);

/* Why the last compile failed, or why the library is missing (a static string). */
const char *moat_literal_error(void);

/*
 * Finds every occurrence of every literal in `data`: `*pairs` receives `*count` pairs of
 * (literal index, start offset), in the order the library reports them; the caller frees it.
 * Not thread-safe for one `m` (one scratch space). 0 on success.
 */
int moat_literals_scan(moat_literals *m, const unsigned char *data, size_t len, int32_t **pairs, size_t *count);

void moat_literals_free(moat_literals *m);

/* What the prefilter found in a file: it may hold a codename (or libhs failed on it), a split
   literal, or something the source-map audit reports. 0: none can be there. */
#define MOAT_PREFILTER_CODENAME 1
#define MOAT_PREFILTER_SPLIT 2
#define MOAT_PREFILTER_AUDIT 4
/* Too many audit matches to list: the audit reads the whole file. */
#define MOAT_PREFILTER_AUDIT_ALL 8
/* The pattern index of a listed window in a file's events: it may hold a codename or a split
   literal (the others are the audit's patterns). */
#define MOAT_PREFILTER_WINDOW 0xffff
/* Listed as well for a listed window that may hold a split literal: the others cannot. */
#define MOAT_PREFILTER_SPLIT_WINDOW 0xfffe

/* Audit matches of one file: (window index, pattern index, file offset of the match's start) triples. */
typedef struct {
  double *items;
  size_t n, cap;
} event_list;

/*
 * Which files can hold a finding, read (pread, a megabyte at a time) on `threads` threads, each with its own
 * scratch. It scans the same windows as moat-scan's JavaScript stream (chunks of `chunk`
 * bytes with `max_len` bytes carried over) with the literal set, the split-literal triggers
 * (junctions removed around each, then the literals searched again) and the audit patterns,
 * so a file it clears is a file the exact scan finds nothing in. A superset: the exact scan
 * decides for the windows it lists, and reads no other. The audit's matches are listed by
 * window, so the audit reads only the bytes around them.
 */
typedef struct {
  const moat_literals *literals;
  const moat_literals *triggers; /* NULL: split literals off (the prefilter finds the triggers itself) */
  const moat_literals *audit;    /* NULL: the source-map audit off */
  const char *const *paths;
  size_t count;
  size_t chunk, max_len, audit_carry;
  unsigned threads;
  unsigned char *flags; /* out, per file */
  int *errors;          /* out, per file: errno, 0 when read */
  double *sizes;        /* out, per file */
  event_list *events;   /* out, per file: windows that may hold a finding (MOAT_PREFILTER_WINDOW) and the audit's matches */
} moat_prefilter;

/* Runs the prefilter; -1 when the library is not loaded or the job is malformed. */
int moat_prefilter_run(const moat_prefilter *job);

/* Needle forms of codenames (moat_needle_forms): back to back, each one's length, codename index and kind (the
   form's index in moat-scan's ENCODINGS, | 0x80 when it folds ASCII case). */
typedef struct {
  unsigned char *bytes;
  size_t bytes_len, bytes_cap;
  uint32_t *lengths, *owners;
  uint8_t *kinds;
  size_t count, lengths_cap, owners_cap, kinds_cap;
} moat_forms;

#define MOAT_FORMS_FOLD 1       /* plain and UTF-16 forms fold case */
#define MOAT_FORMS_PLAIN_ONLY 2 /* the plain form alone */

/*
 * Every needle form of `codenames` codenames, as moat-scan's needleForms gives them (same
 * bytes, order and deduplication per codename): `units` holds `strings` UTF-16 strings back to
 * back (`lengths` in units, each 1-65536); codename c has `spellings[c]` of them (1-8), itself
 * first, then the other spellings whose encoded forms are searched (its lowercase and
 * uppercase with case folding). 0 on success (free `out` with moat_forms_free), -1 on a
 * malformed call or out of memory.
 */
int moat_needle_forms(const uint16_t *units, size_t units_len, const uint32_t *lengths, size_t strings, const uint32_t *spellings, size_t codenames, int flags,
                      moat_forms *out);
void moat_forms_free(moat_forms *f);

/* A literal set in moat-scan's order (its packPlan): the unique plain and case-folding forms, longest first, then every
   other form in order. */
typedef struct {
  unsigned char *bytes;
  size_t bytes_len, count, sources;
  uint32_t *lengths, *offsets, *owners; /* per literal; a source's owner and kind: its first form's */
  uint8_t *kinds;
  uint32_t *regex; /* per plain or case-folding form, in order: (source index, codename index, kind) */
  size_t regex_count;
  uint32_t max_length; /* of every form, at least 1 */
} moat_plan;

/* The literal set of derived forms; 0 on success (free `out` with moat_plan_free), -1 when out of memory. */
int moat_forms_plan(const moat_forms *f, moat_plan *out);
void moat_plan_free(moat_plan *p);

#endif
