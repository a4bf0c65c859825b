/*
 * Multi-literal search for moat-scan: every needle and every encoded form in one libhs
 * (Intel Hyperscan) literal database, one pass over the bytes. The library is opened on first
 * use with dlopen, like libcurl: a machine without it falls back to the JavaScript matcher,
 * and moat-scan refuses a build that fails its known-answer self-test (Vectorscan 5.4.9).
 * Only the handful of functions used are declared here, so building needs no -dev package.
 */
#include "literal_scan.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
  int (*clone_scratch)(const hs_scratch_t *, hs_scratch_t **);
  int (*free_compile_error)(hs_compile_error_t *);
  int (*serialize)(const hs_database_t *, char **, size_t *);
  int (*deserialize)(const char *, size_t, hs_database_t **);
  const char *(*version)(void);
} hs;
static int hs_loaded;
/* Why libhs did not load (written once, in load()); and the calling thread's last error: sets are compiled on libuv's
   threads too (regexCompileAsync), so one thread's message is never another's. */
static char load_error[256] = "libhs not loaded";
static __thread char hs_error[256];
static pthread_once_t hs_once = PTHREAD_ONCE_INIT;

static void load(void) {
  void *lib = dlopen("libhs.so.5", RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    snprintf(load_error, sizeof load_error, "libhs unavailable: %s", dlerror());
    return;
  }
#define RESOLVE(field, symbol)                                                  \
  do {                                                                          \
    *(void **)(&hs.field) = dlsym(lib, symbol);                                 \
    if (hs.field == NULL) {                                                     \
      snprintf(load_error, sizeof load_error, "libhs unavailable: no symbol %s", symbol); \
      return;                                                                   \
    }                                                                           \
  } while (0)
  RESOLVE(compile_multi, "hs_compile_multi");
  RESOLVE(compile_lit_multi, "hs_compile_lit_multi");
  RESOLVE(alloc_scratch, "hs_alloc_scratch");
  RESOLVE(scan, "hs_scan");
  RESOLVE(free_database, "hs_free_database");
  RESOLVE(free_scratch, "hs_free_scratch");
  RESOLVE(clone_scratch, "hs_clone_scratch");
  RESOLVE(free_compile_error, "hs_free_compile_error");
  RESOLVE(serialize, "hs_serialize_database");
  RESOLVE(deserialize, "hs_deserialize_database");
  RESOLVE(version, "hs_version");
#undef RESOLVE
  hs_loaded = 1;
}

const char *moat_literal_error(void) { return hs_error[0] != '\0' ? hs_error : load_error; }

struct moat_literals {
  hs_database_t *db;
  hs_scratch_t *scratch;
  /* libhs's literal API refuses literals that start with NUL (UTF-16BE forms do): those are
     compiled without their leading NULs, which the scan then checks itself. */
  size_t *skip;
  size_t *length;
  /* How many patterns were given: a match id from a loaded (serialized) database is checked
     against it before it indexes `skip` and `length`, as that database may not be theirs. */
  unsigned count;
  /* A regular-expression set (moat_regex_compile): matches are (id, leftmost start, end). */
  int regex;
  /* A set searched without libhs (moat_literals_direct); db and scratch are NULL then. */
  struct direct_set *direct;
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
    m->count = count;
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
  m->count = count;
  return m;
}

int moat_literals_serialize(const moat_literals *m, char **bytes, size_t *len) {
  if (m->direct != NULL) return -1; /* nothing compiled to keep */
  return hs.serialize(m->db, bytes, len) == HS_SUCCESS ? 0 : -1;
}

static void direct_free(struct direct_set *d);

void moat_literals_free(moat_literals *m) {
  if (m == NULL) return;
  direct_free(m->direct);
  if (m->scratch != NULL) hs.free_scratch(m->scratch);
  if (m->db != NULL) hs.free_database(m->db);
  free(m->skip);
  free(m->length);
  free(m);
}

typedef struct {
  const moat_literals *m;
  const unsigned char *data;
  size_t len;
  int32_t *pairs; /* id, start offset */
  size_t n, cap;
  int failed;
} collector;

