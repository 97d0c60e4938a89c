package sched

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/shira-ort/shira-ort/tensor"
)

var (
	// ErrOverloaded is returned by Run, at once, when Options.QueueLimit
	// requests are already waiting.
	ErrOverloaded = errors.New("sched: overloaded")
	// ErrClosed is returned by Run after Close, and to requests that were
	// still waiting when Close gave up draining.
	ErrClosed = errors.New("sched: closed")
)

// PanicError is the error of the requests affected by a panic inside
// Backend.Switch or Backend.Run; the scheduler goes on.
type PanicError struct {
	Op    string // "Switch" or "Run"
	Key   Key
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack (debug.Stack)
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("sched: backend %s (key %s) panicked: %v", e.Op, quote(string(e.Key)), e.Value)
}

// Backend runs requests. Its methods are called from the scheduler's
// goroutines.
type Backend interface {
	// Switch makes key the configuration later Runs compute with. It is
	// called only for an exclusive backend, and only when no Run is in
	// flight; ctx ends when nobody waits for the switch any more or the
	// scheduler is closed without draining.
	Switch(ctx context.Context, key Key) error
	// Run computes inputs under key (for an exclusive backend, the key
	// of the last successful Switch). Up to Options.MaxConcurrent Runs
	// are called at once. The result belongs to the caller of
	// Scheduler.Run (or, batched, is split among the callers).
	Run(ctx context.Context, key Key, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error)
}

// Options configures a Scheduler. The zero value is a non-exclusive
// scheduler without batching, one Run at a time.
type Options struct {
	// Exclusive: the backend has one active key at a time and the
	// scheduler calls Switch between groups (SHiRA, LoRA merged in place).
	// Otherwise Runs of different keys may overlap and Switch is never
	// called (ORT's per-run LoRA adapters, the base model).
	Exclusive bool
	// MaxWait bounds how far requests are reordered to group them: no
	// request is dispatched while a request that arrived MaxWait or more
	// before it still waits. So once the oldest waiting request of
	// another key has waited MaxWait, the active key's later requests
	// wait and the backend switches (after the Runs in flight); a batch
	// takes no request that arrived MaxWait or more after one left
	// waiting. Default 50ms.
	MaxWait time.Duration
	// QueueLimit bounds the requests waiting (not yet running); Run
	// returns ErrOverloaded at once beyond it. Default 1024.
	QueueLimit int
	// MaxBatch is the most rows one Run may carry. Above 1 it enables
	// batching, which requires every input and output of the backend's
	// model to have a free leading batch dimension (rows): requests of a
	// key are then concatenated along dimension 0. Default 1 (no batching).
	MaxBatch int
	// MaxConcurrent bounds the Runs in flight at once. Default 1.
	MaxConcurrent int
	// Observer receives metrics events.
	Observer Observer
}

// Observer holds optional hooks for metrics. They are called from the
// scheduler's goroutines, Waited and Depth with the scheduler's lock held
// (so Depth values arrive in order): they must not block, panic or call the
// Scheduler's methods.
type Observer struct {
	// Switched reports a call of Backend.Switch that took d (from is
	// Base too when the active key was unknown).
	Switched func(from, to Key, d time.Duration, err error)
	// Batch reports a Run about to be called for requests requests
	// holding rows rows in all.
	Batch func(key Key, requests, rows int)
	// Waited reports the time a request spent queued, when it is
	// dispatched.
	Waited func(key Key, d time.Duration)
	// Depth reports the number of waiting requests after every change.
	Depth func(n int)
}

