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

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api_index.h"
#include "shim.h"

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

typedef struct {
  uint64_t magic;
  int64_t rec;  // record index, -1 when untracked
} header;

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
  void *base = NULL;
  if (posix_memalign(&base, HDR, HDR + size) != 0) return NULL;
  header *h = base;
  h->magic = MAGIC;
  h->rec = -1;
  char *p = (char *)base + HDR;
  if (__atomic_load_n(&recording, __ATOMIC_ACQUIRE)) {
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
  h->magic = 0;
  free(h);
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
  if (freed) {
    h->magic = 0;
    free(h);
  }
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