/* Room for `need` items of `size` bytes in a growing array (doubling from `first`); 0 when out of memory. */
static int reserve(void **items, size_t *cap, size_t need, size_t size, size_t first) {
  if (need <= *cap) return 1;
  size_t grown_cap = *cap == 0 ? first : *cap * 2;
  while (grown_cap < need) grown_cap *= 2;
  void *grown = realloc(*items, grown_cap * size);
  if (grown == NULL) return 0;
  *items = grown;
  *cap = grown_cap;
  return 1;
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *context) {
  (void)from;
  (void)flags;
  collector *c = context;
  /* Not one of this set's patterns, or past the data: a database that is not this set's. */
  if (id >= c->m->count || to > c->len || from > to) {
    c->failed = 1;
    return 1;
  }
  if (c->m->regex) {
    if (!reserve((void **)&c->pairs, &c->cap, c->n + 3, sizeof *c->pairs, 1536)) {
      c->failed = 1;
      return 1;
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
  if (!reserve((void **)&c->pairs, &c->cap, c->n + 2, sizeof *c->pairs, 1024)) {
    c->failed = 1;
    return 1; /* stop: the caller reports the failure */
  }
  c->pairs[c->n++] = (int32_t)id;
  c->pairs[c->n++] = (int32_t)start;
  return 0;
}


/* ---- Direct literal sets: searched without a libhs database ----
 * libhs compiles a large literal set slowly (about 2 s for 22,000 literals), longer than a CI
 * run's whole scan. A direct set is built in linear time: a 2^18-bit filter over each
 * literal's first four bytes (L1-resident, one probe per position) in front of two hash
 * tables of candidates, by four-byte prefix (literals under 8 bytes) and by eight-byte prefix
 * (the rest, so encoded forms sharing `\u00` or `0x` do not share one long bucket). It
 * reports what libhs would: every occurrence of every literal, through the same callbacks.
 *
 * A small set whose literals are all at least S + 3 bytes long (a codename list searched in
 * plain text: 1,000 literals of 6 bytes or more) is probed at every S-th position only
 * (S up to 4): each literal is entered under its blocks at offsets 0..S-1, and one of them
 * lies whole at a probed position in every occurrence. A third of the probes, and a filter
 * still sparse (at most DIRECT_SAMPLED_MAX entries). Matches come in the order of the
 * probes then, not by start; the callers do not depend on it (literalsScan sorts). */
#define DIRECT_FILTER_BITS 18
#define DIRECT_MAX_STRIDE 4u
#define DIRECT_SAMPLED_MAX 8192u
/* An entry of `order`: the literal's id, and in the top bits the offset of the block it is entered under. */
#define DIRECT_OFFSET_SHIFT 28
#define DIRECT_ID_MASK ((1u << DIRECT_OFFSET_SHIFT) - 1)

typedef struct {
  uint64_t key;
  uint32_t start, count; /* into direct_set.order; count 0: empty slot */
} direct_slot;

struct direct_set {
  uint64_t filter[(1u << DIRECT_FILTER_BITS) / 64];
  direct_slot *table[2]; /* by 4-byte prefix (short literals), by 8-byte prefix (long ones) */
  size_t mask[2];
  uint32_t *order;       /* entries (id | offset << DIRECT_OFFSET_SHIFT) grouped by table and block */
  unsigned char *bytes;  /* the literals back to back */
  size_t *offset;
  unsigned char *caseless;
  int fold;              /* some literal folds case: prefixes are folded */
  unsigned stride;       /* positions probed: every stride-th (1: every one) */
};

/* ASCII A-Z to a-z in four bytes at once. */
static uint32_t fold4(uint32_t w) {
  uint32_t low = w & 0x7f7f7f7fu;
  uint32_t upper = ~w & ((low + 0x3f3f3f3fu) ^ (low + 0x25252525u)) & 0x80808080u;
  return w | (upper >> 2);
}

static uint32_t load4(const unsigned char *p, int fold) {
  uint32_t w;
  memcpy(&w, p, 4);
  return fold ? fold4(w) : w;
}

static uint64_t load8(const unsigned char *p, int fold) {
  return (uint64_t)load4(p, fold) | (uint64_t)load4(p + 4, fold) << 32;
}

static uint32_t filter_hash(uint32_t w) { return (w * 0x9e3779b1u) >> (32 - DIRECT_FILTER_BITS); }

/* Where table t's probe for `key` starts (linear probing from there). */
static size_t direct_home(const struct direct_set *d, int t, uint64_t key) { return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & d->mask[t]; }

static const direct_slot *direct_find(const struct direct_set *d, int t, uint64_t key) {
  if (d->table[t] == NULL) return NULL;
  for (size_t i = direct_home(d, t, key);; i = (i + 1) & d->mask[t]) {
    const direct_slot *s = &d->table[t][i];
    if (s->count == 0) return NULL;
    if (s->key == key) return s;
  }
}

typedef struct {
  uint64_t key;
  uint32_t id;
} keyed_id;

static void direct_free(struct direct_set *d) {
  if (d == NULL) return;
  free(d->table[0]);
  free(d->table[1]);
  free(d->order);
  free(d->bytes);
  free(d->offset);
  free(d->caseless);
  free(d);
}

/* Table t's slot for `key`: the one that holds it, or the empty one it claims. */
static direct_slot *direct_slot_for(struct direct_set *d, int t, uint64_t key) {
  size_t i = direct_home(d, t, key);
  while (d->table[t][i].count != 0 && d->table[t][i].key != key) i = (i + 1) & d->mask[t];
  d->table[t][i].key = key;
  return &d->table[t][i];
}

/* Fills table t with the ids of `keyed` (n of them, in id order) placed at order[base..]: each prefix's ids together and
   ascending. Counted, not sorted (a sort of 22,000 literals took a cold scan 3 ms): each prefix's count, then its run's
   end, then its ids put in from the last down, so `start` ends at the run's first. */
static int direct_table(struct direct_set *d, int t, const keyed_id *keyed, size_t n, size_t base) {
  if (n == 0) return 1;
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  d->table[t] = calloc(cap, sizeof *d->table[t]);
  if (d->table[t] == NULL) return 0;
  d->mask[t] = cap - 1;
  for (size_t a = 0; a < n; a++) direct_slot_for(d, t, keyed[a].key)->count++;
  size_t end = base;
  for (size_t i = 0; i < cap; i++)
    if (d->table[t][i].count != 0) end += d->table[t][i].count, d->table[t][i].start = (uint32_t)end;
  for (size_t a = n; a-- > 0;) d->order[--direct_slot_for(d, t, keyed[a].key)->start] = keyed[a].id;
  return 1;
}

unsigned moat_literals_direct_stride(size_t count, size_t shortest) {
  /* Every literal spans a whole four-byte block at one probed position of each occurrence. */
  unsigned stride = shortest < 4 ? 1 : shortest - 3 < DIRECT_MAX_STRIDE ? (unsigned)(shortest - 3) : DIRECT_MAX_STRIDE;
  while (stride > 1 && count * stride > DIRECT_SAMPLED_MAX) stride--;
  return stride;
}

static struct direct_set *direct_build(const char *const *patterns, const size_t *lengths, const int *caseless, unsigned count) {
  struct direct_set *d = calloc(1, sizeof *d);
  size_t total = 0, shortest = SIZE_MAX;
  for (unsigned i = 0; i < count; i++) {
    total += lengths[i];
    if (lengths[i] < shortest) shortest = lengths[i];
  }
  unsigned stride = moat_literals_direct_stride(count, shortest);
  size_t entries = (size_t)count * stride;
  keyed_id *keyed = calloc(entries, sizeof *keyed);
  if (d != NULL) {
    d->stride = stride;
    d->order = calloc(entries, sizeof *d->order);
    d->bytes = malloc(total);
    d->offset = calloc(count, sizeof *d->offset);
    d->caseless = calloc(count, 1);
  }
  if (d == NULL || keyed == NULL || d->order == NULL || d->bytes == NULL || d->offset == NULL || d->caseless == NULL) {
    free(keyed);
    direct_free(d);
    return NULL;
  }
  for (unsigned i = 0; i < count && !d->fold; i++) d->fold = caseless[i] != 0;
  /* A literal is long (keyed by eight bytes) when its block at every offset has eight. */
  size_t at = 0, shorts = 0, long_from = 8 + stride - 1;
  for (unsigned i = 0; i < count; i++) {
    memcpy(d->bytes + at, patterns[i], lengths[i]);
    d->offset[i] = at;
    d->caseless[i] = caseless[i] != 0;
    for (unsigned k = 0; k < stride; k++) {
      uint32_t h = filter_hash(load4(d->bytes + at + k, d->fold));
      d->filter[h >> 6] |= 1ull << (h & 63);
    }
    if (lengths[i] < long_from) shorts += stride;
    at += lengths[i];
  }
  /* Short literals' entries first, then long ones', each in id order. */
  size_t s = 0, l = shorts;
  for (unsigned i = 0; i < count; i++) {
    const unsigned char *p = d->bytes + d->offset[i];
    for (unsigned k = 0; k < stride; k++) {
      uint32_t entry = i | (uint32_t)k << DIRECT_OFFSET_SHIFT;
      if (lengths[i] < long_from) keyed[s++] = (keyed_id){load4(p + k, d->fold), entry};
      else keyed[l++] = (keyed_id){load8(p + k, d->fold), entry};
    }
  }
  int ok = direct_table(d, 0, keyed, shorts, 0) && direct_table(d, 1, keyed + shorts, entries - shorts, shorts);
  free(keyed);
  if (!ok) {
    direct_free(d);
    return NULL;
  }
  return d;
}

static const unsigned char fold_byte[256] = {
#define F4(b) F1(b), F1(b + 1), F1(b + 2), F1(b + 3)
#define F1(b) ((b) >= 'A' && (b) <= 'Z' ? (b) + 32 : (b))
#define F16(b) F4(b), F4(b + 4), F4(b + 8), F4(b + 12)
    F16(0), F16(16), F16(32), F16(48), F16(64), F16(80), F16(96), F16(112),
    F16(128), F16(144), F16(160), F16(176), F16(192), F16(208), F16(224), F16(240)
#undef F16
#undef F1
#undef F4
};

/* The literals of slot s whose block at data[at] it is: each one present is reported; nonzero when the callback stops
   the scan. */
static int direct_verify(const moat_literals *m, const direct_slot *s, const unsigned char *data, size_t len, size_t at, hs_match_cb cb,
                         void *context) {
  const struct direct_set *d = m->direct;
  for (uint32_t k = s->start; k < s->start + s->count; k++) {
    uint32_t id = d->order[k] & DIRECT_ID_MASK, offset = d->order[k] >> DIRECT_OFFSET_SHIFT;
    if (offset > at) continue; /* it would start before the data */
    size_t i = at - offset, n = m->length[id];
    if (n > len - i) continue;
    const unsigned char *lit = d->bytes + d->offset[id];
    size_t j = 0;
    if (d->caseless[id])
      while (j < n && fold_byte[data[i + j]] == fold_byte[lit[j]]) j++;
    else if (memcmp(data + i, lit, n) == 0)
      j = n;
    if (j == n && cb(id, 0, i + n, 0, context) != 0) return 1;
  }
  return 0;
}

/* The candidates whose block at data[i] (probed) is `w`; nonzero when the callback stopped the scan. */
static int direct_at(const moat_literals *m, const unsigned char *data, size_t len, size_t i, uint32_t w, hs_match_cb cb, void *context) {
  const struct direct_set *d = m->direct;
  const direct_slot *s = direct_find(d, 0, w);
  if (s != NULL && direct_verify(m, s, data, len, i, cb, context)) return 1;
  if (i + 8 > len) return 0;
  s = direct_find(d, 1, load8(data + i, d->fold));
  return s != NULL && direct_verify(m, s, data, len, i, cb, context);
}

#define DIRECT_PROBE(w, at)                                                                   \
  do {                                                                                        \
    uint32_t h_ = filter_hash(w);                                                             \
    if ((filter[h_ >> 6] >> (h_ & 63) & 1) != 0 && direct_at(m, data, len, (at), (w), cb, context)) \
      return -3;                                                                              \
  } while (0)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DIRECT_AVX2 1
/* The eight probes of `bytes` (words shuffled by `words_of`) at i, i + s, …, i + 7s: their candidates to direct_at, in order. */
__attribute__((target("avx2"))) static inline int direct_probe8(const moat_literals *m, const int *filter, __m256i bytes, __m256i words_of,
                                                                const unsigned char *data, size_t len, size_t i, size_t s, hs_match_cb cb,
                                                                void *context) {
  const __m256i mul = _mm256_set1_epi32((int)0x9e3779b1u), low5 = _mm256_set1_epi32(31), one = _mm256_set1_epi32(1);
  __m256i h = _mm256_srli_epi32(_mm256_mullo_epi32(_mm256_shuffle_epi8(bytes, words_of), mul), 32 - DIRECT_FILTER_BITS);
  __m256i words = _mm256_i32gather_epi32(filter, _mm256_srli_epi32(h, 5), 4);
  __m256i bits = _mm256_and_si256(_mm256_srlv_epi32(words, _mm256_and_si256(h, low5)), one);
  unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(bits, one)));
  while (mask != 0) {
    size_t at = i + (size_t)__builtin_ctz(mask) * s;
    mask &= mask - 1;
    if (direct_at(m, data, len, at, load4(data + at, 0), cb, context)) return 1;
  }
  return 0;
}