// Stats are a Scheduler's counters since New. Every request accepted
// (Submitted) ends Completed, Failed or Canceled, or is still waiting
// (QueueDepth) or running.
type Stats struct {
	Submitted    int64 // requests accepted into the queue
	Completed    int64 // requests answered with outputs
	Failed       int64 // requests answered with an error of the backend, a switch, a batch split or a panic
	Canceled     int64 // requests ended by their context, or by a Close that gave up draining
	Rejected     int64 // requests refused with ErrOverloaded
	Switches     int64 // calls of Backend.Switch
	SwitchErrors int64 // calls of Backend.Switch that failed
	Runs         int64 // calls of Backend.Run
	Rows         int64 // rows passed to Backend.Run (a request's leading dimension when batching, else 1 per request)
	QueueDepth   int   // requests waiting now
	InFlight     int   // Runs in flight now
	Active       Key   // the backend's active key (Exclusive), valid when ActiveKnown
	ActiveKnown  bool  // false before the first switch, during one and after a failed one
}

// Scheduler queues requests and runs them on a Backend; see the package
// documentation for the policy. Its methods are safe for concurrent use.
type Scheduler struct {
	b        Backend
	o        Options
	batching bool
	scan     int // the most waiting requests a batch looks through
	base     context.Context
	kill     context.CancelFunc // cancels base: Close gave up draining

	mu        sync.Mutex
	closed    bool
	drained   chan struct{} // closed once closed and nothing waits, runs or switches
	isDrained bool
	groups    map[Key]*group
	heap      groupHeap // groups with waiting requests, oldest head first
	waiting   int
	inflight  int
	seq       uint64
	switching bool
	switchTo  Key
	abandon   context.CancelFunc // cancels the switch in progress
	abandoned bool               // the switch was cancelled because nobody waited for it
	active    Key
	known     bool
	holds     map[Key]int    // open Streams per key
	cohort    map[Key]int    // open Streams per key admitted to their key's cohort
	returning map[string]int // Streams between requests, per returnKey
	holdTimer *time.Timer    // wakes the dispatcher when a hold's wait ends
	stats     Stats
}

const (
	stWaiting = iota
	stRunning
	stDone
)

type request struct {
	ctx    context.Context
	key    Key
	st     *Stream // nil for Scheduler.Run
	inputs map[string]*tensor.Tensor
	sig    string // batching signature ("" runs alone)
	rows   int
	enq    time.Time
	seq    uint64

	// guarded by Scheduler.mu
	g          *group
	prev, next *request
	state      int
	b          *batch
	done       chan struct{} // closed when out and err are set
	out        map[string]*tensor.Tensor
	err        error
}

type group struct {
	key        Key
	head, tail *request
	n          int
	idx        int // in Scheduler.heap
}

type batch struct {
	key    Key
	reqs   []*request
	rows   int
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool   // unregisters the AfterFunc tying a lone request's ctx to base
	copied chan struct{} // batches of several: closed once their inputs are concatenated
	live   int           // members still waiting for the result (guarded by mu)
}

// New returns a Scheduler running requests on b.
func New(b Backend, o Options) (*Scheduler, error) {
	if b == nil {
		return nil, errors.New("sched: nil Backend")
	}
	if o.MaxWait < 0 || o.QueueLimit < 0 || o.MaxBatch < 0 || o.MaxConcurrent < 0 {
		return nil, fmt.Errorf("sched: negative option (MaxWait %v, QueueLimit %d, MaxBatch %d, MaxConcurrent %d)",
			o.MaxWait, o.QueueLimit, o.MaxBatch, o.MaxConcurrent)
	}
	if o.MaxWait == 0 {
		o.MaxWait = 50 * time.Millisecond
	}
	if o.QueueLimit == 0 {
		o.QueueLimit = 1024
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = 1
	}
	s := &Scheduler{
		b:         b,
		o:         o,
		batching:  o.MaxBatch > 1,
		scan:      64 + 4*min(o.MaxBatch, 1<<20),
		drained:   make(chan struct{}),
		groups:    make(map[Key]*group),
		holds:     make(map[Key]int),
		cohort:    make(map[Key]int),
		returning: make(map[string]int),
	}
	s.base, s.kill = context.WithCancel(context.Background())
	return s, nil
}

