package ort

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/tensor"
)

// LoraAdapter is an ONNX Runtime adapter file (.onnx_adapter, written by
// package ortadapter or `shira-ort export-ort-adapter`) loaded with ORT's
// LoRA API. While it is active in a Run (Session.RunLoRA), ORT feeds each
// of its parameters as the graph input of the same name: on a session made
// by Open, the exposed weights it names are replaced, for that Run only, by
// its dense tensors. It is safe for concurrent use by many Runs and
// sessions.
type LoraAdapter struct {
	mu   sync.RWMutex         // Runs hold it shared, Close exclusively
	ptr  *ortshim.LoraAdapter // nil once closed
	name string
}

// ErrLoraAdapterClosed is returned by RunLoRA when one of its adapters was
// closed.
var ErrLoraAdapterClosed = errors.New("ort: LoRA adapter is closed")

// LoadLoraAdapter loads the .onnx_adapter file at path
// (OrtApi::CreateLoraAdapter: ORT memory-maps it; the parameters stay in
// host memory). ORT checks the file's format; parameter names, types and
// shapes are checked against the model at Run.
func LoadLoraAdapter(path string) (*LoraAdapter, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	p, err := ortshim.NewLoraAdapter(path)
	if err != nil {
		return nil, fmt.Errorf("ort: loading LoRA adapter: %w", err)
	}
	return &LoraAdapter{ptr: p, name: path}, nil
}

// NewLoraAdapter loads an adapter from the bytes of an .onnx_adapter file
// (OrtApi::CreateLoraAdapterFromArray: ORT copies them, data may be reused
// afterwards).
func NewLoraAdapter(data []byte) (*LoraAdapter, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	p, err := ortshim.NewLoraAdapterFromArray(data)
	if err != nil {
		return nil, fmt.Errorf("ort: loading LoRA adapter: %w", err)
	}
	return &LoraAdapter{ptr: p, name: "(memory)"}, nil
}

// Close releases the adapter once no Run uses it. It is idempotent.
func (a *LoraAdapter) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ptr.Release()
	a.ptr = nil
	return nil
}

// RunLoRA is Run with ORT LoRA adapters active (OrtApi::
// RunOptionsAddActiveLoraAdapter): each adapter parameter is fed as the
// graph input (usually an overridable initializer) of the same name, for
// this Run only; parameters of different adapters must not overlap. With no
// adapters it is Run.
//
// On a session made by Open, an adapter parameter replaces the exposed
// weight of its name, including any SHiRA patch in it; the other exposed
// weights keep the active configuration. This needs ModeLive with the
// AddInitializer binding, where the exposed weights are graph inputs of the
// ORT session serving Runs: baked and hybrid sessions turn them back into
// constants, so they are refused. Sessions made by OpenModel accept
// adapters for any of their graph inputs.
func (s *Session) RunLoRA(ctx context.Context, inputs map[string]*tensor.Tensor, adapters ...*LoraAdapter) (map[string]*tensor.Tensor, error) {
	if len(adapters) == 0 {
		return s.Run(ctx, inputs)
	}
	if s.mode != ModeLive {
		return nil, fmt.Errorf("ort: RunLoRA with LoRA adapters needs a %v session (this one is %v): baked sessions hold the exposed weights as constants, which an adapter cannot override", ModeLive, s.mode)
	}
	if len(s.weights) > 0 && s.binding == FeedEachRun {
		return nil, fmt.Errorf("ort: RunLoRA with LoRA adapters needs the %v weight binding: with %v the exposed weights are already fed to every Run", AddInitializer, FeedEachRun)
	}
	for i, a := range adapters {
		if a == nil {
			return nil, fmt.Errorf("ort: RunLoRA: adapter %d is nil", i)
		}
		a.mu.RLock()
		defer a.mu.RUnlock()
		if a.ptr == nil {
			return nil, fmt.Errorf("%w: %s", ErrLoraAdapterClosed, a.name)
		}
	}
	ro, err := ortshim.NewRunOptions(s.opts.RunConfig)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer ro.Release()
	for _, a := range adapters {
		if err := ro.AddActiveLoraAdapter(a.ptr); err != nil {
			return nil, fmt.Errorf("ort: activating LoRA adapter %s: %w", a.name, err)
		}
	}
	return s.run(ctx, inputs, ro)
}