/*
 * The filter probe of eight probed positions at once (AVX2, chosen at run time by cpuid):
 * i, i + s, …, i + 7s for the set's stride s, four from each of two 16-byte loads (at i and
 * i + 4s; a word j of a lane sits at its byte j·s), hashed with one multiply, their filter
 * bits gathered; the candidates go to direct_at in order, as the scalar loop sends them.
 * `*next`: the first position left to the scalar loop. No case folding.
 */
__attribute__((target("avx2"))) static int direct_scan_avx2(const moat_literals *m, const unsigned char *data, size_t len, hs_match_cb cb,
                                                             void *context, size_t *next) {
  const int *filter = (const int *)(const void *)m->direct->filter; /* little-endian: bit h is bit h % 32 of dword h / 32 */
  const size_t s = m->direct->stride;
  unsigned char order[32];
  for (unsigned b = 0; b < 32; b++) order[b] = (unsigned char)((b % 16) / 4 * s + b % 4 + (s == 1 ? b / 16 * 4 : 0));
  const __m256i words_of = _mm256_loadu_si256((const __m256i *)(const void *)order);
  size_t i = 0;
  if (s == 1) /* one load serves all eight */
    for (; i + 16 <= len; i += 8) {
      __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(data + i)));
      if (direct_probe8(m, filter, bytes, words_of, data, len, i, 1, cb, context)) return -3;
    }
  else
    for (; i + 4 * s + 16 <= len; i += 8 * s) {
      __m256i bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(data + i))),
                                              _mm_loadu_si128((const __m128i *)(const void *)(data + i + 4 * s)), 1);
      if (direct_probe8(m, filter, bytes, words_of, data, len, i, s, cb, context)) return -3;
    }
  *next = i;
  return HS_SUCCESS;
}

static int has_avx2(void) {
  static int known = -1;
  if (known < 0) known = __builtin_cpu_supports("avx2") ? 1 : 0;
  return known;
}
#endif

/* Every occurrence of every literal of a direct set, as hs_scan reports them (-3 when the callback stopped it). Eight
   positions per step with AVX2, or four per 8-byte load (little-endian, no case folding: a third less time than one
   load each), then the rest. */
static int direct_scan(const moat_literals *m, const unsigned char *data, size_t len, hs_match_cb cb, void *context) {
  const uint64_t *filter = m->direct->filter;
  size_t i = 0;
#ifdef DIRECT_AVX2
  if (!m->direct->fold && has_avx2() && direct_scan_avx2(m, data, len, cb, context, &i) != HS_SUCCESS) return -3;
#endif
  if (m->direct->stride > 1) {
    for (size_t step = m->direct->stride; i + 4 <= len; i += step) {
      uint32_t w = load4(data + i, m->direct->fold);
      DIRECT_PROBE(w, i);
    }
    return HS_SUCCESS;
  }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (!m->direct->fold)
    for (; i + 8 <= len; i += 4) {
      uint64_t x;
      memcpy(&x, data + i, 8);
      DIRECT_PROBE((uint32_t)x, i);
      DIRECT_PROBE((uint32_t)(x >> 8), i + 1);
      DIRECT_PROBE((uint32_t)(x >> 16), i + 2);
      DIRECT_PROBE((uint32_t)(x >> 24), i + 3);
    }
#endif
  for (; i + 4 <= len; i++) {
    uint32_t w = load4(data + i, m->direct->fold);
    DIRECT_PROBE(w, i);
  }
  return HS_SUCCESS;
}
#undef DIRECT_PROBE

moat_literals *moat_literals_direct(const char *const *patterns, const size_t *lengths, const int *caseless, unsigned count) {
  pthread_once(&hs_once, load);
  for (unsigned i = 0; i < count; i++)
    if (lengths[i] < 4) {
      snprintf(hs_error, sizeof hs_error, "a direct set needs literals of at least 4 bytes");
      return NULL;
    }
  moat_literals *m = calloc(1, sizeof *m);
  if (m != NULL) {
    m->skip = calloc(count == 0 ? 1 : count, sizeof *m->skip);
    m->length = calloc(count == 0 ? 1 : count, sizeof *m->length);
  }
  if (count == 0 || m == NULL || m->skip == NULL || m->length == NULL || (m->direct = direct_build(patterns, lengths, caseless, count)) == NULL) {
    if (m != NULL) {
      free(m->skip);
      free(m->length);
    }
    free(m);
    snprintf(hs_error, sizeof hs_error, count == 0 ? "no patterns" : "out of memory");
    return NULL;
  }
  memcpy(m->length, lengths, count * sizeof *lengths);
  m->count = count; /* match ids are checked against it before they index skip and length */
  return m;
}

/* The literal sets' one search: libhs, or the direct set's own. */
static int scan_literals(const moat_literals *m, const unsigned char *data, size_t len, hs_scratch_t *scratch, hs_match_cb cb, void *context) {
  if (m->direct != NULL) return direct_scan(m, data, len, cb, context);
  return hs.scan(m->db, (const char *)data, (unsigned int)len, 0, scratch, cb, context);
}

int moat_literals_scan(moat_literals *m, const unsigned char *data, size_t len, int32_t **pairs, size_t *count) {
  collector c = {.m = m, .data = data, .len = len};
  if (len > 0x7fffffffu) return -1;
  int rc = scan_literals(m, data, len, m->scratch, on_match, &c);
  if (c.failed || (rc != HS_SUCCESS && rc != -3 /* HS_SCAN_TERMINATED */)) {
    free(c.pairs);
    return -1;
  }
  *pairs = c.pairs;
  *count = c.n / (m->regex ? 3 : 2);
  return 0;
}

/* ---- The whole-file prefilter: which files can hold a finding at all ---- */

typedef struct {
  const moat_literals *m;
  const unsigned char *data;
  size_t len;
  const uint32_t *kept; /* joined index → raw offset, for junction-joined text; NULL otherwise */
  int hit;
} probe;

