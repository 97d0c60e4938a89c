// The tracking allocator: an OrtAllocator the shim registers on the
// environment (OrtApi::RegisterAllocator) so that sessions created with
// the configuration entry session.use_env_allocators=1 allocate CPU memory
// through it, prepacked weights included. While a recording is active every
// allocation is listed with the recording's tag, so the caller can find the
// buffers ORT made while it created a session.
//
// Every block carries a 64-byte header in front of the pointer handed to
// ORT (so the pointer stays 64-byte aligned) holding the index of its
// record, or -1 when it is not tracked. Untracked blocks (all of them
// outside recordings) are allocated and freed without taking the lock.
//
// A record can be pinned: a pinned block that ORT frees is not returned to
// the C heap until the caller unpins it, so memory the caller still reads
// or writes (a prepacked weight it patches) can never be reused by anyone
// else, even if ORT let go of it early.
//
// A registered allocator replaces ORT's own arena for the sessions that use
// it, so the blocks ORT allocates and frees on every Run (activations,
// workspaces) would each cost a malloc and free, and those above glibc's
// mmap threshold an mmap, page faults on first touch and an munmap, every
// Run: 1.36x the Run time of a plain session on a small transformer at
// batch 16. So untracked Alloc blocks of at least CACHE_MIN bytes are
// rounded up to a size class (2^k, 1.25, 1.5 or 1.75 times 2^k: at most
// 25 % larger) and, when freed, kept on a free list of their class for the
// next allocation of that class, up to CACHE_MAX bytes in all (beyond, they
// go back to the C heap), as an arena keeps them. Reserve blocks (prepacked
// weights, allocated once) and tracked blocks are never cached.
// shim_tracking_trim returns the cached blocks to the C heap (or unmaps
// them, see below).
//
// Blocks of at least HUGE_MIN bytes (prepacked weights above all) are
// mapped by the allocator itself, starting on a 2 MiB boundary and advised
// MADV_HUGEPAGE, so that with transparent huge pages "always" or "madvise"
// the kernel backs them with 2 MiB pages when ORT first writes them: a
// SHiRA switch touches a few cache lines on every 4 KiB page of a weight,
// and with huge pages it needs 512 times fewer TLB entries. Measured in one
// process against the same weights in 4 KiB pages (Zen 4, packed sessions,
// medians of paired ratios): switches 3-5 % faster at d=1024-4096, 0-3 %
// at d=8192; Runs 2-8 % faster. See huge_alloc; shim_tracking_huge turns
// it off.

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api_index.h"
#include "shim.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__linux__) && defined(MADV_HUGEPAGE)
#define TRACK_HUGE 1
#else
#define TRACK_HUGE 0
#endif

// The OrtAllocator ABI up to Reserve (OrtAllocator version 18). ORT reads
// later members (GetStats, AllocOnStream, ...) only from allocators that
// declare a later version.
typedef struct track_allocator {
  uint32_t version;
  void *(*Alloc)(struct track_allocator *self, size_t size);
  void (*Free)(struct track_allocator *self, void *p);
  const OrtMemoryInfo *(*Info)(const struct track_allocator *self);
  void *(*Reserve)(struct track_allocator *self, size_t size);
} track_allocator;

enum { HDR = 64, TRACK_ALLOCATOR_VERSION = 18 };
static const uint64_t MAGIC = 0x7368697261616c63ULL;  // "shiraalc"

typedef struct header {
  uint64_t magic;
  int64_t rec;          // record index, -1 when untracked
  size_t cls;           // size class + 1 of a cacheable block, 0 otherwise
  struct header *next;  // in its class's free list while cached
  size_t mapped;        // length of its own mapping (huge_alloc), 0 if malloc'd
} header;

_Static_assert(sizeof(header) <= HDR, "header larger than HDR");

// Huge page backed blocks. HUGE_MIN is 2 MiB, one huge page: a smaller
// block cannot hold an aligned huge page unless its memory is padded to
// one (up to twice its size), and it would save at most one TLB entry.
// From 2 MiB on the mapping starts on a huge page boundary, so at least
// its first 2 MiB are one huge page; it is rounded to 4 KiB pages only
// (the tail beyond the last whole huge page stays in 4 KiB pages), so it
// costs no more memory than glibc's own mmap of the block would, and like
// that one it goes back to the operating system when freed.
enum { HUGE_MIN = 2 << 20, HUGE_PAGE = 2 << 20, SMALL_PAGE = 4 << 10 };
static int huge_on = 1;  // shim_tracking_huge; read atomically

