// Package sched schedules inference requests that each name an adapter
// configuration ([Key]) onto a [Backend]: it groups requests of the same
// configuration so that a backend with one active configuration at a time
// (a SHiRA session, where switching scatters values into the weights; LoRA
// merged in place) switches rarely, bounds how long any request waits,
// concatenates same-configuration requests into one Run where the model has
// a free batch dimension, and answers "overloaded" instead of queueing
// without bound.
//
// # Policy
//
// Waiting requests are kept in one FIFO queue per key, and one rule bounds
// every reordering: a request is never dispatched while a request that
// arrived [Options.MaxWait] or more before it still waits.
//
// With [Options.Exclusive], the scheduler keeps dispatching requests of the
// backend's active key while its oldest waiting request arrived less than
// MaxWait after the oldest waiting request of any other key. Under light
// load, when the active key's requests are served as they come, that is:
// until the oldest request of another key has waited MaxWait. The
// scheduler then stops admitting the active key, waits for the Runs in
// flight to finish, and switches to the key whose oldest waiting request is
// the oldest (FIFO across groups); when the active key has nothing waiting
// it switches to that key at once. Switch is never called while a Run is in
// flight. A failed Switch fails the requests waiting for that key and
// leaves the backend's active key unknown: the next Run of any key is
// preceded by a Switch. Without Exclusive, Switch is never called and
// requests are dispatched oldest first across keys, up to
// [Options.MaxConcurrent] Runs at a time.
//
// A request therefore waits at most for the requests that arrived before it
// or less than MaxWait after it, and for one Switch per group served ahead
// of it; a Switch that succeeds is followed by a Run of its key unless all
// the requests it was for were cancelled meanwhile. Under sustained load the
// requests of a key that arrived within MaxWait of each other share one
// switch, instead of one switch per Run as a rule based on the time waited
// alone would give once every queue is older than MaxWait. The queue
// itself is bounded: Run fails at once with [ErrOverloaded] when
// [Options.QueueLimit] requests wait.
//
// # Batching
//
// With [Options.MaxBatch] > 1 (allowed only when every input and output of
// the backend's model has a free leading batch dimension), a dispatch takes
// the oldest waiting request of the key and adds later requests of the same
// key whose inputs have the same names, dtypes and dimensions except the
// first, up to MaxBatch rows in all; their inputs are concatenated along
// dimension 0 into one Run, and every output is split back along dimension
// 0, so each request receives exactly its own rows (an output whose first
// dimension is not the total row count fails the whole batch). Requests
// that cannot be concatenated (different shapes, a scalar input, inputs
// whose first dimensions differ) run on their own.
//
// # Streams
//
// A [Stream] is a sequence of requests for one key, each made after the
// previous one returned: the steps of a text generation. For an exclusive
// scheduler, while a stream of the active key is open the scheduler stays
// on that key when it has nothing waiting, until another key's oldest
// request has waited MaxWait (so a generation's steps are grouped between
// switches rather than switching after every step); and streams run in
// cohorts: streams of the active key opened while its cohort runs wait
// until the cohort's streams close, or for MaxWait, and then start
// together, at the same step, their requests batched. For every scheduler,
// a stream's request waits (up to a millisecond, when the backend would
// otherwise idle) for the streams that were at the same step and have not
// queued their next request yet, so that streams running in step stay in
// one batch instead of splitting when one of them is a moment late.
//
// # Cancellation, errors, shutdown
//
// A waiting request whose context ends leaves the queue at once and
// returns the context's error. A request running alone hands its context
// to the backend (ort.Session stops between kernels) and returns when the
// backend does: until then the backend reads the caller's input tensors. A
// member of a batch returns the context's error at once (its inputs were
// already copied); the batch's Run is cancelled only when every member's
// context has ended. A panic in the backend is recovered and returned to
// the requests it affects as a [*PanicError]. [Scheduler.Close] refuses new
// requests with [ErrClosed] and drains the queue, or, when its context
// ends first, cancels what remains.
//
// # Adapting a session
//
// For a SHiRA session (package ort), Switch resolves the key's entries
// ([ParseKey]) to opened adapters and calls Session.Set (Session.Revert for
// [Base]); Run calls Session.Run, ignoring the key, which is the active
// one. Keys are canonicalized by [Scheduler.Run] (alphas written as
// [KeyOf] writes them), so a backend sees only canonical keys.
package sched