/* A literal of the set ends at `to`: in plain data, with its leading NULs present. */
static int on_literal(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *context) {
  (void)from;
  (void)flags;
  probe *p = context;
  /* A database that is not this set's: the file goes to the exact scan (a superset stays one). */
  if (id >= p->m->count || to > p->len) {
    p->hit = 1;
    return 1;
  }
  size_t length = p->m->length[id], skip = p->m->skip[id];
  if (p->kept != NULL) {
    /* Joined text: only a literal whose bytes were not contiguous in the raw text is new. */
    size_t span = length - skip;
    if (to < span) return 0;
    size_t first = p->kept[to - span], last = p->kept[to - 1];
    if (last - first + 1 == span) return 0;
    p->hit = 1;
    return 1;
  }
  if (to < length) return 0;
  size_t start = (size_t)to - length;
  for (size_t k = 0; k < skip; k++)
    if (p->data[start + k] != 0) return 0;
  p->hit = 1;
  return 1; /* one is enough: the file goes to the exact scan */
}

static int is_quote(unsigned char b) { return b == '\'' || b == '"' || b == '`'; }
/* JavaScript's \s over Latin-1 text: tab, LF, VT, FF, CR, space, U+00A0. */
static int is_space(unsigned char b) { return (b >= 9 && b <= 13) || b == ' ' || b == 0xa0; }

/* Length of the junction (['"`]\s*\+\s*['"`] | \$\{\s*['"`] | ['"`]\s*\}, first alternative first) at raw[i], or 0. */
static size_t junction_at(const unsigned char *raw, size_t n, size_t i) {
  if (is_quote(raw[i])) {
    size_t j = i + 1;
    while (j < n && is_space(raw[j])) j++;
    if (j < n && raw[j] == '+') {
      size_t k = j + 1;
      while (k < n && is_space(raw[k])) k++;
      if (k < n && is_quote(raw[k])) return k + 1 - i;
    }
    if (j < n && raw[j] == '}') return j + 1 - i;
    return 0;
  }
  if (raw[i] == '$' && i + 1 < n && raw[i + 1] == '{') {
    size_t j = i + 2;
    while (j < n && is_space(raw[j])) j++;
    if (j < n && is_quote(raw[j])) return j + 1 - i;
  }
  return 0;
}

typedef struct {
  size_t joined_cap, kept_cap;
  unsigned char *joined;
  uint32_t *kept;
} split_buffers;

typedef struct {
  const moat_literals *lits;
  hs_scratch_t *lit_scratch;
  const unsigned char *window;
  size_t window_len;
  size_t max_len;
  split_buffers *buffers;
  int hit;
  int failed;
} split_probe;

/* One split-literal window around a trigger [from, to): junctions removed, then the literals searched (§ engine.ts #scanSplit). */
static int on_trigger(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *context) {
  (void)id;
  (void)flags;
  split_probe *sp = context;
  size_t start = from > sp->max_len ? (size_t)from - sp->max_len : 0;
  size_t end = (size_t)to + sp->max_len < sp->window_len ? (size_t)to + sp->max_len : sp->window_len;
  const unsigned char *raw = sp->window + start;
  size_t n = end - start;
  split_buffers *b = sp->buffers;
  if (!reserve((void **)&b->joined, &b->joined_cap, n, 1, 4096) || !reserve((void **)&b->kept, &b->kept_cap, n, sizeof *b->kept, 4096)) {
    sp->failed = 1;
    return 1;
  }
  size_t out = 0;
  for (size_t i = 0; i < n;) {
    size_t j = junction_at(raw, n, i);
    if (j > 0) {
      i += j;
      continue;
    }
    b->joined[out] = raw[i];
    b->kept[out++] = (uint32_t)(start + i);
    i++;
  }
  if (out == 0) return 0;
  probe p = {sp->lits, b->joined, out, b->kept, 0};
  scan_literals(sp->lits, b->joined, out, sp->lit_scratch, on_literal, &p);
  if (p.hit) {
    sp->hit = 1;
    return 1;
  }
  return 0;
}

/*
 * The split-literal triggers of a window, as the trigger set (TRIGGER_SOURCES in moat-scan:
 * ['"`]\s*\+\s*['"`] and \$\{\s*['"`], leftmost start) would report them, found from each `+`
 * and `${` (memchr) instead of a libhs pass with start-of-match tracking, which costs as much
 * as the literal scan itself. Each match goes to on_trigger; nonzero when it stopped the search.
 */
static int find_triggers(const unsigned char *w, size_t n, split_probe *sp) {
  for (const unsigned char *at = memchr(w, '+', n); at != NULL; at = memchr(at + 1, '+', n - (size_t)(at + 1 - w))) {
    size_t p = (size_t)(at - w), j = p, k = p + 1;
    while (j > 0 && is_space(w[j - 1])) j--;
    while (k < n && is_space(w[k])) k++;
    if (j > 0 && is_quote(w[j - 1]) && k < n && is_quote(w[k]) && on_trigger(0, j - 1, k + 1, 0, sp) != 0) return 1;
  }
  for (const unsigned char *at = memchr(w, '$', n); at != NULL; at = memchr(at + 1, '$', n - (size_t)(at + 1 - w))) {
    size_t p = (size_t)(at - w), k = p + 2;
    if (k > n || w[p + 1] != '{') continue;
    while (k < n && is_space(w[k])) k++;
    if (k < n && is_quote(w[k]) && on_trigger(1, p, k + 1, 0, sp) != 0) return 1;
  }
  return 0;
}

/* Most audit matches kept per file; past it the JavaScript audit reads the whole file. */
#define MAX_AUDIT_EVENTS 65536

typedef struct {
  event_list *list;
  double window, base;
  int overflow;
} audit_events;

static int on_audit(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *context) {
  (void)to;
  (void)flags;
  audit_events *ev = context;
  event_list *l = ev->list;
  if (l->n + 3 > 3 * MAX_AUDIT_EVENTS) {
    ev->overflow = 1;
    return 1;
  }
  if (!reserve((void **)&l->items, &l->cap, l->n + 3, sizeof *l->items, 96)) {
    ev->overflow = 1;
    return 1;
  }
  l->items[l->n++] = ev->window;
  l->items[l->n++] = (double)id;
  l->items[l->n++] = ev->base + (double)from;
  return 0;
}

/*
 * A piece of work: chunks [k0, k1) of one file. A file of several chunks is cut into as many
 * pieces as there are threads, so one large executable keeps every core busy; each piece
 * maps only its own bytes and its windows' carries.
 */
typedef struct {
  size_t file;
  size_t k0, k1;
  int flags;
  int error;
  int failed;
  event_list events;
} piece;

typedef struct {
  const moat_prefilter *job;
  piece *pieces;
  size_t count;
  atomic_size_t next;
  atomic_int *file_hit; /* per file: a piece found a candidate, the others may stop */
} worker_args;

/*
 * Bytes the split-literal search reads before chunk k and after it (windowMargin in
 * moat-scan's engine.ts): the exact scan reads a window with as many, and reports a match in
 * the window where it ends, so a window is listed when a split literal may be found in them.
 * None where there are no triggers (plain forms only).
 */
static size_t split_margin(const moat_prefilter *job) { return job->triggers == NULL ? 0 : 2 * job->max_len + 128; }

/* The carry before chunk k's window: what the stream keeps of the window before, at most `limit` bytes. */
static size_t carry_at(size_t k, size_t chunk, size_t limit) {
  size_t carry = 0;
  for (size_t j = 1; j <= k; j++) {
    size_t len = chunk + carry;
    carry = len < limit ? len : limit;
  }
  return carry;
}

/* MOAT_SCAN_TIMING=1: the prefilter's passes timed, summed over its threads and printed to stderr (for profiling). */
enum { T_LITERALS, T_SPLIT, T_AUDIT, T_COUNT };
static _Atomic long long timing_ns[T_COUNT];
static atomic_int timing_on; /* the last run's setting; runs at once on several threads share the counters */