int shim_tracking_huge(int on) { return __atomic_exchange_n(&huge_on, on != 0, __ATOMIC_ACQ_REL); }

// huge_alloc maps a block of bytes (>= HUGE_MIN; HDR more for the header)
// on a HUGE_PAGE boundary, advises MADV_HUGEPAGE and returns its header
// with mapped set; NULL for smaller blocks or if mmap fails (the caller
// then uses posix_memalign).
static header *huge_alloc(size_t bytes) {
#if TRACK_HUGE
  if (bytes < HUGE_MIN || bytes > SIZE_MAX - 2 * HUGE_PAGE - HDR) return NULL;
  if (!__atomic_load_n(&huge_on, __ATOMIC_ACQUIRE)) return NULL;
  size_t n = HDR + bytes;
  size_t len = (n + SMALL_PAGE - 1) & ~(size_t)(SMALL_PAGE - 1);
  // over-map by a huge page less a small one, then unmap head and tail
  size_t over = len + HUGE_PAGE - SMALL_PAGE;
  char *raw = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  size_t head = (HUGE_PAGE - (uintptr_t)raw % HUGE_PAGE) % HUGE_PAGE;
  if (head > 0) munmap(raw, head);
  if (over - head > len) munmap(raw + head + len, over - head - len);
  char *p = raw + head;
  (void)madvise(p, len, MADV_HUGEPAGE);  // best effort: 4 KiB pages work too
  header *h = (header *)p;
  h->mapped = len;
  return h;
#else
  (void)bytes;
  return NULL;
#endif
}

// release_block returns block h to the operating system or the C heap,
// whichever it came from.
static void release_block(header *h) {
  h->magic = 0;
#if TRACK_HUGE
  if (h->mapped > 0) {
    munmap(h, h->mapped);
    return;
  }
#endif
  free(h);
}

// The block cache (see the top of the file).
enum { CACHE_MIN = 64 << 10, NCLASS = 4 * 48 };
static const size_t CACHE_MAX = (size_t)512 << 20;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static header *cache[NCLASS];
static size_t cached_bytes;

// class_of returns the size class of size (>= CACHE_MIN) and its byte
// size, or -1 beyond the largest class.
static int class_of(size_t size, size_t *bytes) {
  int k = 63 - __builtin_clzll((unsigned long long)size);  // 2^k <= size
  size_t base = (size_t)1 << k;
  for (int q = 0; q < 4; q++) {
    size_t b = base + (base / 4) * q;
    if (b >= size) {
      int c = 4 * k + q;
      if (c >= NCLASS) return -1;
      *bytes = b;
      return c;
    }
  }
  if (k + 1 >= NCLASS / 4) return -1;
  *bytes = base * 2;
  return 4 * (k + 1);
}

// cache_get returns a cached block of class c, or NULL.
static header *cache_get(int c, size_t bytes) {
  pthread_mutex_lock(&cache_mu);
  header *h = cache[c];
  if (h != NULL) {
    cache[c] = h->next;
    cached_bytes -= bytes;
  }
  pthread_mutex_unlock(&cache_mu);
  return h;
}

// cache_put keeps block h of class c for reuse; it reports whether it did.
static int cache_put(header *h, int c, size_t bytes) {
  int kept = 0;
  pthread_mutex_lock(&cache_mu);
  if (cached_bytes + bytes <= CACHE_MAX) {
    h->next = cache[c];
    cache[c] = h;
    cached_bytes += bytes;
    kept = 1;
  }
  pthread_mutex_unlock(&cache_mu);
  return kept;
}

void shim_tracking_trim(void) {
  pthread_mutex_lock(&cache_mu);
  for (int c = 0; c < NCLASS; c++) {
    while (cache[c] != NULL) {
      header *h = cache[c];
      cache[c] = h->next;
      release_block(h);
    }
  }
  cached_bytes = 0;
  pthread_mutex_unlock(&cache_mu);
}

size_t shim_tracking_cached(void) {
  pthread_mutex_lock(&cache_mu);
  size_t n = cached_bytes;
  pthread_mutex_unlock(&cache_mu);
  return n;
}