// Run queues a request for key (canonicalized: see ParseKey; a malformed
// key is refused with an error wrapping ErrBadKey) and returns its outputs
// once it has run. It returns ErrOverloaded at once when the queue is
// full, ErrClosed after Close, and the context's error when ctx ends while
// the request waits or runs in a batch. The caller must not modify inputs
// until Run returns; when batched, the outputs share one buffer per output
// (each request's slice of it is disjoint and capped).
func (s *Scheduler) Run(ctx context.Context, key Key, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	key, err := canonical(key)
	if err != nil {
		return nil, err
	}
	return s.run(ctx, key, inputs, nil)
}

// run queues a request for the canonical key (of stream st, if not nil)
// and waits for its outputs.
func (s *Scheduler) run(ctx context.Context, key Key, inputs map[string]*tensor.Tensor, st *Stream) (map[string]*tensor.Tensor, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &request{ctx: ctx, key: key, st: st, inputs: inputs, rows: 1, done: make(chan struct{})}
	if s.batching {
		if sig, rows := batchShape(inputs); sig != "" {
			r.sig, r.rows = sig, rows
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if st != nil && st.closed {
		s.mu.Unlock()
		return nil, errStreamClosed
	}
	if s.waiting >= s.o.QueueLimit {
		s.stats.Rejected++
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d requests waiting", ErrOverloaded, s.o.QueueLimit)
	}
	s.stats.Submitted++
	if st != nil {
		s.leaveBetweenLocked(st)
	}
	s.enqueueLocked(r)
	s.dispatchLocked()
	s.mu.Unlock()

	select {
	case <-r.done:
		return r.out, r.err
	case <-ctx.Done():
		return s.cancel(r)
	}
}

// cancel ends r, whose context has ended.
func (s *Scheduler) cancel(r *request) (map[string]*tensor.Tensor, error) {
	s.mu.Lock()
	switch r.state {
	case stWaiting:
		s.unqueueLocked(r)
		r.state = stDone
		s.stats.Canceled++
		s.depthLocked()
		if s.switching && s.switchTo == r.key && s.groups[r.key] == nil && !s.abandoned {
			s.abandoned = true // nobody waits for this switch any more
			s.abandon()
		}
		s.dispatchLocked()
		s.checkDrainedLocked()
		s.mu.Unlock()
		return nil, r.ctx.Err()
	case stRunning:
		b := r.b
		if b.copied == nil {
			// Running alone: the backend reads the caller's inputs
			// until it returns, and it has r.ctx.
			s.mu.Unlock()
			<-r.done
			return r.out, r.err
		}
		r.state = stDone
		s.stats.Canceled++
		if b.live--; b.live == 0 {
			b.cancel()
		}
		s.mu.Unlock()
		<-b.copied // the inputs may be reused once the batch has its copy
		return nil, r.ctx.Err()
	default:
		s.mu.Unlock()
		return r.out, r.err
	}
}

// Close stops accepting requests (Run returns ErrClosed) and waits until
// every queued and running request has finished. When ctx ends first, it
// cancels what remains (waiting requests return ErrClosed; running ones
// have their backend context cancelled and return an error wrapping
// ErrClosed) and returns ctx's error without waiting for the backend calls
// to return. Close may be called more than once.
func (s *Scheduler) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	s.mu.Lock()
	s.closed = true
	if s.holdTimer != nil {
		s.holdTimer.Stop()
	}
	s.dispatchLocked() // holds no longer delay a switch
	s.checkDrainedLocked()
	s.mu.Unlock()
	select {
	case <-s.drained:
		s.kill()
		return nil
	case <-ctx.Done():
		select {
		case <-s.drained: // both were ready
			s.kill()
			return nil
		default:
		}
	}
	s.mu.Lock()
	s.kill()
	for s.heap.Len() > 0 {
		s.failGroupLocked(s.heap[0], fmt.Errorf("%w before the request ran", ErrClosed), true)
	}
	s.depthLocked()
	s.checkDrainedLocked()
	s.mu.Unlock()
	return ctx.Err()
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.QueueDepth = s.waiting
	st.InFlight = s.inflight
	st.Active, st.ActiveKnown = s.active, s.known
	if !st.ActiveKnown {
		st.Active = Base
	}
	return st
}

func (s *Scheduler) enqueueLocked(r *request) {
	s.seq++
	r.seq = s.seq
	r.enq = time.Now()
	g := s.groups[r.key]
	if g == nil {
		g = &group{key: r.key}
		s.groups[r.key] = g
	}
	r.g = g
	if g.tail == nil {
		g.head, g.tail = r, r
		heap.Push(&s.heap, g)
	} else {
		r.prev = g.tail
		g.tail.next = r
		g.tail = r
	}
	g.n++
	s.waiting++
	s.depthLocked()
}

// unqueueLocked removes a waiting request from its group (the caller
// reports the depth).
func (s *Scheduler) unqueueLocked(r *request) {
	g := r.g
	wasHead := g.head == r
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		g.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		g.tail = r.prev
	}
	r.prev, r.next, r.g = nil, nil, nil
	g.n--
	s.waiting--
	switch {
	case g.n == 0:
		heap.Remove(&s.heap, g.idx)
		delete(s.groups, g.key)
	case wasHead:
		heap.Fix(&s.heap, g.idx)
	}
}