/* CPU time of the calling thread: a loaded machine's waits are not counted. */
static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define TIMED(slot, body)                                      \
  do {                                                         \
    long long t_ = timing_on ? now_ns() : 0;                   \
    body;                                                      \
    if (timing_on) atomic_fetch_add(&timing_ns[slot], now_ns() - t_); \
  } while (0)

/* Scans one piece; `file` points at the file's byte 0 (only the piece's bytes, with the carries before them, are there). */
static void prefilter_piece(const moat_prefilter *job, piece *u, const unsigned char *file, size_t size, hs_scratch_t *lit_scratch,
                            hs_scratch_t *audit_scratch, split_buffers *buffers, atomic_int *file_hit) {
  /* The windows the JavaScript stream scans: chunk k with the carry of the window before. */
  size_t carry = carry_at(u->k0, job->chunk, job->max_len);
  audit_events hits = {&u->events, 0, 0, 0};
  for (size_t k = u->k0; k < u->k1 && !atomic_load(file_hit); k++) {
    size_t chunk_start = k * job->chunk;
    size_t chunk_end = size - chunk_start > job->chunk ? chunk_start + job->chunk : size;
    const unsigned char *window = file + chunk_start - carry;
    size_t window_len = chunk_end - chunk_start + carry;
    probe p = {job->literals, window, window_len, NULL, 0};
    int rc;
    TIMED(T_LITERALS, rc = scan_literals(job->literals, window, window_len, lit_scratch, on_literal, &p));
    if (rc != HS_SUCCESS && rc != -3) u->failed = 1;
    int hit = p.hit ? MOAT_PREFILTER_CODENAME : 0;
    /* Also in a window with a codename: one without a split literal is read without the split-literal search. */
    if (job->triggers != NULL) {
      size_t margin = split_margin(job);
      size_t before = chunk_start < margin ? chunk_start : margin;
      size_t after = size - chunk_end < margin ? size - chunk_end : margin;
      const unsigned char *around = file + chunk_start - before;
      size_t around_len = before + (chunk_end - chunk_start) + after;
      split_probe sp = {job->literals, lit_scratch, around, around_len, job->max_len, buffers, 0, 0};
      TIMED(T_SPLIT, find_triggers(around, around_len, &sp));
      if (sp.failed) u->failed = 1;
      if (sp.hit) hit |= MOAT_PREFILTER_SPLIT;
    }
    if (u->failed) {
      atomic_store(file_hit, 1); /* a failed scan proves nothing: the whole file goes to the exact scan */
      return;
    }
    /* A window that may hold a finding is listed (MOAT_PREFILTER_WINDOW): the exact scan reads only those. */
    if (hit != 0) {
      u->flags |= hit;
      hits.window = (double)k;
      hits.base = (double)(chunk_start - carry);
      on_audit(MOAT_PREFILTER_WINDOW, 0, 0, 0, &hits);
      if (hit & MOAT_PREFILTER_SPLIT) on_audit(MOAT_PREFILTER_SPLIT_WINDOW, 0, 0, 0, &hits);
    }
    carry = window_len < job->max_len ? window_len : job->max_len;
  }
  if (hits.overflow) u->flags |= MOAT_PREFILTER_AUDIT_ALL;
  if (job->audit == NULL || atomic_load(file_hit)) return;
  /* The audit's windows carry fewer bytes; its `^` matches at each window's first byte, as
     the JavaScript audit's multiline expression does. Every match is kept, by window. */
  audit_events ev = {&u->events, 0, 0, hits.overflow};
  carry = carry_at(u->k0, job->chunk, job->audit_carry);
  for (size_t k = u->k0; !ev.overflow && k < u->k1; k++) {
    size_t chunk_start = k * job->chunk;
    size_t chunk_end = size - chunk_start > job->chunk ? chunk_start + job->chunk : size;
    size_t window_len = chunk_end - chunk_start + carry;
    ev.window = (double)k;
    ev.base = (double)(chunk_start - carry);
    int rc;
    TIMED(T_AUDIT, rc = hs.scan(job->audit->db, (const char *)(file + chunk_start - carry), (unsigned int)window_len, 0, audit_scratch,
                                on_audit, &ev));
    if (rc != HS_SUCCESS && rc != -3 && !ev.overflow) u->failed = 1;
    carry = window_len < job->audit_carry ? window_len : job->audit_carry;
  }
  if (u->events.n > 0) u->flags |= MOAT_PREFILTER_AUDIT;
  if (ev.overflow) u->flags |= MOAT_PREFILTER_AUDIT_ALL;
}

/* One thread's reusable buffer for the bytes of a run of chunks. */
typedef struct {
  unsigned char *bytes;
  size_t cap;
} read_buffer;

/* Bytes read per batch of chunks: a quarter of a megabyte, so the bytes pread copies are still in
   the core's cache when they are scanned (a megabyte a batch: 4 ms more of 35 over 114 MB, 2 cores). */
#define READ_BATCH (1u << 18)

/*
 * Scans one piece read with pread, a batch of whole chunks at a time (with the carries before
 * them) into the thread's buffer: on a virtual machine, mapping a file's pages costs the
 * kernel more than copying them into memory that is already mapped. 0, or the errno that
 * kept the piece unread (EAGAIN: the file changed size since it was listed).
 */
