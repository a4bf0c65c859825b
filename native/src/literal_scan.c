/*
 * Multi-literal search for moat-scan: every needle and every encoded form in one libhs
 * (Intel Hyperscan) literal database, one pass over the bytes. The library is opened on first
 * use with dlopen, like libcurl: a machine without it falls back to the JavaScript matcher,
 * and moat-scan refuses a build that fails its known-answer self-test (Vectorscan 5.4.9).
 * Only the handful of functions used are declared here, so building needs no -dev package.
 */
#include "literal_scan.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hs_database hs_database_t;
typedef struct hs_scratch hs_scratch_t;
typedef struct {
  char *message;
  int expression;
} hs_compile_error_t;
typedef int (*hs_match_cb)(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *context);

#define HS_SUCCESS 0
#define HS_FLAG_CASELESS 1
#define HS_FLAG_SOM_LEFTMOST 256
#define HS_MODE_BLOCK 1

static struct {
  int (*compile_multi)(const char *const *, const unsigned *, const unsigned *, unsigned, unsigned, const void *, hs_database_t **,
                       hs_compile_error_t **);
  int (*compile_lit_multi)(const char *const *, const unsigned *, const unsigned *, const size_t *, unsigned, unsigned, const void *,
                           hs_database_t **, hs_compile_error_t **);
  int (*alloc_scratch)(const hs_database_t *, hs_scratch_t **);
  int (*scan)(const hs_database_t *, const char *, unsigned int, unsigned int, hs_scratch_t *, hs_match_cb, void *);
  int (*free_database)(hs_database_t *);
  int (*free_scratch)(hs_scratch_t *);
  int (*free_compile_error)(hs_compile_error_t *);
  int (*serialize)(const hs_database_t *, char **, size_t *);
  int (*deserialize)(const char *, size_t, hs_database_t **);
  const char *(*version)(void);
} hs;
static int hs_loaded;
static char hs_error[256] = "libhs not loaded";
static pthread_once_t hs_once = PTHREAD_ONCE_INIT;

static void load(void) {
  void *lib = dlopen("libhs.so.5", RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    snprintf(hs_error, sizeof hs_error, "libhs unavailable: %s", dlerror());
    return;
  }
#define RESOLVE(field, symbol)                                                  \
  do {                                                                          \
    *(void **)(&hs.field) = dlsym(lib, symbol);                                 \
    if (hs.field == NULL) {                                                     \
      snprintf(hs_error, sizeof hs_error, "libhs unavailable: no symbol %s", symbol); \
      return;                                                                   \
    }                                                                           \
  } while (0)
  RESOLVE(compile_multi, "hs_compile_multi");
  RESOLVE(compile_lit_multi, "hs_compile_lit_multi");
  RESOLVE(alloc_scratch, "hs_alloc_scratch");
  RESOLVE(scan, "hs_scan");
  RESOLVE(free_database, "hs_free_database");
  RESOLVE(free_scratch, "hs_free_scratch");
  RESOLVE(free_compile_error, "hs_free_compile_error");
  RESOLVE(serialize, "hs_serialize_database");
  RESOLVE(deserialize, "hs_deserialize_database");
  RESOLVE(version, "hs_version");
#undef RESOLVE
  hs_loaded = 1;
}

const char *moat_literal_error(void) { return hs_error; }

struct moat_literals {
  hs_database_t *db;
  hs_scratch_t *scratch;
  /* libhs's literal API refuses literals that start with NUL (UTF-16BE forms do): those are
     compiled without their leading NULs, which the scan then checks itself. */
  size_t *skip;
  size_t *length;
  /* A regular-expression set (moat_regex_compile): matches are (id, leftmost start, end). */
  int regex;
};

const char *moat_literals_version(void) {
  pthread_once(&hs_once, load);
  return hs_loaded ? hs.version() : NULL;
}

moat_literals *moat_literals_compile(const char *const *patterns, const size_t *lengths, const int *caseless, unsigned count,
                                     const char *serialized, size_t serialized_len) {
  pthread_once(&hs_once, load);
  if (!hs_loaded || count == 0) {
    if (count == 0) snprintf(hs_error, sizeof hs_error, "no patterns");
    return NULL;
  }
  unsigned *flags = calloc(count, sizeof *flags);
  unsigned *ids = calloc(count, sizeof *ids);
  const char **trimmed = calloc(count, sizeof *trimmed);
  size_t *trimmed_len = calloc(count, sizeof *trimmed_len);
  moat_literals *m = calloc(1, sizeof *m);
  if (m != NULL) {
    m->skip = calloc(count, sizeof *m->skip);
    m->length = calloc(count, sizeof *m->length);
  }
  if (flags == NULL || ids == NULL || trimmed == NULL || trimmed_len == NULL || m == NULL || m->skip == NULL || m->length == NULL) {
    free(flags);
    free(ids);
    free(trimmed);
    free(trimmed_len);
    if (m != NULL) {
      free(m->skip);
      free(m->length);
    }
    free(m);
    snprintf(hs_error, sizeof hs_error, "out of memory");
    return NULL;
  }
  for (unsigned i = 0; i < count; i++) {
    size_t skip = 0;
    while (skip < lengths[i] && patterns[i][skip] == '\0') skip++;
    if (skip == lengths[i]) skip = 0; /* all NUL: left to libhs, which refuses it */
    m->skip[i] = skip;
    m->length[i] = lengths[i];
    trimmed[i] = patterns[i] + skip;
    trimmed_len[i] = lengths[i] - skip;
    flags[i] = caseless[i] ? HS_FLAG_CASELESS : 0;
    ids[i] = i;
  }
  hs_compile_error_t *err = NULL;
  /* A database compiled earlier for exactly these literals (the caller keys its cache by
     them and the library version); libhs checks its version, platform and checksum. */
  int rc = serialized != NULL && hs.deserialize(serialized, serialized_len, &m->db) == HS_SUCCESS
               ? HS_SUCCESS
               : hs.compile_lit_multi(trimmed, flags, ids, trimmed_len, count, HS_MODE_BLOCK, NULL, &m->db, &err);
  free(flags);
  free(ids);
  free(trimmed);
  free(trimmed_len);
  if (rc != HS_SUCCESS) {
    snprintf(hs_error, sizeof hs_error, "libhs compile failed: %s", err != NULL && err->message != NULL ? err->message : "unknown");
    if (err != NULL) hs.free_compile_error(err);
    free(m->skip);
    free(m->length);
    free(m);
    return NULL;
  }
  if (hs.alloc_scratch(m->db, &m->scratch) != HS_SUCCESS) {
    snprintf(hs_error, sizeof hs_error, "libhs scratch allocation failed");
    hs.free_database(m->db);
    free(m->skip);
    free(m->length);
    free(m);
    return NULL;
  }
  return m;
}