func (s *Scheduler) depthLocked() {
	if f := s.o.Observer.Depth; f != nil {
		f(s.waiting)
	}
}

func (s *Scheduler) checkDrainedLocked() {
	if s.closed && !s.isDrained && s.waiting == 0 && s.inflight == 0 && !s.switching {
		s.isDrained = true
		close(s.drained)
	}
}

// failGroupLocked answers every waiting request of g with err (the caller
// reports the depth).
func (s *Scheduler) failGroupLocked(g *group, err error, canceled bool) {
	for g.head != nil {
		r := g.head
		s.unqueueLocked(r)
		r.err = err
		r.state = stDone
		if canceled {
			s.stats.Canceled++
		} else {
			s.stats.Failed++
		}
		close(r.done)
	}
}

// dispatchLocked starts Runs (and Switches) while the policy allows.
func (s *Scheduler) dispatchLocked() {
	for s.waiting > 0 && !s.switching && s.inflight < s.o.MaxConcurrent && s.base.Err() == nil {
		g := s.heap[0]
		if s.o.Exclusive {
			g = s.pickLocked()
			if !s.known || g.key != s.active {
				if s.inflight == 0 && !s.holdLocked() {
					s.startSwitchLocked(g.key)
				}
				return // else wait for the Runs in flight to finish, or the held key's next request
			}
		}
		h, wake := s.readyLocked(g)
		if h == nil && !s.o.Exclusive {
			// The oldest group waits for partners: serve the next oldest
			// meanwhile rather than idle.
			if o := s.oldestOtherLocked(g); o != nil {
				if h2, _ := s.readyLocked(o); h2 != nil {
					g, h = o, h2
				}
			}
		}
		if h == nil {
			if !wake.IsZero() {
				s.armLocked(max(time.Until(wake), time.Microsecond))
			} else {
				// Only requests of streams outside the active key's
				// cohort wait, and no other key: they join when the
				// cohort ends or once they have waited MaxWait.
				s.holdLocked()
			}
			return
		}
		s.startBatchLocked(g, h)
	}
}