static int prefilter_read(const moat_prefilter *job, piece *u, int fd, size_t size, read_buffer *r, hs_scratch_t *lit_scratch,
                          hs_scratch_t *audit_scratch, split_buffers *buffers, atomic_int *file_hit) {
  size_t per = job->chunk >= READ_BATCH ? 1 : READ_BATCH / job->chunk;
  size_t margin = split_margin(job);
  size_t most_back = job->max_len > job->audit_carry ? job->max_len : job->audit_carry;
  if (margin > most_back) most_back = margin;
  for (size_t k = u->k0; k < u->k1 && !atomic_load(file_hit); k += per) {
    size_t k1 = u->k1 - k < per ? u->k1 : k + per;
    size_t back = carry_at(k, job->chunk, job->max_len), audit_back = carry_at(k, job->chunk, job->audit_carry);
    size_t split_back = k * job->chunk < margin ? k * job->chunk : margin;
    if (audit_back > back) back = audit_back;
    if (split_back > back) back = split_back;
    size_t first = k * job->chunk - back;
    /* With the split-literal search's bytes after the batch's last chunk. */
    size_t end = k1 * job->chunk + margin < size ? k1 * job->chunk + margin : size;
    size_t need = per * job->chunk + most_back + margin;
    if (!reserve((void **)&r->bytes, &r->cap, need, 1, need)) return ENOMEM;
    for (size_t got = 0; got < end - first;) {
      ssize_t n = pread(fd, r->bytes + got, end - first - got, (off_t)(first + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n < 0 ? errno : EAGAIN;
      got += (size_t)n;
    }
    /* The batch as a piece of its own, its findings and events the piece's. */
    piece batch = *u;
    batch.k0 = k;
    batch.k1 = k1;
    prefilter_piece(job, &batch, r->bytes - first, size, lit_scratch, audit_scratch, buffers, file_hit);
    u->flags |= batch.flags;
    u->failed |= batch.failed;
    u->events = batch.events;
  }
  return 0;
}

static void *prefilter_worker(void *arg) {
  worker_args *w = arg;
  const moat_prefilter *job = w->job;
  hs_scratch_t *lit_scratch = NULL, *audit_scratch = NULL;
  split_buffers buffers = {0, 0, NULL, NULL};
  int ready = (job->literals->direct != NULL || hs.clone_scratch(job->literals->scratch, &lit_scratch) == HS_SUCCESS) &&
              (job->audit == NULL || hs.clone_scratch(job->audit->scratch, &audit_scratch) == HS_SUCCESS);
  read_buffer reader = {NULL, 0};
  for (;;) {
    size_t i = atomic_fetch_add(&w->next, 1);
    if (i >= w->count) break;
    piece *u = &w->pieces[i];
    if (!ready) {
      u->error = ENOMEM;
      continue;
    }
    if (atomic_load(&w->file_hit[u->file])) continue;
    int fd = open(job->paths[u->file], O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t size = (size_t)job->sizes[u->file];
    if (fd < 0 || fstat(fd, &st) != 0 || (size_t)st.st_size != size) {
      /* Gone or changed since it was listed: the exact scan reads it and says what happened. */
      u->error = fd < 0 ? errno : EAGAIN;
      if (fd >= 0) close(fd);
      continue;
    }
    u->error = prefilter_read(job, u, fd, size, &reader, lit_scratch, audit_scratch, &buffers, &w->file_hit[u->file]);
    close(fd);
  }
  free(reader.bytes);
  free(buffers.joined);
  free(buffers.kept);
  if (lit_scratch != NULL) hs.free_scratch(lit_scratch);
  if (audit_scratch != NULL) hs.free_scratch(audit_scratch);
  return NULL;
}

int moat_prefilter_run(const moat_prefilter *job) {
  if (!hs_loaded || job->literals == NULL || job->chunk == 0 || job->chunk > 0x7fff0000u || job->max_len > 0x10000u) return -1;
  unsigned threads = job->threads == 0 ? 1 : job->threads > 64 ? 64 : job->threads;
  const char *timing = getenv("MOAT_SCAN_TIMING");
  atomic_store(&timing_on, timing != NULL && strcmp(timing, "1") == 0);
  for (int t = 0; t < T_COUNT; t++) atomic_store(&timing_ns[t], 0);
  /* The pieces: each file's chunks cut into up to `threads` runs of whole chunks. */
  size_t cap = 0, count = 0;
  piece *pieces = NULL;
  for (size_t i = 0; i < job->count; i++) {
    struct stat st;
    if (stat(job->paths[i], &st) != 0 || !S_ISREG(st.st_mode)) {
      job->errors[i] = errno != 0 ? errno : EINVAL;
      continue;
    }
    job->sizes[i] = (double)st.st_size;
    size_t chunks = ((size_t)st.st_size + job->chunk - 1) / job->chunk;
    size_t cuts = chunks < threads ? chunks : threads;
    for (size_t c = 0; c < cuts; c++) {
      if (!reserve((void **)&pieces, &cap, count + 1, sizeof *pieces, 64)) {
        free(pieces);
        return -1;
      }
      piece *u = &pieces[count++];
      memset(u, 0, sizeof *u);
      u->file = i;
      u->k0 = chunks * c / cuts;
      u->k1 = chunks * (c + 1) / cuts;
    }
  }
  atomic_int *file_hit = calloc(job->count == 0 ? 1 : job->count, sizeof *file_hit);
  if (file_hit == NULL) {
    free(pieces);
    return -1;
  }
  worker_args args = {job, pieces, count, 0, file_hit};
  if (threads > count) threads = count == 0 ? 1 : (unsigned)count;
  pthread_t ids[64];
  unsigned started = 0;
  for (unsigned t = 1; t < threads; t++)
    if (pthread_create(&ids[started], NULL, prefilter_worker, &args) == 0) started++;
  prefilter_worker(&args); /* this thread works too */
  for (unsigned t = 0; t < started; t++) pthread_join(ids[t], NULL);
  /* Per file, its pieces in chunk order: the first error; a candidate (a failed scan proves
     nothing, so it counts as one, with no windows listed: the whole file is read); the listed
     windows and the audit's matches, concatenated. */
  for (size_t a = 0; a < count;) {
    size_t i = pieces[a].file, b = a, total = 0;
    int flags = 0, failed = 0;
    for (; b < count && pieces[b].file == i; b++) {
      if (job->errors[i] == 0) job->errors[i] = pieces[b].error;
      failed |= pieces[b].failed;
      flags |= pieces[b].flags;
      total += pieces[b].events.n;
    }
    if (failed) flags = MOAT_PREFILTER_CODENAME;
    else if (total > 3 * (size_t)MAX_AUDIT_EVENTS) flags |= MOAT_PREFILTER_AUDIT_ALL;
    else if (total > 0 && (flags & MOAT_PREFILTER_AUDIT_ALL) == 0) {
      job->events[i].items = malloc(total * sizeof(double));
      if (job->events[i].items == NULL) flags |= MOAT_PREFILTER_AUDIT_ALL;
      else
        for (size_t c = a; c < b; c++) {
          if (pieces[c].events.n == 0) continue; /* its items may be NULL */
          memcpy(job->events[i].items + job->events[i].n, pieces[c].events.items, pieces[c].events.n * sizeof(double));
          job->events[i].n += pieces[c].events.n;
        }
    }
    job->flags[i] = (unsigned char)flags;
    for (size_t c = a; c < b; c++) free(pieces[c].events.items);
    a = b;
  }
  free(file_hit);
  free(pieces);
  if (timing_on)
    fprintf(stderr, "moat-scan prefilter on %u threads, CPU ms: literals %.1f, split literals %.1f, audit %.1f\n", threads,
            (double)atomic_load(&timing_ns[T_LITERALS]) / 1e6,
            (double)atomic_load(&timing_ns[T_SPLIT]) / 1e6, (double)atomic_load(&timing_ns[T_AUDIT]) / 1e6);
  return 0;
}

/* ---- Needle forms: every encoded form of every codename, derived in one pass ----
 * The same forms, in the same order and deduplicated the same way, as moat-scan's
 * needleForms (needles.ts), which stays the reference: deriving 22,000 forms there costs a
 * cold process a hundred milliseconds of string building and garbage collection, here well
 * under one. */

enum { FORM_PLAIN, FORM_UTF16LE, FORM_UTF16BE, FORM_HEX, FORM_BASE64, FORM_BASE64URL, FORM_ESCAPE_X, FORM_ESCAPE_U,
       FORM_ESCAPE_U_BRACE, FORM_PERCENT, FORM_CHARCODES };

typedef struct {
  moat_forms *out;
  size_t first; /* this codename's first form */
  uint32_t owner;
  int failed;
} form_sink;

static const char HEX_LOWER[] = "0123456789abcdef", HEX_UPPER[] = "0123456789ABCDEF";

/* Room for `extra` more bytes of forms and one more form; 0 when out of memory. */
static int forms_reserve(form_sink *s, size_t extra) {
  moat_forms *o = s->out;
  return reserve((void **)&o->bytes, &o->bytes_cap, o->bytes_len + extra, 1, 1 << 16) &&
         reserve((void **)&o->lengths, &o->lengths_cap, o->count + 1, sizeof *o->lengths, 1024) &&
         reserve((void **)&o->owners, &o->owners_cap, o->count + 1, sizeof *o->owners, 1024) &&
         reserve((void **)&o->kinds, &o->kinds_cap, o->count + 1, sizeof *o->kinds, 1024);
}

/* Keeps the form written at bytes[start..bytes_len) unless this codename has it already (same bytes, same folding). */
static void form_keep(form_sink *s, size_t start, int kind) {
  moat_forms *o = s->out;
  size_t len = o->bytes_len - start;
  int fold = kind & 0x80;
  /* Offsets of earlier forms: walk back from the last one. */
  for (size_t i = o->count, end = start; i > s->first; i--) {
    size_t n = o->lengths[i - 1];
    end -= n;
    if (n == len && (o->kinds[i - 1] & 0x80) == fold && memcmp(o->bytes + end, o->bytes + start, len) == 0) {
      o->bytes_len = start;
      return;
    }
  }
  o->lengths[o->count] = (uint32_t)len;
  o->owners[o->count] = s->owner;
  o->kinds[o->count] = (uint8_t)kind;
  o->count++;
}

/* UTF-8 bytes of UTF-16 units (a lone surrogate as U+FFFD, as Buffer.from(text, 'utf8')); returns the count. */
static size_t utf8_of(const uint16_t *u, size_t n, unsigned char *out) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = u[i];
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && u[i + 1] >= 0xdc00 && u[i + 1] <= 0xdfff)
      c = 0x10000 + ((c - 0xd800) << 10) + (u[++i] - 0xdc00);
    else if (c >= 0xd800 && c <= 0xdfff)
      c = 0xfffd;
    if (c < 0x80) out[k++] = (unsigned char)c;
    else if (c < 0x800) out[k++] = (unsigned char)(0xc0 | c >> 6), out[k++] = (unsigned char)(0x80 | (c & 0x3f));
    else if (c < 0x10000)
      out[k++] = (unsigned char)(0xe0 | c >> 12), out[k++] = (unsigned char)(0x80 | (c >> 6 & 0x3f)),
      out[k++] = (unsigned char)(0x80 | (c & 0x3f));
    else
      out[k++] = (unsigned char)(0xf0 | c >> 18), out[k++] = (unsigned char)(0x80 | (c >> 12 & 0x3f)),
      out[k++] = (unsigned char)(0x80 | (c >> 6 & 0x3f)), out[k++] = (unsigned char)(0x80 | (c & 0x3f));
  }
  return k;
}

