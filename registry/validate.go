package registry

import (
	"fmt"
	"sync"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
)

// validator checks adapters against the model with the same code a
// session runs before a switch: a patch.Patcher over the model's exposed
// weights, whose Validate checks the model fingerprint and, per tensor, the
// target name, dtype, shape, base sha256 and index bounds without writing
// anything.
//
// The Patcher needs a buffer of the right length per weight, but Validate
// never reads nor writes one (only WithFiniteCheck reads base values, and
// the validator does not set it: the alpha is not known before a request).
// So every weight's buffer is a prefix of one read-only reservation of the
// largest weight's size, which costs address space and no memory.
type validator struct {
	mu   sync.Mutex // a Patcher's methods must not run concurrently
	p    *patch.Patcher
	free func() error
}

// newValidator builds the validator of m.
func newValidator(m *export.Model) (*validator, error) {
	man := m.Manifest()
	var size int64
	for i := range man.Tensors {
		size = max(size, man.Tensors[i].Length)
	}
	buf, free, err := reserve(size)
	if err != nil {
		return nil, fmt.Errorf("registry: reserve %d bytes of address space for validation: %w", size, err)
	}
	data := make(map[string][]byte, len(man.Tensors))
	for i := range man.Tensors {
		e := &man.Tensors[i]
		data[e.Name] = buf[:e.Length:e.Length]
	}
	ws, err := m.PatchWeights(data)
	if err == nil {
		var p *patch.Patcher
		if p, err = patch.New(ws, patch.WithModelFingerprint(m.Fingerprint()), patch.WithWorkers(1)); err == nil {
			return &validator{p: p, free: free}, nil
		}
	}
	free()
	return nil, fmt.Errorf("registry: model %s: %w", m.Dir(), err)
}

// check validates a against the model (its default alpha; adapter.Open
// already checked that the values and the alpha are finite).
func (v *validator) check(a *adapter.Adapter) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.p == nil {
		return ErrClosed
	}
	return v.p.Validate(patch.Default(a))
}

// close releases the reservation; later checks fail with ErrClosed.
func (v *validator) close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.p == nil {
		return nil
	}
	v.p.Close()
	v.p = nil
	return v.free()
}
