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

#endif
