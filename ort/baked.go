package ort

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/ortshim"
)

// bakedSource is what a baked session is built from, kept in memory once:
// the graph with the exposed weights' graph-input entries removed (so they
// are plain constant initializers again) and an OrtValue over the weight
// mapping for every initializer whose data is external. ORT copies those
// values into the graph before optimization (AddExternalInitializers), so
// neither the model protobuf nor the weight file is read again, and every
// optimizer (constant folding, NCHWc, prepacking) sees the patched bytes.
//
// The live engine takes the non-exposed ones (others) the same way, so ORT
// never maps the weight file itself: only the session's mapping reads it,
// and that mapping is guarded (see weightFile).
type bakedSource struct {
	model  []byte
	names  []string
	values []*ortshim.Value
	owned  []*ortshim.Value // values created here (not the weights' own)

	otherNames  []string // the initializers of the weight file that are not exposed
	otherValues []*ortshim.Value
}

// newBakedSource prepares the baked model from the exported model m: its
// graph with the exposed weights as constants, and an OrtValue over the
// session's mapping for every initializer stored in the weight file.
func newBakedSource(m *export.Model, s *Session) (_ *bakedSource, err error) {
	model, inits, err := m.ConstantGraph()
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	b := &bakedSource{model: model}
	defer func() {
		if err != nil {
			b.free()
		}
	}()
	for _, t := range inits {
		if t.Exposed {
			w, ok := s.byName[t.Name]
			if !ok {
				return nil, fmt.Errorf("ort: exposed weight %s has no mapped weight", t.Name)
			}
			b.names = append(b.names, t.Name)
			b.values = append(b.values, w.value)
			continue
		}
		if t.Offset < 0 || t.Offset > s.file.size() || t.Length > s.file.size()-t.Offset {
			return nil, fmt.Errorf("ort: initializer %s lies outside the weight file", t.Name)
		}
		v, err := ortshim.NewTensorValue(s.file.mem[t.Offset:t.Offset+t.Length:t.Offset+t.Length], t.DType, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("ort: initializer %s: %w", t.Name, err)
		}
		b.owned = append(b.owned, v)
		b.names = append(b.names, t.Name)
		b.values = append(b.values, v)
		b.otherNames = append(b.otherNames, t.Name)
		b.otherValues = append(b.otherValues, v)
	}
	return b, nil
}

func (b *bakedSource) free() {
	if b == nil {
		return
	}
	for _, v := range b.owned {
		v.Release()
	}
	b.owned, b.values, b.names, b.model, b.otherNames, b.otherValues = nil, nil, nil, nil, nil, nil
}

// failBakedBuild, when set (by tests), makes buildBaked fail before it
// creates anything: fault injection for the baked and hybrid switch paths.
var failBakedBuild func() error

// buildBaked creates a baked engine from the current bytes of the mapping.
func (s *Session) buildBaked() (*engine, error) {
	if failBakedBuild != nil {
		if err := failBakedBuild(); err != nil {
			return nil, fmt.Errorf("ort: creating baked session: %w", err)
		}
	}
	sess, st, err := newORTSession(&s.opts, nil, s.bakedPrepare, s.bakedCreate)
	if err != nil {
		return nil, fmt.Errorf("ort: creating baked session: %w", err)
	}
	e := newEngine(sess, false)
	e.providers = st
	if err := s.checkEngine(e); err != nil {
		e.release()
		return nil, err
	}
	e.setNames(s)
	return e, nil
}

// bakedPrepare hands ORT the mapped initializers (copied before graph
// optimization) and the folder of other external data.
func (s *Session) bakedPrepare(so *ortshim.SessionOptions) error {
	if err := so.AddExternalInitializers(s.bakedSrc.names, s.bakedSrc.values); err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	if s.modelDir != "" {
		// External tensors not in the weight file are resolved here.
		if err := so.AddConfigEntry(externalFolderKey, s.modelDir); err != nil {
			return fmt.Errorf("ort: %w", err)
		}
	}
	return nil
}

// bakedCreate creates an ORT session from the in-memory baked model.
func (s *Session) bakedCreate(so *ortshim.SessionOptions) (*ortshim.Session, error) {
	return ortshim.NewSessionFromBytes(s.bakedSrc.model, so)
}

// checkEngine verifies that an engine's inputs and outputs are the
// session's.
func (s *Session) checkEngine(e *engine) error {
	ins, err := e.raw.Describe(ortshim.Inputs)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	outs, err := e.raw.Describe(ortshim.Outputs)
	if err != nil {
		return fmt.Errorf("ort: %w", err)
	}
	if len(ins) != len(s.inputs) || len(outs) != len(s.outputs) {
		return fmt.Errorf("ort: baked session has %d inputs and %d outputs, the model %d and %d", len(ins), len(outs), len(s.inputs), len(s.outputs))
	}
	return nil
}

// dropPages discards the session's private copies of weight pages (after
// the weights were reverted to the file's bytes): the mapping reads the
// file again, and the pages no longer count in the process's memory.
func (w *weightFile) dropPages() {
	if w == nil || len(w.mem) == 0 || w.anon {
		return
	}
	_ = unix.Madvise(w.mem, unix.MADV_DONTNEED)
}

// unmapPages discards the mapping's pages lying wholly inside b (the edge
// pages may hold a neighbour's bytes and are left alone): for pages that
// hold the file's bytes, the next access reads the same bytes from the
// file again.
func unmapPages(b []byte) {
	if len(b) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := (start + page - 1) &^ (page - 1)
	hi := (start + uintptr(len(b))) &^ (page - 1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(b[lo-start:hi-start], unix.MADV_DONTNEED)
}

// populate makes the session's private copies of the pages of the given
// weights in one madvise(MADV_POPULATE_WRITE) per weight range, split
// across goroutines, instead of one copy-on-write fault per page as the
// patcher first writes each of them. The bytes do not change, so Runs
// reading the mapping may go on meanwhile. Errors are ignored (kernels
// before 5.14 lack it; the patcher's writes then fault the pages in).
func (w *weightFile) populate(ranges [][]byte) {
	if w == nil {
		return
	}
	const chunk = 8 << 20
	var jobs [][]byte
	for _, r := range ranges {
		for len(r) > 0 {
			n := min(len(r), chunk)
			jobs = append(jobs, r[:n])
			r = r[n:]
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(jobs); i = int(next.Add(1) - 1) {
				_ = unix.Madvise(jobs[i], unix.MADV_POPULATE_WRITE)
			}
		}()
	}
	wg.Wait()
}