/* `v` in hex digits, without leading zeros (at least one digit), as Number.prototype.toString(16). */
static size_t hex_digits(uint32_t v, const char *digits, unsigned char *out) {
  char tmp[8];
  size_t n = 0;
  do tmp[n++] = digits[v & 15], v >>= 4;
  while (v != 0);
  for (size_t i = 0; i < n; i++) out[i] = (unsigned char)tmp[n - 1 - i];
  return n;
}

static size_t dec_digits(uint32_t v, unsigned char *out) {
  char tmp[12];
  size_t n = 0;
  do tmp[n++] = (char)('0' + v % 10), v /= 10;
  while (v != 0);
  for (size_t i = 0; i < n; i++) out[i] = (unsigned char)tmp[n - 1 - i];
  return n;
}

/* Writes one form with `write` into the sink and keeps it; `bound`: the most bytes it can take. */
#define FORM(s, bound, kind, ...)                                   \
  do {                                                              \
    if (!forms_reserve((s), (bound))) {                             \
      (s)->failed = 1;                                              \
      return;                                                       \
    }                                                               \
    size_t start_ = (s)->out->bytes_len;                            \
    unsigned char *w_ = (s)->out->bytes + start_;                   \
    size_t n_ = 0;                                                  \
    __VA_ARGS__;                                                    \
    (s)->out->bytes_len = start_ + n_;                              \
    form_keep((s), start_, (kind));                                 \
  } while (0)
#define PUT(c) (w_[n_++] = (unsigned char)(c))

/* base64 of k zero bytes then `b`: the characters that do not depend on the bytes around (base64Cores). */
static void base64_forms(form_sink *s, const unsigned char *b, size_t len) {
  static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t k = 0; k < 3; k++) {
    size_t first = (8 * k + 5) / 6, last = 8 * (k + len) / 6;
    if (last < first + 8) continue;
    for (int url = 0; url < 2; url++)
      FORM(s, last - first, url ? FORM_BASE64URL : FORM_BASE64, {
        for (size_t c = first; c < last; c++) {
          /* Character c covers bits [6c, 6c + 6) of the padded bytes. */
          size_t bit = 6 * c, byte = bit / 8;
          unsigned hi = byte >= k ? b[byte - k] : 0, lo = byte + 1 >= k && byte + 1 - k < len ? b[byte + 1 - k] : 0;
          unsigned v = ((hi << 8 | lo) >> (10 - bit % 8)) & 63;
          char ch = ALPHABET[v];
          PUT(url && ch == '+' ? '-' : url && ch == '/' ? '_' : ch);
        }
      });
  }
}

/* The encoded forms of one spelling (encodedForms in needles.ts), in its order. */
static void encoded_forms(form_sink *s, const uint16_t *u, size_t n, unsigned char *utf8) {
  size_t len = utf8_of(u, n, utf8);
  for (int up = 0; up < 2; up++)
    FORM(s, 2 * len, FORM_HEX, for (size_t i = 0; i < len; i++) PUT((up ? HEX_UPPER : HEX_LOWER)[utf8[i] >> 4]),
         PUT((up ? HEX_UPPER : HEX_LOWER)[utf8[i] & 15]));
  base64_forms(s, utf8, len);
  for (int up = 0; up < 2; up++)
    FORM(s, 4 * len, FORM_ESCAPE_X, for (size_t i = 0; i < len; i++) PUT('\\'), PUT('x'),
         PUT((up ? HEX_UPPER : HEX_LOWER)[utf8[i] >> 4]), PUT((up ? HEX_UPPER : HEX_LOWER)[utf8[i] & 15]));
  /* JavaScript escapes by code unit (\xHH up to 0xff, else \uHHHH); bundlers printing ASCII only escape just the rest. */
  int ascii = 1;
  for (size_t i = 0; i < n; i++) ascii &= u[i] < 0x80;
  if (!ascii)
    for (int up = 0; up < 2; up++)
      for (int keep = 0; keep < 2; keep++)
        FORM(s, 6 * n, FORM_ESCAPE_X, {
          const char *d = up ? HEX_UPPER : HEX_LOWER;
          for (size_t i = 0; i < n; i++) {
            uint32_t c = u[i];
            if (keep && c < 0x80) PUT(c);
            else if (c <= 0xff) PUT('\\'), PUT('x'), PUT(d[c >> 4]), PUT(d[c & 15]);
            else PUT('\\'), PUT('u'), PUT(d[c >> 12]), PUT(d[c >> 8 & 15]), PUT(d[c >> 4 & 15]), PUT(d[c & 15]);
          }
        });
  for (int up = 0; up < 2; up++)
    FORM(s, 6 * n, FORM_ESCAPE_U, {
      const char *d = up ? HEX_UPPER : HEX_LOWER;
      for (size_t i = 0; i < n; i++) PUT('\\'), PUT('u'), PUT(d[u[i] >> 12]), PUT(d[u[i] >> 8 & 15]), PUT(d[u[i] >> 4 & 15]), PUT(d[u[i] & 15]);
    });
  for (int up = 0; up < 2; up++)
    FORM(s, 10 * n, FORM_ESCAPE_U_BRACE, {
      /* By code point, as Array.from(text): a lone surrogate is one of its own. */
      for (size_t i = 0; i < n; i++) {
        uint32_t c = u[i];
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && u[i + 1] >= 0xdc00 && u[i + 1] <= 0xdfff)
          c = 0x10000 + ((c - 0xd800) << 10) + (u[++i] - 0xdc00);
        PUT('\\'), PUT('u'), PUT('{');
        n_ += hex_digits(c, up ? HEX_UPPER : HEX_LOWER, w_ + n_);
        PUT('}');
      }
    });
  for (int up = 1; up >= 0; up--)
    FORM(s, 3 * len, FORM_PERCENT, for (size_t i = 0; i < len; i++) PUT('%'), PUT((up ? HEX_UPPER : HEX_LOWER)[utf8[i] >> 4]),
         PUT((up ? HEX_UPPER : HEX_LOWER)[utf8[i] & 15]));
  for (int spaced = 0; spaced < 2; spaced++)
    for (int style = 0; style < 3; style++) /* decimal, 0x lowercase, 0x uppercase */
      FORM(s, 8 * n, FORM_CHARCODES, {
        for (size_t i = 0; i < n; i++) {
          if (i > 0) {
            PUT(',');
            if (spaced) PUT(' ');
          }
          if (style == 0) n_ += dec_digits(u[i], w_ + n_);
          else PUT('0'), PUT('x'), n_ += hex_digits(u[i], style == 1 ? HEX_LOWER : HEX_UPPER, w_ + n_);
        }
      });
}

