#include "harden.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef __APPLE__
#include <sys/ptrace.h>
#include <sys/types.h>
#endif

int moat_set_undumpable(void) {
#ifdef __linux__
  return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : errno;
#elif defined(__APPLE__)
  /* The macOS equivalent: deny debugger attachment to this process. */
  return ptrace(PT_DENY_ATTACH, 0, 0, 0) == 0 ? 0 : errno;
#else
  return ENOSYS;
#endif
}

int moat_get_dumpable(void) {
#ifdef __linux__
  int r = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  return r >= 0 ? r : -errno;
#else
  return -ENOSYS;
#endif
}

void *moat_secure_alloc(size_t size, int *locked, int *dontdump) {
  long page = sysconf(_SC_PAGESIZE);
  size_t len = ((size + (size_t)page - 1) / (size_t)page) * (size_t)page;
  if (len == 0) len = (size_t)page;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  *locked = mlock(p, len) == 0;
#ifdef MADV_DONTDUMP
  *dontdump = madvise(p, len, MADV_DONTDUMP) == 0;
#else
  *dontdump = 0;
#endif
  return p;
}

void moat_secure_free(void *p, size_t size) {
  if (p == NULL) return;
  long page = sysconf(_SC_PAGESIZE);
  size_t len = ((size + (size_t)page - 1) / (size_t)page) * (size_t)page;
  if (len == 0) len = (size_t)page;
  volatile unsigned char *v = p;
  for (size_t i = 0; i < len; i++) v[i] = 0;
  munlock(p, len);
  munmap(p, len);
}

long moat_scrub_env_block(const char *name) {
#ifdef __linux__
  /* Fields 50 and 51 of /proc/self/stat: where the original environment block lives. */
  FILE *f = fopen("/proc/self/stat", "r");
  if (f == NULL) return -errno;
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* skip the command name, which may hold spaces */
  if (p == NULL) return -EINVAL;
  unsigned long env_start = 0, env_end = 0;
  int field = 2;
  for (char *tok = strtok(p + 1, " "); tok != NULL; tok = strtok(NULL, " ")) {
    field++;
    if (field == 50) env_start = strtoul(tok, NULL, 10);
    if (field == 51) {
      env_end = strtoul(tok, NULL, 10);
      break;
    }
  }
  if (env_start == 0 || env_end <= env_start) return -EINVAL;
  size_t name_len = strlen(name);
  long wiped = 0;
  char *s = (char *)env_start;
  char *end = (char *)env_end;
  while (s < end) {
    size_t len = strnlen(s, (size_t)(end - s));
    if (len > name_len && strncmp(s, name, name_len) == 0 && s[name_len] == '=') {
      memset(s + name_len + 1, 0, len - name_len - 1);
      wiped += (long)(len - name_len - 1);
    }
    s += len + 1;
  }
  return wiped;
#else
  (void)name;
  return -ENOSYS;
#endif
}