// readyLocked returns the oldest request of g to dispatch now: eligible
// (see eligible), and not waiting for partners. A request of a stream
// waits, up to partnerWait, while other streams of its key that were at
// the same step (their last requests had the same shape as its stream's
// last one) have not queued their next request yet: they come within
// moments, at the same step again, and run in the same batch. When no
// request is ready, wake is when the first partner wait ends (zero if
// none).
func (s *Scheduler) readyLocked(g *group) (h *request, wake time.Time) {
	now := time.Now()
	for r := g.head; r != nil; r = r.next {
		if !s.eligible(r) {
			continue
		}
		if st := r.st; st != nil && st.lastSig != "" && s.returning[returnKey(st.key, st.lastSig)] > 0 && !s.closed {
			if until := r.enq.Add(partnerWait); now.Before(until) {
				if wake.IsZero() {
					wake = until
				}
				continue
			}
		}
		return r, time.Time{}
	}
	return nil, wake
}

// partnerWait bounds how long a stream's request waits for the streams
// that were at the same step to queue their next requests (a variable for
// tests).
var partnerWait = time.Millisecond

// A stream's requests join their key's cohort, in an exclusive scheduler:
// the streams of the active key that had a request waiting when the
// scheduler switched to it, or when its previous cohort had ended. A
// request of a stream outside the cohort waits until the cohort's streams
// are all closed or it has waited MaxWait, so that streams started while a
// cohort runs start together (and, being at the same step, run as one
// batch) instead of one by one.

// admitLocked admits to the cohort of g's key (the active one) the streams
// of g's waiting requests: all of them when the cohort is empty, else those
// whose request has waited MaxWait.
func (s *Scheduler) admitLocked(g *group) {
	all := s.cohort[g.key] == 0
	now := time.Now()
	for r := g.head; r != nil; r = r.next {
		if r.st != nil && !r.st.admitted && (all || !now.Before(r.enq.Add(s.o.MaxWait))) {
			s.admitStreamLocked(r.st)
		}
	}
}

func (s *Scheduler) admitStreamLocked(st *Stream) {
	if !st.admitted && !st.closed {
		st.admitted = true
		s.cohort[st.key]++
	}
}

// eligible reports whether r may be dispatched (for an exclusive
// scheduler, with its key active): it is no stream's, or its stream is in
// the cohort (or closed: no cohort will take it).
func (s *Scheduler) eligible(r *request) bool {
	return r.st == nil || r.st.admitted || r.st.closed || s.closed || !s.o.Exclusive
}

// eligibleLocked returns g's oldest eligible waiting request, or nil.
func (s *Scheduler) eligibleLocked(g *group) *request {
	for r := g.head; r != nil; r = r.next {
		if s.eligible(r) {
			return r
		}
	}
	return nil
}

// deferredLocked returns g's oldest waiting request that is not eligible,
// or nil.
func (s *Scheduler) deferredLocked(g *group) *request {
	for r := g.head; r != nil; r = r.next {
		if !s.eligible(r) {
			return r
		}
	}
	return nil
}

// holdLocked reports whether an exclusive backend should stay on its
// active key, which has nothing ready or must give way, because an open
// Stream of it announces more requests soon and no other key's oldest
// waiting request has waited MaxWait yet; it then arms a timer that
// dispatches again when that request's MaxWait is up, or when a request of
// the key outside its cohort has waited MaxWait (and joins it), whichever
// comes first.
func (s *Scheduler) holdLocked() bool {
	if !s.known || s.holds[s.active] == 0 || s.closed {
		return false
	}
	var until time.Time // the hold ends when another key's oldest request has waited MaxWait
	o := s.heap[0]
	if o.key == s.active {
		o = s.oldestOtherLocked(o)
	}
	if o != nil {
		until = o.head.enq.Add(s.o.MaxWait)
		if !time.Now().Before(until) {
			return false
		}
	}
	wake := until
	if cur := s.groups[s.active]; cur != nil {
		if d := s.deferredLocked(cur); d != nil {
			// It joins the cohort once it has waited MaxWait.
			if t := d.enq.Add(s.o.MaxWait); wake.IsZero() || t.Before(wake) {
				wake = t
			}
		}
	}
	if wake.IsZero() {
		return false
	}
	s.armLocked(max(time.Until(wake), time.Microsecond))
	return true
}

