package patch

import (
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/closest"
)

// plan validates cfgs and fills every weight's next entries. It writes no
// weight data; on error the next entries are garbage (cur is untouched).
func (p *Patcher) plan(cfgs []Config) error {
	for i := range p.weights {
		p.weights[i].next = p.weights[i].next[:0]
	}
	for k, c := range cfgs {
		a := c.Adapter
		if a == nil {
			return fmt.Errorf("%w: config %d has no adapter", ErrConfig, k)
		}
		if f := float64(c.Alpha); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: adapter %s: alpha %v is not finite", ErrConfig, closest.Quote(a.Name), c.Alpha)
		}
		if a.Semantics != adapter.Overwrite && a.Semantics != adapter.Delta {
			return fmt.Errorf("%w: adapter %s: unknown semantics %v", ErrConfig, closest.Quote(a.Name), a.Semantics)
		}
		if fp := p.opts.modelFingerprint; fp != "" && a.ModelFingerprint != "" && !p.opts.noFingerprint && !strings.EqualFold(fp, a.ModelFingerprint) {
			return fmt.Errorf("%w: adapter %s was made for model %s, this model is %s", ErrFingerprint, closest.Quote(a.Name), closest.Elide(a.ModelFingerprint), fp)
		}
		for ti := range a.Tensors {
			t := &a.Tensors[ti]
			if err := p.planTensor(a, t, c.Alpha); err != nil {
				return fmt.Errorf("adapter %s tensor %s: %w", closest.Quote(a.Name), closest.Quote(t.Name), err)
			}
		}
	}
	return p.planQuants() // the codes of quantized weights, computed and checked here
}

func (p *Patcher) planTensor(a *adapter.Adapter, t *adapter.Tensor, alpha float32) error {
	wi, ok := p.byName[t.Name]
	if !ok {
		return fmt.Errorf("%w: no weight named %s%s", ErrUnknownTarget, closest.Quote(t.Name), p.candidates(t.Name))
	}
	ws := &p.weights[wi]
	if t.DType != ws.DType {
		return fmt.Errorf("%w: adapter made for dtype %v, weight is %v", ErrMismatch, t.DType, ws.DType)
	}
	if !slices.Equal(t.Shape, ws.Shape) {
		return fmt.Errorf("%w: adapter made for shape %v, weight is %v", ErrMismatch, t.Shape, ws.Shape)
	}
	if !p.opts.noFingerprint && t.HasBase() && ws.BaseSHA256 != [32]byte{} && t.BaseSHA256 != ws.BaseSHA256 {
		return fmt.Errorf("%w: adapter made for base sha256 %s, weight is %s", ErrFingerprint,
			hex.EncodeToString(t.BaseSHA256[:]), hex.EncodeToString(ws.BaseSHA256[:]))
	}
	if n := len(ws.next); n > 0 && ws.next[n-1].owner == a && ws.next[n-1].t != t {
		return fmt.Errorf("%w: adapter has two tensors for this weight", ErrConfig)
	}
	if err := t.Validate(); err != nil { // dtypes, sizes, alignment, sorted, in range
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	ws.next = append(ws.next, entry{t: t, alpha: alpha, sem: a.Semantics, owner: a})
	return nil
}

// candidates lists up to three weight names close to name, for messages.
// Similar means within max(3, len(name)/3) edits, or containing name or
// contained in it.
func (p *Patcher) candidates(name string) string {
	all := make([]string, len(p.weights))
	for i := range p.weights {
		all[i] = p.weights[i].Name
	}
	limit := max(3, len(name)/3)
	var names []string
	for _, m := range closest.Rank(name, all) {
		if len(names) < 3 && (m.Distance <= limit || strings.Contains(m.Name, name) || strings.Contains(name, m.Name)) {
			names = append(names, closest.Quote(m.Name))
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf(" (%d weights, none similar)", len(p.weights))
	}
	return " (did you mean " + strings.Join(names, ", ") + "?)"
}
