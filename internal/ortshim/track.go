package ortshim

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// EnvAllocatorsKey is the session configuration entry that makes a
// session allocate its CPU memory through the allocator registered on the
// environment (the tracking allocator, once EnableTracking succeeded).
const EnvAllocatorsKey = "session.use_env_allocators"

// Version returns the loaded library's version string (OrtApiBase::
// GetVersionString, e.g. "1.24.1"); "" before Init.
func Version() string {
	if !initialized() {
		return ""
	}
	return C.GoString(C.shim_version_string())
}

var (
	trackOnce sync.Once
	trackErr  error
)

// EnableTracking registers the shim's tracking allocator on the
// environment (OrtApi::RegisterAllocator with CPU OrtDeviceAllocator
// memory info), once per process; it stays registered until the process
// exits, so it outlives every session that uses it. Sessions created with
// the configuration entry EnvAllocatorsKey=1 then allocate their CPU memory
// through it (prepacked weights included); other sessions are unaffected.
// It fails when the application registered its own CPU allocator first.
// The allocator is thread-safe: ORT calls it from its own threads.
func EnableTracking() error {
	if !initialized() {
		return ErrNotInitialized
	}
	trackOnce.Do(func() {
		if msg := C.shim_tracking_enable(); msg != nil {
			defer C.free(unsafe.Pointer(msg))
			trackErr = fmt.Errorf("ortshim: registering the tracking allocator: %s", C.GoString(msg))
		}
	})
	return trackErr
}

// Block is one allocation made through the tracking allocator during a
// recording. Data aliases the C memory: valid while the block is pinned.
type Block struct {
	ID      int64
	Data    []byte
	Reserve bool // allocated through OrtAllocator::Reserve (initialization-time memory)
}

// Recording is what Record saw: the blocks allocated while it ran and
// still live at its end, pinned (ORT freeing one is deferred until it is
// unpinned, so their memory is never reused while the caller holds them).
type Recording struct {
	tag    uint64
	Blocks []Block
	done   bool
}

// recordMu serializes recordings: one session creation at a time is
// recorded, so sessions on the shared environment are told apart.
var recordMu sync.Mutex

// Record runs create (which creates ORT sessions with EnvAllocatorsKey=1)
// while recording the tracking allocator's allocations, and returns the
// blocks still live at its end, all pinned. Recordings are serialized.
// Allocations of other sessions' Runs made meanwhile are recorded too;
// callers identify their blocks by content. If create fails, nothing stays
// pinned.
func Record(create func() error) (*Recording, error) {
	if err := EnableTracking(); err != nil {
		return nil, err
	}
	recordMu.Lock()
	tag := uint64(C.shim_tracking_start())
	err := create()
	n := int(C.shim_tracking_stop(C.uint64_t(tag)))
	recordMu.Unlock()
	r := &Recording{tag: tag}
	if err != nil {
		C.shim_tracking_release(C.uint64_t(tag))
		return nil, err
	}
	if n > 0 {
		raw := make([]C.shim_block, n)
		got := int(C.shim_tracking_list(C.uint64_t(tag), &raw[0], C.size_t(n)))
		for _, b := range raw[:got] {
			r.Blocks = append(r.Blocks, Block{
				ID:      int64(b.id),
				Data:    unsafe.Slice((*byte)(b.data), int(b.size)),
				Reserve: b.reserve != 0,
			})
		}
	}
	return r, nil
}

// Keep unpins every block of the recording except those with the given
// IDs, which stay pinned until Release. Call it once.
func (r *Recording) Keep(ids []int64) error {
	if r == nil || r.done {
		return errors.New("ortshim: Keep on a finished recording")
	}
	r.done = true
	var p *C.int64_t
	if len(ids) > 0 {
		c := C.malloc(C.size_t(len(ids)) * C.size_t(unsafe.Sizeof(C.int64_t(0))))
		defer C.free(c)
		s := unsafe.Slice((*C.int64_t)(c), len(ids))
		for i, id := range ids {
			s[i] = C.int64_t(id)
		}
		p = (*C.int64_t)(c)
	}
	C.shim_tracking_keep(C.uint64_t(r.tag), p, C.size_t(len(ids)))
	kept := r.Blocks[:0]
	for _, b := range r.Blocks {
		for _, id := range ids {
			if b.ID == id {
				kept = append(kept, b)
				break
			}
		}
	}
	r.Blocks = kept
	return nil
}

// Freed counts the recording's pinned blocks that ORT has freed (a
// prepacked weight ORT let go of while its session is alive would mean
// the session no longer computes with it).
func (r *Recording) Freed() int {
	if r == nil {
		return 0
	}
	return int(C.shim_tracking_freed(C.uint64_t(r.tag)))
}

// Release unpins every block of the recording; call it after the ORT
// sessions that own them were released (blocks ORT freed meanwhile are
// freed now). Release on nil is a no-op; it is idempotent.
func (r *Recording) Release() {
	if r == nil || r.tag == 0 {
		return
	}
	C.shim_tracking_release(C.uint64_t(r.tag))
	r.tag, r.Blocks, r.done = 0, nil, true
}

// trackedRecords counts the tracking allocator's live records (tests).
func trackedRecords() int { return int(C.shim_tracking_records()) }

// TrimAllocatorCache returns the blocks the tracking allocator keeps for
// reuse (the activations of Runs of sessions that allocate through it, up
// to 512 MiB in all, as ORT's own arena would keep them) to the C heap,
// e.g. when such a session is closed.
func TrimAllocatorCache() { C.shim_tracking_trim() }

// AllocatorCacheBytes is the number of bytes the tracking allocator keeps
// for reuse.
func AllocatorCacheBytes() int64 { return int64(C.shim_tracking_cached()) }

// setHugePages turns the tracking allocator's huge page backed blocks
// (blocks of at least 2 MiB mapped on a 2 MiB boundary and advised
// MADV_HUGEPAGE, Linux only; on by default) on or off for later
// allocations and returns the previous setting (tests, benchmarks).
func setHugePages(on bool) bool {
	v := C.int(0)
	if on {
		v = 1
	}
	return C.shim_tracking_huge(v) != 0
}