// armLocked makes the dispatcher run again after wait.
func (s *Scheduler) armLocked(wait time.Duration) {
	if s.holdTimer == nil {
		s.holdTimer = time.AfterFunc(wait, s.wake)
	} else {
		s.holdTimer.Reset(wait)
	}
}

// wake dispatches when a hold's wait is up.
func (s *Scheduler) wake() {
	s.mu.Lock()
	s.dispatchLocked()
	s.mu.Unlock()
}

// Stream is a sequence of requests for one key, each made after the
// previous one returned: the steps of a text generation. Open one with
// Scheduler.Stream, run its requests with Run, and Close it once no more
// will come. A Stream's methods must not be called concurrently with each
// other (one request at a time), but Close may be.
//
// For an exclusive scheduler a stream does two things. While a stream of
// the active key is open, the scheduler does not switch away from the key
// when it has nothing waiting, as long as no request of another key has
// waited MaxWait: the steps of the generations for one configuration are
// grouped between switches instead of a switch after every step. And the
// streams of a key run in cohorts: the streams with a request waiting when
// the scheduler switches to the key (or when the key's previous cohort has
// closed) form its cohort; a stream opened while a cohort runs waits until
// the cohort's streams are all closed, or its request has waited MaxWait,
// so that streams opened meanwhile start together, at the same step, and
// their equal-shape requests run as one batch instead of one after another.
// The bound on reordering stays MaxWait for every request. For a shared
// scheduler a stream is just its requests.
type Stream struct {
	s   *Scheduler
	key Key
	err error // a malformed key

	// guarded by s.mu
	admitted bool // in its key's cohort
	closed   bool
	lastSig  string // the batching signature of its last request that ran
	between  bool   // its last request returned and the next is not queued yet
}

// returnKey identifies the streams of key whose last request had the
// batching signature sig: they are at the same step.
func returnKey(key Key, sig string) string { return string(key) + "\x00" + sig }

// leaveBetweenLocked notes that st's next request is queued (or that none
// will come).
func (s *Scheduler) leaveBetweenLocked(st *Stream) {
	if st.between {
		st.between = false
		k := returnKey(st.key, st.lastSig)
		if s.returning[k]--; s.returning[k] <= 0 {
			delete(s.returning, k)
		}
	}
}

// errStreamClosed is returned by Stream.Run after Close.
var errStreamClosed = errors.New("sched: stream closed")

// Stream opens a stream of requests for key (canonicalized as by Run; a
// malformed key makes every Run of the stream fail with an error wrapping
// ErrBadKey).
func (s *Scheduler) Stream(key Key) *Stream {
	key, err := canonical(key)
	st := &Stream{s: s, key: key, err: err}
	if err != nil {
		return st
	}
	s.mu.Lock()
	s.holds[key]++
	s.mu.Unlock()
	return st
}

// Run queues a request of the stream and returns its outputs, as
// Scheduler.Run does.
func (st *Stream) Run(ctx context.Context, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	if st.err != nil {
		return nil, st.err
	}
	return st.s.run(ctx, st.key, inputs, st)
}

// Close ends the stream: no more requests will come from it. Later calls
// do nothing.
func (st *Stream) Close() {
	if st.err != nil {
		return
	}
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.closed {
		return
	}
	st.closed = true
	s.leaveBetweenLocked(st)
	if s.holds[st.key]--; s.holds[st.key] <= 0 {
		delete(s.holds, st.key)
	}
	if st.admitted {
		if s.cohort[st.key]--; s.cohort[st.key] <= 0 {
			delete(s.cohort, st.key)
		}
	}
	s.dispatchLocked()
}

