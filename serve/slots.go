package serve

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/registry"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/tensor"
)

// ErrSlots is returned by ShiraSlotsEngine for sessions that cannot serve
// as slots of one engine.
var ErrSlots = errors.New("serve: adapter slots")

// ShiraSlotsEngine serves SHiRA adapters from lib with several sessions of
// one model, each an adapter slot with a configuration of its own (sess.Set,
// in the sessions' mode). A request runs on the slot that holds its
// configuration; when none does, the idle slot used least recently is
// switched to it first. Requests of different configurations therefore
// follow each other with no switch as long as their configurations fit in
// the slots: the scheduler is not exclusive (it never holds requests back to
// group them; it still batches same-configuration requests), and each slot
// switches only when a configuration that is not held arrives, one switch
// per Run at worst. The memory cost is one session per slot (the weights,
// packed or not, and ORT's buffers), so slots suit models small enough to
// hold a few times over, or a few hot adapters of a larger one.
//
// Set the scheduler's MaxConcurrent to at most len(sessions): a Run waits
// for an idle slot. Switches are reported to the scheduler Observer's
// Switched hook (and so to the server's metrics); sched.Stats counts none.
// The engine does not own the sessions or lib.
func ShiraSlotsEngine(sessions []*ort.Session, lib *registry.Library) (*Engine, error) {
	if len(sessions) == 0 || lib == nil {
		return nil, fmt.Errorf("%w: need at least one session and a library", ErrSlots)
	}
	for i, s := range sessions {
		if s == nil {
			return nil, fmt.Errorf("%w: session %d is nil", ErrSlots, i)
		}
		if s == sessions[0] && i > 0 {
			return nil, fmt.Errorf("%w: session %d is session 0 again", ErrSlots, i)
		}
		if !reflect.DeepEqual(s.Inputs(), sessions[0].Inputs()) || !reflect.DeepEqual(s.Outputs(), sessions[0].Outputs()) ||
			!reflect.DeepEqual(s.Weights(), sessions[0].Weights()) {
			return nil, fmt.Errorf("%w: session %d is not a session of session 0's model (inputs, outputs or weights differ)", ErrSlots, i)
		}
	}
	cat := newLibraryCatalog(lib)
	b := &slotsBackend{cat: cat, idle: make(chan struct{})}
	for _, s := range sessions {
		b.slots = append(b.slots, &slot{sess: s})
	}
	return &Engine{
		Inputs:   sessions[0].Inputs(),
		Outputs:  sessions[0].Outputs(),
		Backend:  b,
		Catalog:  cat,
		Platform: fmt.Sprintf("onnxruntime-shira-%s-slots", sessions[0].Mode()),
	}, nil
}

// slotsBackend runs each request on a session holding its configuration.
type slotsBackend struct {
	cat *libraryCatalog

	mu       sync.Mutex
	slots    []*slot
	idle     chan struct{} // closed (and replaced) when a slot becomes idle
	tick     uint64
	switched func(from, to sched.Key, d time.Duration, err error)
}

// slot is one session and the configuration it holds.
type slot struct {
	sess  *ort.Session
	key   sched.Key
	known bool     // key is the session's configuration
	busy  bool     // a Run (and its switch) owns the slot
	used  uint64   // tick of the last use
	held  []func() // releases the pins of key's adapters
}

// Switch is never called: the scheduler of a slots engine is not
// exclusive.
func (b *slotsBackend) Switch(context.Context, sched.Key) error {
	return errors.New("serve: a slots engine switches its slots itself")
}

// Run runs inputs under key on a slot that holds key, switching an idle
// slot to it first when none does.
func (b *slotsBackend) Run(ctx context.Context, key sched.Key, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	sl, err := b.take(ctx, key)
	if err != nil {
		return nil, err
	}
	defer b.put(sl)
	if !sl.known || sl.key != key {
		if err := b.switchSlot(ctx, sl, key); err != nil {
			return nil, err
		}
	}
	return sl.sess.Run(ctx, inputs)
}

// take marks busy and returns the idle slot holding key, or else the idle
// slot used least recently (one never switched first), waiting for one to
// become idle.
func (b *slotsBackend) take(ctx context.Context, key sched.Key) (*slot, error) {
	b.mu.Lock()
	for {
		var pick *slot
		for _, sl := range b.slots {
			if sl.busy {
				continue
			}
			if sl.known && sl.key == key {
				pick = sl
				break
			}
			if pick == nil || rank(sl) < rank(pick) {
				pick = sl
			}
		}
		if pick != nil {
			pick.busy = true
			b.mu.Unlock()
			return pick, nil
		}
		idle := b.idle
		b.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		b.mu.Lock()
	}
}

// rank orders slots for reuse: unknown ones first, then least recently
// used.
func rank(sl *slot) uint64 {
	if !sl.known {
		return 0
	}
	return sl.used + 1
}

// put makes sl idle again.
func (b *slotsBackend) put(sl *slot) {
	b.mu.Lock()
	b.tick++
	sl.used = b.tick
	sl.busy = false
	close(b.idle)
	b.idle = make(chan struct{})
	b.mu.Unlock()
}

// switchSlot makes key the configuration of sl, which the caller owns. On
// error the session keeps its previous configuration, as Session.Set
// promises; after a panic the slot's configuration is unknown.
func (b *slotsBackend) switchSlot(ctx context.Context, sl *slot, key sched.Key) error {
	from, known := sl.key, sl.known
	if !known {
		from = sched.Base
	}
	sl.known = false
	start := time.Now()
	releases, err := setKey(ctx, sl.sess, b.cat, key)
	d := time.Since(start)
	if err == nil {
		old := sl.held
		sl.key, sl.known, sl.held = key, true, releases
		releaseAll(old)
	} else {
		sl.known = known
	}
	b.mu.Lock()
	f := b.switched
	b.mu.Unlock()
	if f != nil {
		f(from, key, d, err)
	}
	if err != nil {
		return fmt.Errorf("serve: switch a slot to %q: %w", key, err)
	}
	return nil
}

// observeSwitches makes f receive every switch of a slot.
func (b *slotsBackend) observeSwitches(f func(from, to sched.Key, d time.Duration, err error)) {
	b.mu.Lock()
	b.switched = f
	b.mu.Unlock()
}

// close releases the adapters the slots hold (after the scheduler drained;
// the sessions retain them until they close).
func (b *slotsBackend) close() {
	b.mu.Lock()
	var old []func()
	for _, sl := range b.slots {
		old = append(old, sl.held...)
		sl.held = nil
	}
	b.mu.Unlock()
	releaseAll(old)
}

// switchObserver is implemented by backends that switch on their own
// (outside sched's Switch calls) and report it like the scheduler does.
type switchObserver interface {
	observeSwitches(func(from, to sched.Key, d time.Duration, err error))
}

var (
	_ closer         = (*slotsBackend)(nil)
	_ switchObserver = (*slotsBackend)(nil)
)
