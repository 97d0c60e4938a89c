package ort

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/filelease"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/quant"
	"github.com/shira-ort/shira-ort/tensor"
)

// WeightInfo describes one exposed weight of a Session.
type WeightInfo struct {
	Name   string
	DType  tensor.DType
	Shape  []int64
	Offset int64    // byte offset in the weight file
	Length int64    // bytes
	SHA256 [32]byte // of the weight as exported (before any adapter)
	// Quant describes a quantized weight (DType then holds its integer
	// codes, which a switch re-quantizes); nil for a float weight.
	Quant *export.Quantization
}

// weight is an exposed weight: its bytes in the session's mapping and the
// ORT tensor over them.
type weight struct {
	info  WeightInfo
	quant *quant.Scheme // of a quantized weight (info.Quant), nil otherwise
	data  []byte
	value *ortshim.Value
	// private says the session populated its own copy of every page of
	// data (switch.go); dropping the pages clears it. Under switchMu.
	private bool
}

// weightFile is a private, writable, copy-on-write mapping of the weight
// file: writes land in anonymous pages of this process and never reach the
// file.
//
// A file mapping is not a snapshot: if another process truncated the file,
// touching a mapped page past the new end would kill the process (SIGBUS,
// also inside ORT's kernels, and also for pages the session wrote), and a
// rewrite in place would change every page not written yet. So the session
// holds a read lease on the file (internal/filelease): a writer waits until
// the mapping has become anonymous memory with the same contents (anon),
// and nothing reaches the mapping afterwards. Where no lease is granted,
// the mapping is made anonymous at Open.
type weightFile struct {
	mem   []byte
	lease *filelease.Lease
	// anon says the mapping no longer follows the file: its pages must
	// not be dropped (they would read as zeros). Under switchMu.
	anon bool
}

// snapshot makes the mapping anonymous memory with the same contents.
// Under switchMu (nothing writes the mapping meanwhile; Runs may read it).
func (w *weightFile) snapshot() error {
	if w == nil || w.anon || len(w.mem) == 0 {
		return nil
	}
	if err := filelease.Snapshot(w.mem, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		return fmt.Errorf("ort: copying the weights into memory: %w", err)
	}
	w.anon = true
	return nil
}

// guardWeights protects the session's mapping of m's weight file against
// other writers of the file (see weightFile): a read lease whose break
// snapshots the mapping, or, without a lease, the snapshot now.
func (s *Session) guardWeights(m *export.Model) error {
	if s.file == nil || len(s.file.mem) == 0 {
		return nil
	}
	var lease *filelease.Lease
	err := m.WithWeightFile(func(f *os.File, size int64) error {
		var err error
		lease, err = filelease.Hold(f, s.weightFileChanging)
		if err != nil {
			return err
		}
		// the lease was granted while nobody had the file open for
		// writing; a truncation before that shows in the size
		if st, err := f.Stat(); err != nil || st.Size() != size {
			lease.Release()
			lease = nil
			return fmt.Errorf("ort: %s changed since it was opened", f.Name())
		}
		return nil
	})
	if err == nil {
		s.file.lease = lease
		return nil
	}
	if errors.Is(err, filelease.ErrUnsupported) {
		return s.file.snapshot()
	}
	return err
}

// weightFileChanging runs when another process begins to write or truncate
// the weight file (the lease breaks): the mapping becomes anonymous
// memory, so the Runs in progress and every later one read the weights the
// session had, never the changed file.
func (s *Session) weightFileChanging() {
	s.switchMu.lock() // no patch, populate or drop meanwhile
	defer s.switchMu.unlock()
	if err := s.file.snapshot(); err != nil {
		// cannot happen short of running out of memory; the lease is
		// released anyway (the writer would go on after the break time)
		panic(err)
	}
}

// mapWeights maps m's weight file privately (the file m opened, so a file
// renamed over it since does not matter).
func mapWeights(m *export.Model) (*weightFile, error) {
	var wf *weightFile
	err := m.WithWeightFile(func(f *os.File, size int64) error {
		if size == 0 {
			wf = &weightFile{}
			return nil
		}
		if int64(int(size)) != size {
			return fmt.Errorf("ort: %s is too large to map", f.Name())
		}
		mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err != nil {
			return fmt.Errorf("ort: mapping %s: %w", f.Name(), err)
		}
		wf = &weightFile{mem: mem}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return wf, nil
}

func (w *weightFile) size() int64 { return int64(len(w.mem)) }

func (w *weightFile) close() error {
	if w == nil || w.mem == nil {
		return nil
	}
	w.lease.Release() // first: a break in progress finishes before the unmap
	err := unix.Munmap(w.mem)
	w.mem = nil
	if err != nil {
		return fmt.Errorf("ort: unmapping weights: %w", err)
	}
	return nil
}

// loadWeights validates the manifest entries against the mapping and wraps
// each weight in an ORT tensor over the mapped bytes (no copy).
func loadWeights(m *export.Manifest, wf *weightFile, verify bool) ([]*weight, error) {
	ws := make([]*weight, 0, len(m.Tensors))
	destroy := func() {
		for _, w := range ws {
			w.value.Release()
		}
	}
	seen := map[string]bool{}
	for i := range m.Tensors {
		e := &m.Tensors[i]
		sum, err := checkEntry(e, wf.size())
		if err != nil {
			destroy()
			return nil, err
		}
		if seen[e.Name] {
			destroy()
			return nil, fmt.Errorf("ort: weight %s listed twice in the manifest", e.Name)
		}
		seen[e.Name] = true
		data := wf.mem[e.Offset : e.Offset+e.Length : e.Offset+e.Length]
		if verify && sha256.Sum256(data) != sum {
			destroy()
			return nil, fmt.Errorf("ort: weight %s: sha256 of the weight file bytes differs from the manifest", e.Name)
		}
		q, err := e.Scheme()
		if err != nil {
			destroy()
			return nil, fmt.Errorf("ort: %w", err)
		}
		// The mapping is not Go memory: nothing to pin.
		v, err := ortshim.NewTensorValue(data, e.DType, e.Shape)
		if err != nil {
			destroy()
			return nil, fmt.Errorf("ort: wrapping weight %s: %w", e.Name, err)
		}
		ws = append(ws, &weight{
			info: WeightInfo{Name: e.Name, DType: e.DType, Shape: append([]int64(nil), e.Shape...),
				Offset: e.Offset, Length: e.Length, SHA256: sum, Quant: e.Quant},
			quant: q,
			data:  data,
			value: v,
		})
	}
	return ws, nil
}