// pickLocked chooses the group an exclusive backend should serve next: the
// active key's while its oldest waiting request arrived less than MaxWait
// after the oldest waiting request of any other key, else the group of that
// oldest request.
func (s *Scheduler) pickLocked() *group {
	cur := s.groups[s.active]
	if !s.known || cur == nil {
		return s.heap[0]
	}
	s.admitLocked(cur)
	o := s.oldestOtherLocked(cur)
	h := s.eligibleLocked(cur)
	if h == nil {
		if o != nil {
			return o
		}
		return cur
	}
	if o != nil && !h.enq.Before(o.head.enq.Add(s.o.MaxWait)) {
		return o
	}
	return cur
}

// oldestOtherLocked returns the group other than g with the oldest waiting
// request (nil if none): the heap's root, or the older of its children when
// g is the root.
func (s *Scheduler) oldestOtherLocked(g *group) *group {
	if s.heap[0] != g {
		return s.heap[0]
	}
	var o *group
	for _, i := range [2]int{1, 2} {
		if i < len(s.heap) && (o == nil || s.heap[i].head.seq < o.head.seq) {
			o = s.heap[i]
		}
	}
	return o
}

func (s *Scheduler) startBatchLocked(g *group, h *request) {
	reqs := []*request{h}
	rows := h.rows
	if s.batching && h.sig != "" && rows < s.o.MaxBatch {
		// Join later requests of the key, but none that arrived MaxWait
		// or more after a request left waiting: the oldest of another
		// key, one of this key outside the cohort, or one of this key
		// that does not fit.
		var limit time.Time
		if o := s.oldestOtherLocked(g); o != nil {
			limit = o.head.enq.Add(s.o.MaxWait)
		}
		if g.head != h {
			// g.head is the oldest request of g not in the cohort.
			if l := g.head.enq.Add(s.o.MaxWait); limit.IsZero() || l.Before(limit) {
				limit = l
			}
		}
		n := 0
		for r := h.next; r != nil && rows < s.o.MaxBatch && n < s.scan; r = r.next {
			if !limit.IsZero() && !r.enq.Before(limit) {
				break
			}
			n++
			if r.sig == h.sig && r.rows <= s.o.MaxBatch-rows && s.eligible(r) {
				reqs = append(reqs, r)
				rows += r.rows
			} else if l := r.enq.Add(s.o.MaxWait); limit.IsZero() || l.Before(limit) {
				limit = l
			}
		}
	}
	b := &batch{key: g.key, reqs: reqs, rows: rows, live: len(reqs)}
	if len(reqs) == 1 {
		b.ctx, b.cancel = context.WithCancel(h.ctx)
		b.stop = context.AfterFunc(s.base, b.cancel)
	} else {
		b.ctx, b.cancel = context.WithCancel(s.base)
		b.copied = make(chan struct{})
	}
	now := time.Now()
	waited := s.o.Observer.Waited
	for _, r := range reqs {
		s.unqueueLocked(r)
		r.state = stRunning
		r.b = b
		if waited != nil {
			waited(b.key, now.Sub(r.enq))
		}
	}
	s.depthLocked()
	s.inflight++
	s.stats.Runs++
	s.stats.Rows += int64(rows)
	if testHookDispatch != nil {
		testHookDispatch(s, reqs)
	}
	go s.runBatch(b)
}

// testHookDispatch, set by tests only, sees every dispatch with the lock
// held, after the batch's requests left the queue.
var testHookDispatch func(s *Scheduler, reqs []*request)

