package servebench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/ortadapter"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/sched"
	"github.com/shira-ort/shira-ort/serve"
	"github.com/shira-ort/shira-ort/tensor"
)

// The lora-merged strategy (the issue's "LoRA merged per group with the
// in-place fuse"): one ORT session of the exported model, whose exposed
// weights are overridable initializers; a switch to a group merges that
// group's LoRA adapter into a copy of the base weights with the in-place
// BLAS kernel (lora.AddInPlace: W += A·B, one GEMM per weight) and hands
// the merged weights to ORT as a LoRA adapter of whole tensors
// (ort.NewLoraAdapter: ORT copies them), which every Run of the group
// passes (RunLoRA), so ORT reads them instead of the base weights. ORT on
// CPU has no other way to change a session's weights without rebuilding
// it: they are read as run-time inputs, not prepacked, like a live
// session's.

// mergedBackend is the exclusive backend of lora-merged.
type mergedBackend struct {
	sess    *ort.Session
	m       *model
	base    map[string][]byte // the exposed weights of the branches, float32
	threads int

	mu  sync.Mutex
	cur *ort.LoraAdapter // the merged weights of the active group, nil for the base
}

// newMergedBackend opens the session and reads the base weights of the
// branch targets, checking that they are the exposed weights with the
// branches' [K, N] shapes.
func newMergedBackend(ctx context.Context, m *model, opts *ort.Options, threads int) (*mergedBackend, error) {
	byName := map[string]export.TensorEntry{}
	for _, e := range m.em.Manifest().Tensors {
		byName[e.Name] = e
	}
	b := &mergedBackend{m: m, base: map[string][]byte{}, threads: threads}
	for _, br := range m.branches {
		e, ok := byName[br.Weight]
		if !ok || e.DType != tensor.Float32 || len(e.Shape) != 2 || e.Shape[0] != int64(br.K) || e.Shape[1] != int64(br.N) {
			return nil, fmt.Errorf("servebench: lora-merged: branch %s [%d, %d] is not an exposed float32 weight of that shape", br.Weight, br.K, br.N)
		}
		w, err := m.em.ReadWeight(br.Weight)
		if err != nil {
			return nil, err
		}
		b.base[br.Weight] = w
	}
	var err error
	if b.sess, err = ort.OpenModel(ctx, filepath.Join(m.em.Dir(), export.ModelFile), opts); err != nil {
		return nil, err
	}
	return b, nil
}

// Switch merges the group's adapter into copies of the base weights and
// makes them the weights of the next Runs.
func (b *mergedBackend) Switch(ctx context.Context, key sched.Key) error {
	var next *ort.LoraAdapter
	if key != sched.Base {
		entries, err := sched.ParseKey(key)
		if err != nil {
			return err
		}
		if len(entries) != 1 || entries[0].Alpha != 1 {
			return fmt.Errorf("%w: lora-merged serves one adapter at alpha 1, not %q", serve.ErrBadRequest, string(key))
		}
		i, ok := adapterIndex(entries[0].Name)
		if !ok {
			return fmt.Errorf("%w %q", serve.ErrUnknownAdapter, entries[0].Name)
		}

		if next, err = b.merge(ctx, i); err != nil {
			return err
		}
	}
	b.mu.Lock()
	old := b.cur
	b.cur = next
	b.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// merge returns the weights with adapter i merged, as an ORT LoRA adapter.
func (b *mergedBackend) merge(ctx context.Context, i int) (*ort.LoraAdapter, error) {
	ps, err := b.m.loraParams(i)
	if err != nil {
		return nil, err
	}
	a := &ortadapter.Adapter{}
	for _, p := range ps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w := append([]byte(nil), b.base[p.Weight]...)
		// W [K, N] += A·B with A [K, r], B [r, N]: as lora's terms, B·A
		// is stored transposed ([in, out] = InOut) with lora_B = Bᵀ
		// [N, r] and lora_A = Aᵀ [r, K]
		t := lora.Term{B: transpose(p.B, p.Rank, p.N), A: transpose(p.A, p.K, p.Rank), R: p.Rank, Scale: 1}
		if err := lora.AddInPlace(w, tensor.Float32, peft.InOut, p.N, p.K, b.threads, t); err != nil {
			return nil, fmt.Errorf("servebench: lora-merged: %s: %w", p.Weight, err)
		}
		a.Parameters = append(a.Parameters, ortadapter.Parameter{Name: p.Weight, DType: tensor.Float32, Dims: []int64{int64(p.K), int64(p.N)}, Data: w})
	}
	data, err := ortadapter.Encode(a)
	if err != nil {
		return nil, err
	}
	return ort.NewLoraAdapter(data)
}

// transpose returns the rows×cols row-major m transposed.
func transpose(m []float32, rows, cols int) []float32 {
	out := make([]float32, len(m))
	for r := range rows {
		for c := range cols {
			out[c*rows+r] = m[r*cols+c]
		}
	}
	return out
}

// Run runs on the active group's merged weights (the base when none).
func (b *mergedBackend) Run(ctx context.Context, key sched.Key, in map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	b.mu.Lock()
	cur := b.cur
	b.mu.Unlock()
	if key == sched.Base {
		if cur != nil {
			return nil, errors.New("servebench: lora-merged: a base Run while an adapter is merged")
		}
		return b.sess.Run(ctx, in)
	}
	if cur == nil {
		return nil, fmt.Errorf("servebench: lora-merged: a Run for %q with no adapter merged", string(key))
	}
	return b.sess.RunLoRA(ctx, in, cur)
}

// close releases the merged weights.
func (b *mergedBackend) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil {
		err := b.cur.Close()
		b.cur = nil
		return err
	}
	return nil
}