moat_literals *moat_regex_compile(const char *const *patterns, unsigned count) {
  pthread_once(&hs_once, load);
  if (!hs_loaded || count == 0) return NULL;
  unsigned *flags = calloc(count, sizeof *flags);
  unsigned *ids = calloc(count, sizeof *ids);
  moat_literals *m = calloc(1, sizeof *m);
  if (flags == NULL || ids == NULL || m == NULL) {
    free(flags);
    free(ids);
    free(m);
    snprintf(hs_error, sizeof hs_error, "out of memory");
    return NULL;
  }
  for (unsigned i = 0; i < count; i++) {
    flags[i] = HS_FLAG_SOM_LEFTMOST;
    ids[i] = i;
  }
  hs_compile_error_t *err = NULL;
  int rc = hs.compile_multi(patterns, flags, ids, count, HS_MODE_BLOCK, NULL, &m->db, &err);
  free(flags);
  free(ids);
  if (rc != HS_SUCCESS) {
    snprintf(hs_error, sizeof hs_error, "libhs compile failed: %s", err != NULL && err->message != NULL ? err->message : "unknown");
    if (err != NULL) hs.free_compile_error(err);
    free(m);
    return NULL;
  }
  if (hs.alloc_scratch(m->db, &m->scratch) != HS_SUCCESS) {
    snprintf(hs_error, sizeof hs_error, "libhs scratch allocation failed");
    hs.free_database(m->db);
    free(m);
    return NULL;
  }
  m->regex = 1;
  return m;
}

int moat_literals_serialize(const moat_literals *m, char **bytes, size_t *len) {
  return hs.serialize(m->db, bytes, len) == HS_SUCCESS ? 0 : -1;
}

void moat_literals_free(moat_literals *m) {
  if (m == NULL) return;
  hs.free_scratch(m->scratch);
  hs.free_database(m->db);
  free(m->skip);
  free(m->length);
  free(m);
}

typedef struct {
  const moat_literals *m;
  const unsigned char *data;
  int32_t *pairs; /* id, start offset */
  size_t n, cap;
  int failed;
} collector;

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *context) {
  (void)from;
  (void)flags;
  collector *c = context;
  if (c->m->regex) {
    if (c->n + 3 > c->cap) {
      size_t cap = c->cap == 0 ? 1536 : c->cap * 2;
      int32_t *grown = realloc(c->pairs, cap * sizeof *grown);
      if (grown == NULL) {
        c->failed = 1;
        return 1;
      }
      c->pairs = grown;
      c->cap = cap;
    }
    c->pairs[c->n++] = (int32_t)id;
    c->pairs[c->n++] = (int32_t)from;
    c->pairs[c->n++] = (int32_t)to;
    return 0;
  }
  size_t length = c->m->length[id], skip = c->m->skip[id];
  if (to < length) return 0; /* its leading NULs would start before the data */
  size_t start = (size_t)to - length;
  for (size_t k = 0; k < skip; k++)
    if (c->data[start + k] != 0) return 0;
  if (c->n + 2 > c->cap) {
    size_t cap = c->cap == 0 ? 1024 : c->cap * 2;
    int32_t *grown = realloc(c->pairs, cap * sizeof *grown);
    if (grown == NULL) {
      c->failed = 1;
      return 1; /* stop: the caller reports the failure */
    }
    c->pairs = grown;
    c->cap = cap;
  }
  c->pairs[c->n++] = (int32_t)id;
  c->pairs[c->n++] = (int32_t)start;
  return 0;
}

int moat_literals_scan(moat_literals *m, const unsigned char *data, size_t len, int32_t **pairs, size_t *count) {
  collector c = {m, data, NULL, 0, 0, 0};
  if (len > 0x7fffffffu) return -1;
  int rc = hs.scan(m->db, (const char *)data, (unsigned int)len, 0, m->scratch, on_match, &c);
  if (c.failed || (rc != HS_SUCCESS && rc != -3 /* HS_SCAN_TERMINATED */)) {
    free(c.pairs);
    return -1;
  }
  *pairs = c.pairs;
  *count = c.n / (m->regex ? 3 : 2);
  return 0;
}