typedef struct {
  char *data;  // the pointer handed to ORT
  size_t size;
  uint64_t tag;  // the recording that saw it
  uint8_t used, pinned, freed, reserve;
} record;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static record *recs;
static int64_t nrecs, caprecs;
static int64_t *free_slots;  // indices of unused records (a stack)
static int64_t nfree, capfree;
static int recording;  // read without the lock first (atomic), then under it
static uint64_t cur_tag;
static uint64_t next_tag;

static OrtMemoryInfo *track_info;
static track_allocator allocator;
static int registered;

static header *hdr_of(void *p) { return (header *)((char *)p - HDR); }

// new_record returns a free record index, or -1 when out of memory. Under mu.
static int64_t new_record(void) {
  if (nfree > 0) return free_slots[--nfree];
  if (nrecs == caprecs) {
    int64_t cap = caprecs ? caprecs * 2 : 256;
    record *r = realloc(recs, (size_t)cap * sizeof *r);
    if (r == NULL) return -1;
    recs = r;
    caprecs = cap;
  }
  return nrecs++;
}

// drop_record puts record i back on the free stack. Under mu.
static void drop_record(int64_t i) {
  memset(&recs[i], 0, sizeof recs[i]);
  if (nfree == capfree) {
    int64_t cap = capfree ? capfree * 2 : 256;
    int64_t *f = realloc(free_slots, (size_t)cap * sizeof *f);
    if (f == NULL) return;  // the slot leaks; harmless
    free_slots = f;
    capfree = cap;
  }
  free_slots[nfree++] = i;
}

static void *track_alloc_impl(size_t size, uint8_t reserve) {
  if (size == 0) return NULL;
  if (size > SIZE_MAX - HDR) return NULL;
  int rec = __atomic_load_n(&recording, __ATOMIC_ACQUIRE);
  int c = -1;
  size_t bytes = size;
  if (!reserve && !rec && size >= CACHE_MIN) c = class_of(size, &bytes);
  header *h = c >= 0 ? cache_get(c, bytes) : NULL;
  if (h == NULL) h = huge_alloc(bytes);
  if (h == NULL) {
    void *base = NULL;
    if (posix_memalign(&base, HDR, HDR + bytes) != 0) return NULL;
    h = base;
    h->mapped = 0;
  }
  h->magic = MAGIC;
  h->rec = -1;
  h->cls = (size_t)(c + 1);
  h->next = NULL;
  char *p = (char *)h + HDR;
  if (rec) {
    pthread_mutex_lock(&mu);
    if (recording) {
      int64_t i = new_record();
      if (i >= 0) {
        recs[i] = (record){.data = p, .size = size, .tag = cur_tag, .used = 1, .reserve = reserve};
        h->rec = i;
      }
    }
    pthread_mutex_unlock(&mu);
  }
  return p;
}

static void *track_alloc(track_allocator *self, size_t size) {
  (void)self;
  return track_alloc_impl(size, 0);
}

static void *track_reserve(track_allocator *self, size_t size) {
  (void)self;
  return track_alloc_impl(size, 1);
}

static void track_free(track_allocator *self, void *p) {
  (void)self;
  if (p == NULL) return;
  header *h = hdr_of(p);
  if (__atomic_load_n(&h->rec, __ATOMIC_ACQUIRE) >= 0) {
    pthread_mutex_lock(&mu);
    int64_t i = h->rec;
    if (i >= 0) {
      if (recs[i].pinned) {  // the caller still uses it: free at unpin
        recs[i].freed = 1;
        pthread_mutex_unlock(&mu);
        return;
      }
      drop_record(i);
      h->rec = -1;
    }
    pthread_mutex_unlock(&mu);
  }
  if (h->cls > 0) {
    int c = (int)h->cls - 1;
    size_t bytes = ((size_t)1 << (c / 4)) + (((size_t)1 << (c / 4)) / 4) * (size_t)(c % 4);
    if (cache_put(h, c, bytes)) return;
  }
  release_block(h);
}

static const OrtMemoryInfo *track_info_fn(const track_allocator *self) {
  (void)self;
  return track_info;
}

typedef OrtStatus *(*st_create_cpu_info2)(int, int, OrtMemoryInfo **);
typedef OrtStatus *(*st_register_alloc)(OrtEnv *, void *);
typedef const char *(*st_error_message2)(const OrtStatus *);
typedef void (*st_release2)(void *);