func (s *Scheduler) runBatch(b *batch) {
	inputs := b.reqs[0].inputs
	if b.copied != nil {
		inputs = concat(b.reqs, b.rows)
		close(b.copied)
	}
	if f := s.o.Observer.Batch; f != nil {
		f(b.key, len(b.reqs), b.rows)
	}
	out, err := s.callRun(b.ctx, b.key, inputs)
	b.cancel()
	if b.stop != nil {
		b.stop()
	}
	var outs []map[string]*tensor.Tensor
	if err == nil && b.copied != nil {
		outs, err = split(out, b.reqs, b.rows)
	}
	var perr *PanicError
	panicked := errors.As(err, &perr)
	if err != nil && s.base.Err() != nil && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w while running: %w", ErrClosed, err)
	}

	s.mu.Lock()
	s.inflight--
	if panicked && s.o.Exclusive {
		s.known = false // the backend's state is unknown after a panic
	}
	for i, r := range b.reqs {
		if r.state != stRunning {
			continue // left when its context ended
		}
		switch {
		case err == nil:
			r.out = out
			if outs != nil {
				r.out = outs[i]
			}
			s.stats.Completed++
		case r.ctx.Err() != nil:
			r.err = err
			if ce := r.ctx.Err(); !errors.Is(err, ce) {
				r.err = fmt.Errorf("%w: %w", ce, err)
			}
			s.stats.Canceled++
		default:
			r.err = err
			s.stats.Failed++
		}
		r.state = stDone
		if st := r.st; st != nil && !st.closed {
			s.leaveBetweenLocked(st)
			st.lastSig = ""
			if err == nil && r.sig != "" {
				st.between, st.lastSig = true, r.sig
				s.returning[returnKey(st.key, r.sig)]++
			}
		}
		close(r.done)
	}
	s.dispatchLocked()
	s.checkDrainedLocked()
	s.mu.Unlock()
}

func (s *Scheduler) callRun(ctx context.Context, key Key, inputs map[string]*tensor.Tensor) (out map[string]*tensor.Tensor, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, &PanicError{Op: "Run", Key: key, Value: p, Stack: debug.Stack()}
		}
	}()
	return s.b.Run(ctx, key, inputs)
}

func (s *Scheduler) startSwitchLocked(to Key) {
	from := s.active
	if !s.known {
		from = Base
	}
	s.switching, s.switchTo, s.abandoned = true, to, false
	s.known = false
	s.stats.Switches++
	ctx, cancel := context.WithCancel(s.base)
	s.abandon = cancel
	go s.doSwitch(ctx, cancel, from, to)
}

func (s *Scheduler) doSwitch(ctx context.Context, cancel context.CancelFunc, from, to Key) {
	start := time.Now()
	err := s.callSwitch(ctx, to)
	d := time.Since(start)
	cancel()
	if f := s.o.Observer.Switched; f != nil {
		f(from, to, d, err)
	}
	s.mu.Lock()
	s.switching, s.abandon = false, nil
	if err == nil {
		s.active, s.known = to, true
		if g := s.groups[to]; g != nil {
			for r := g.head; r != nil; r = r.next {
				if r.st != nil {
					s.admitStreamLocked(r.st)
				}
			}
		}
	} else {
		s.stats.SwitchErrors++
		// A switch cancelled because its requests all left is no
		// failure of the requests that came since: they get a new one.
		if g := s.groups[to]; g != nil && (!s.abandoned || s.base.Err() != nil) {
			s.failGroupLocked(g, fmt.Errorf("sched: switch to %s: %w", quote(string(to)), err), false)
			s.depthLocked()
		}
	}
	s.dispatchLocked()
	s.checkDrainedLocked()
	s.mu.Unlock()
}

func (s *Scheduler) callSwitch(ctx context.Context, key Key) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Op: "Switch", Key: key, Value: p, Stack: debug.Stack()}
		}
	}()
	return s.b.Switch(ctx, key)
}

// groupHeap orders groups by the age of their oldest waiting request.
type groupHeap []*group

func (h groupHeap) Len() int           { return len(h) }
func (h groupHeap) Less(i, j int) bool { return h[i].head.seq < h[j].head.seq }
func (h groupHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *groupHeap) Push(x any) {
	g := x.(*group)
	g.idx = len(*h)
	*h = append(*h, g)
}
func (h *groupHeap) Pop() any {
	old := *h
	g := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	g.idx = -1
	return g
}