/* Every form of one codename: `spellings` UTF-16 strings, the codename first, then the other spellings whose encoded forms count. */
static void codename_forms(form_sink *s, const uint16_t *const *spelling, const uint32_t *lengths, size_t spellings, int flags,
                           unsigned char *utf8) {
  const uint16_t *u = spelling[0];
  size_t n = lengths[0];
  int fold = flags & MOAT_FORMS_FOLD ? 0x80 : 0;
  FORM(s, 3 * n, FORM_PLAIN | fold, n_ = utf8_of(u, n, w_));
  if (flags & MOAT_FORMS_PLAIN_ONLY) return;
  FORM(s, 2 * n, FORM_UTF16LE | fold, for (size_t i = 0; i < n; i++) PUT(u[i] & 0xff), PUT(u[i] >> 8));
  FORM(s, 2 * n, FORM_UTF16BE | fold, for (size_t i = 0; i < n; i++) PUT(u[i] >> 8), PUT(u[i] & 0xff));
  for (size_t v = 0; v < spellings && !s->failed; v++) encoded_forms(s, spelling[v], lengths[v], utf8);
}
#undef PUT
#undef FORM

int moat_needle_forms(const uint16_t *units, size_t units_len, const uint32_t *lengths, size_t strings, const uint32_t *spellings, size_t codenames, int flags,
                      moat_forms *out) {
  memset(out, 0, sizeof *out);
  size_t longest = 0, used = 0, total = 0;
  for (size_t i = 0; i < strings; i++) {
    if (lengths[i] == 0 || lengths[i] > 0x10000) return -1;
    if (lengths[i] > longest) longest = lengths[i];
    total += lengths[i];
  }
  for (size_t c = 0; c < codenames; c++) {
    if (spellings[c] == 0 || spellings[c] > 8 || spellings[c] > strings - used) return -1;
    used += spellings[c];
  }
  if (used != strings || total != units_len) return -1;
  unsigned char *utf8 = malloc(3 * longest + 1);
  if (utf8 == NULL) return -1;
  form_sink s = {out, 0, 0, 0};
  const uint16_t *at = units;
  const uint32_t *len = lengths;
  for (size_t c = 0; c < codenames && !s.failed; c++) {
    const uint16_t *spelling[8];
    for (uint32_t v = 0; v < spellings[c]; v++) spelling[v] = at, at += len[v];
    s.first = out->count;
    s.owner = (uint32_t)c;
    codename_forms(&s, spelling, len, spellings[c], flags, utf8);
    len += spellings[c];
  }
  free(utf8);
  if (s.failed) {
    moat_forms_free(out);
    return -1;
  }
  return 0;
}

void moat_forms_free(moat_forms *f) {
  free(f->bytes);
  free(f->lengths);
  free(f->owners);
  free(f->kinds);
  memset(f, 0, sizeof *f);
}

/* The sources' order: longest first, then first derived first (a stable sort by length, as moat-scan's). */
typedef struct {
  uint32_t len, id;
} sized_id;
static int by_length_then_first(const void *a, const void *b) {
  const sized_id *x = a, *y = b;
  if (x->len != y->len) return x->len > y->len ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

static uint64_t bytes_hash(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

int moat_forms_plan(const moat_forms *f, moat_plan *out) {
  memset(out, 0, sizeof *out);
  size_t n = f->count, regex = 0, exact_bytes = 0;
  uint32_t *at = malloc((n + 1) * sizeof *at);
  uint32_t *source_of = malloc((n + 1) * sizeof *source_of); /* per regex form: its unique source's id */
  uint32_t *first = malloc((n + 1) * sizeof *first);         /* per unique source: the form it first came from */
  uint32_t *first_len = malloc((n + 1) * sizeof *first_len);
  sized_id *order = malloc((n + 1) * sizeof *order);
  uint32_t *rank = malloc((n + 1) * sizeof *rank);
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  uint32_t *slots = malloc(cap * sizeof *slots); /* unique source id + 1, 0: empty */
  int ok = at != NULL && source_of != NULL && first != NULL && first_len != NULL && order != NULL && rank != NULL && slots != NULL;
  size_t unique = 0;
  if (ok) {
    memset(slots, 0, cap * sizeof *slots);
    out->max_length = 1;
    for (size_t k = 0, off = 0; k < n; off += f->lengths[k], k++) {
      at[k] = (uint32_t)off;
      if (f->lengths[k] > out->max_length) out->max_length = f->lengths[k];
      if ((f->kinds[k] & 0x7f) != FORM_PLAIN && (f->kinds[k] & 0x80) == 0) {
        exact_bytes += f->lengths[k];
        continue;
      }
      const unsigned char *p = f->bytes + off;
      size_t i = (size_t)bytes_hash(p, f->lengths[k]) & (cap - 1);
      for (; slots[i] != 0; i = (i + 1) & (cap - 1)) {
        uint32_t s = slots[i] - 1;
        if (first_len[s] == f->lengths[k] && memcmp(f->bytes + at[first[s]], p, f->lengths[k]) == 0) break;
      }
      if (slots[i] == 0) {
        first[unique] = (uint32_t)k;
        first_len[unique] = f->lengths[k];
        slots[i] = (uint32_t)++unique;
      }
      source_of[regex++] = slots[i] - 1;
    }
    for (uint32_t s = 0; s < unique; s++) order[s] = (sized_id){first_len[s], s};
    qsort(order, unique, sizeof *order, by_length_then_first);
    for (uint32_t r = 0; r < unique; r++) rank[order[r].id] = r;
    size_t source_bytes = 0;
    for (size_t s = 0; s < unique; s++) source_bytes += first_len[s];
    out->count = unique + (n - regex);
    out->sources = unique;
    out->regex_count = regex;
    out->bytes = malloc(source_bytes + exact_bytes + 1);
    out->lengths = malloc((out->count + 1) * sizeof *out->lengths);
    out->offsets = malloc((out->count + 1) * sizeof *out->offsets);
    out->owners = malloc((out->count + 1) * sizeof *out->owners);
    out->kinds = malloc(out->count + 1);
    out->regex = malloc((3 * regex + 1) * sizeof *out->regex);
    ok = out->bytes != NULL && out->lengths != NULL && out->offsets != NULL && out->owners != NULL && out->kinds != NULL && out->regex != NULL;
  }
  if (ok) {
    size_t e = 0, pos = 0, r = 0;
    for (size_t s = 0; s < unique; s++, e++) {
      uint32_t k = first[order[s].id];
      memcpy(out->bytes + pos, f->bytes + at[k], f->lengths[k]);
      out->lengths[e] = f->lengths[k], out->offsets[e] = (uint32_t)pos, out->owners[e] = f->owners[k], out->kinds[e] = f->kinds[k];
      pos += f->lengths[k];
    }
    for (size_t k = 0; k < n; k++) {
      if ((f->kinds[k] & 0x7f) == FORM_PLAIN || (f->kinds[k] & 0x80) != 0) {
        out->regex[3 * r] = rank[source_of[r]], out->regex[3 * r + 1] = f->owners[k], out->regex[3 * r + 2] = f->kinds[k];
        r++;
        continue;
      }
      memcpy(out->bytes + pos, f->bytes + at[k], f->lengths[k]);
      out->lengths[e] = f->lengths[k], out->offsets[e] = (uint32_t)pos, out->owners[e] = f->owners[k], out->kinds[e] = f->kinds[k];
      pos += f->lengths[k];
      e++;
    }
    out->bytes_len = pos;
  }
  free(at);
  free(source_of);
  free(first);
  free(first_len);
  free(order);
  free(rank);
  free(slots);
  if (!ok) {
    moat_plan_free(out);
    return -1;
  }
  return 0;
}

void moat_plan_free(moat_plan *p) {
  free(p->bytes);
  free(p->lengths);
  free(p->offsets);
  free(p->owners);
  free(p->kinds);
  free(p->regex);
  memset(p, 0, sizeof *p);
}