char *track_register(void *const *api_slots, OrtEnv *env) {
  pthread_mutex_lock(&mu);
  if (registered) {
    pthread_mutex_unlock(&mu);
    return NULL;
  }
  OrtMemoryInfo *info = NULL;
  OrtStatus *st = ((st_create_cpu_info2)api_slots[SHIM_IDX_CreateCpuMemoryInfo])(SHIM_OrtDeviceAllocator,
                                                                              SHIM_OrtMemTypeDefault, &info);
  if (st == NULL) {
    track_info = info;
    allocator = (track_allocator){.version = TRACK_ALLOCATOR_VERSION,
                                  .Alloc = track_alloc,
                                  .Free = track_free,
                                  .Info = track_info_fn,
                                  .Reserve = track_reserve};
    st = ((st_register_alloc)api_slots[SHIM_IDX_RegisterAllocator])(env, &allocator);
    if (st != NULL) {
      ((st_release2)api_slots[SHIM_IDX_ReleaseMemoryInfo])(info);
      track_info = NULL;
    }
  }
  if (st != NULL) {
    const char *m = ((st_error_message2)api_slots[SHIM_IDX_GetErrorMessage])(st);
    char *msg = strdup(m ? m : "unknown error");
    ((st_release2)api_slots[SHIM_IDX_ReleaseStatus])(st);
    pthread_mutex_unlock(&mu);
    return msg;
  }
  // Registered for the life of the process: sessions created with it may
  // outlive any point at which unregistering would be safe.
  registered = 1;
  pthread_mutex_unlock(&mu);
  return NULL;
}

uint64_t shim_tracking_start(void) {
  pthread_mutex_lock(&mu);
  cur_tag = ++next_tag;
  __atomic_store_n(&recording, 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&mu);
  return cur_tag;
}

size_t shim_tracking_stop(uint64_t tag) {
  size_t n = 0;
  pthread_mutex_lock(&mu);
  __atomic_store_n(&recording, 0, __ATOMIC_RELEASE);
  for (int64_t i = 0; i < nrecs; i++) {
    if (recs[i].used && recs[i].tag == tag) {
      recs[i].pinned = 1;
      n++;
    }
  }
  pthread_mutex_unlock(&mu);
  return n;
}

size_t shim_tracking_list(uint64_t tag, shim_block *out, size_t cap) {
  size_t n = 0;
  pthread_mutex_lock(&mu);
  for (int64_t i = 0; i < nrecs && n < cap; i++) {
    if (recs[i].used && recs[i].tag == tag) {
      out[n++] = (shim_block){.id = i, .data = recs[i].data, .size = recs[i].size, .reserve = recs[i].reserve};
    }
  }
  pthread_mutex_unlock(&mu);
  return n;
}

// unpin_locked ends the pin on record i: frees the block if ORT already
// freed it, else makes it an ordinary untracked block. Under mu.
static void unpin_locked(int64_t i) {
  record *r = &recs[i];
  header *h = hdr_of(r->data);
  int freed = r->freed;
  drop_record(i);
  h->rec = -1;
  if (freed) release_block(h);
}

void shim_tracking_keep(uint64_t tag, const int64_t *keep, size_t n) {
  pthread_mutex_lock(&mu);
  for (int64_t i = 0; i < nrecs; i++) {
    if (!recs[i].used || recs[i].tag != tag) continue;
    int kept = 0;
    for (size_t j = 0; j < n && !kept; j++) kept = keep[j] == i;
    if (!kept) unpin_locked(i);
  }
  pthread_mutex_unlock(&mu);
}

void shim_tracking_release(uint64_t tag) { shim_tracking_keep(tag, NULL, 0); }

size_t shim_tracking_freed(uint64_t tag) {
  size_t n = 0;
  pthread_mutex_lock(&mu);
  for (int64_t i = 0; i < nrecs; i++) {
    if (recs[i].used && recs[i].tag == tag && recs[i].freed) n++;
  }
  pthread_mutex_unlock(&mu);
  return n;
}

size_t shim_tracking_records(void) {
  pthread_mutex_lock(&mu);
  size_t n = (size_t)(nrecs - nfree);
  pthread_mutex_unlock(&mu);
  return n;
}
