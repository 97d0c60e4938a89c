package servebench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/lorabranch"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// The kinds of reference outputs.
const (
	refShira = "shira" // the SHiRA adapter fused offline
	// refShiraUnpacked is refShira run without prepacking
	// (session.disable_prepacking): the kernels a live session runs, whose
	// exposed weights are graph inputs ORT does not prepack. Unpacked,
	// MLAS computes a single row differently from a row of a larger batch
	// (bitwise), so a live response must equal one of the two.
	refShiraUnpacked = "shira-unpacked"
	refLoRA          = "lora" // the LoRA adapter merged offline
	refBase          = "base" // the original model
)

// refKind is the reference a strategy's responses are checked against.
func refKind(strategy string) string {
	switch strategy {
	case OrtLoRA, LoraMerged:
		return refLoRA
	case Base:
		return refBase
	case ShiraLive:
		return refShiraUnpacked
	}
	return refShira
}

// loraRelTol is the tolerance of ort-lora's outputs against the merged
// model: |got − want| ≤ loraRelTol · max|want| over the output. Per-run
// LoRA computes X·W + (X·A)·B where the merged model computes X·(W + A·B):
// the same value rounded differently.
const loraRelTol = 1e-3

// refs computes and caches the expected outputs: for every (kind,
// adapter), the output of a plain ORT session of the offline-fused
// standalone model for every input of the request pool (MLP: the output
// tensor's bytes; charlm: the greedy completion's text).
type refs struct {
	m    *model
	opts *ort.Options

	mu  sync.Mutex
	out map[refKey][][]byte
	// batched holds, for refShiraUnpacked (MLP), each input's output as
	// row 0 of a batch of two.
	batched map[refKey][][]byte
	// scale is max|want| per (kind, adapter) (MLP), for the tolerance.
	scale map[refKey]float64
}

type refKey struct {
	kind    string
	adapter int // -1 for base
}

func newRefs(m *model, opts *ort.Options) *refs {
	return &refs{m: m, opts: opts, out: map[refKey][][]byte{}, batched: map[refKey][][]byte{}, scale: map[refKey]float64{}}
}

// get returns the expected outputs of (kind, adapter) for the whole pool.
func (r *refs) get(ctx context.Context, kind string, adapterIdx int) ([][]byte, float64, error) {
	out, _, scale, err := r.get2(ctx, kind, adapterIdx)
	return out, scale, err
}

// get2 is get with the batched outputs (nil but for refShiraUnpacked on
// the MLP).
func (r *refs) get2(ctx context.Context, kind string, adapterIdx int) (out, batched [][]byte, scale float64, err error) {
	if kind == refBase {
		adapterIdx = -1
	}
	k := refKey{kind, adapterIdx}
	r.mu.Lock()
	defer r.mu.Unlock()
	if out, ok := r.out[k]; ok {
		return out, r.batched[k], r.scale[k], nil
	}
	out, batched, err = r.compute(ctx, k)
	if err != nil {
		return nil, nil, 0, err
	}
	if r.m.kserve() {
		for _, o := range out {
			for _, f := range tensor.Float32s(o) {
				scale = max(scale, math.Abs(float64(f)))
			}
		}
	}
	r.out[k], r.batched[k], r.scale[k] = out, batched, scale
	return out, batched, scale, nil
}

// compute builds the reference model of k and runs the pool on it.
func (r *refs) compute(ctx context.Context, k refKey) (out, batched [][]byte, err error) {
	m := r.m
	path := m.src
	if k.kind != refBase {
		var weights map[string][]byte
		switch k.kind {
		case refShira, refShiraUnpacked:
			a, err := adapter.Open(m.shiraPath(k.adapter))
			if err != nil {
				return nil, nil, fmt.Errorf("servebench: %w", err)
			}
			weights, err = m.em.Fuse(ctx, []patch.Config{patch.Default(a)})
			a.Close()
			if err != nil {
				return nil, nil, fmt.Errorf("servebench: fusing %s: %w", adapterName(k.adapter), err)
			}
		case refLoRA:
			ps, err := m.loraParams(k.adapter)
			if err != nil {
				return nil, nil, err
			}
			if weights, err = m.em.ReadWeights(ctx); err != nil {
				return nil, nil, fmt.Errorf("servebench: %w", err)
			}
			if err := lorabranch.Merge(weights, ps); err != nil {
				return nil, nil, fmt.Errorf("servebench: merging %s: %w", adapterName(k.adapter), err)
			}
		}
		path = filepath.Join(m.tmp, "reference.onnx")
		if err := m.em.WriteStandalone(ctx, weights, path); err != nil {
			return nil, nil, fmt.Errorf("servebench: %w", err)
		}
		defer os.Remove(path)
		defer os.Remove(path + ".data")
	}
	opts := *r.opts
	if k.kind == refShiraUnpacked {
		opts.SessionConfig = maps.Clone(opts.SessionConfig)
		if opts.SessionConfig == nil {
			opts.SessionConfig = map[string]string{}
		}
		opts.SessionConfig["session.disable_prepacking"] = "1"
	}
	sess, err := ort.OpenModel(ctx, path, &opts)
	if err != nil {
		return nil, nil, fmt.Errorf("servebench: reference session: %w", err)
	}
	defer sess.Close()
	out = make([][]byte, m.poolSize())
	if m.kserve() && k.kind == refShiraUnpacked {
		batched = make([][]byte, m.poolSize())
	}
	for i := range out {
		if m.kserve() {
			res, err := sess.Run(ctx, map[string]*tensor.Tensor{m.inName: m.inputs[i]})
			if err != nil {
				return nil, nil, fmt.Errorf("servebench: reference run: %w", err)
			}
			out[i] = bytes.Clone(res[m.outName].Data)
			if batched != nil {
				other := m.inputs[(i+1)%len(m.inputs)]
				x, err := tensor.New(tensor.Float32, []int64{2, other.Shape[1]}, append(bytes.Clone(m.inputs[i].Data), other.Data...))
				if err != nil {
					return nil, nil, err
				}
				res, err := sess.Run(ctx, map[string]*tensor.Tensor{m.inName: x})
				if err != nil {
					return nil, nil, fmt.Errorf("servebench: reference run: %w", err)
				}
				batched[i] = bytes.Clone(res[m.outName].Data[:len(out[i])])
			}
		} else {
			tm := &textgen.Model{R: sess, Vocab: m.vocab, Input: m.inName, Output: m.outName}
			text, err := tm.Generate(ctx, m.prompts[i], m.tokens.Max, textgen.SampleOptions{Temperature: 0}, nil)
			if err != nil {
				return nil, nil, fmt.Errorf("servebench: reference generation: %w", err)
			}
			out[i] = []byte(text)
		}
	}
	return out, batched, nil
}

// parseID reads "<adapter>/<input>".
func parseID(id string) (adapterIdx, input int, ok bool) {
	a, in, found := strings.Cut(id, "/")
	if !found {
		return 0, 0, false
	}
	ai, ok := adapterIndex(a)
	if !ok {
		return 0, 0, false
	}
	ii, err := strconv.Atoi(in)
	if err != nil || ii < 0 {
		return 0, 0, false
	}
	return ai, ii, true
}

// kept is a successful response kept for verification.
type kept struct {
	url  string
	body []byte
}

// verifyResult is the verification of a run's responses.
type verifyResult struct {
	verified, wrong int
	maxDiff         float64
	firstWrong      string
}

func (v *verifyResult) fail(format string, args ...any) {
	v.wrong++
	if v.firstWrong == "" {
		v.firstWrong = fmt.Sprintf(format, args...)
	}
}

// verify checks every kept response of strategy against its reference.
func (r *refs) verify(ctx context.Context, strategy string, responses []kept) (verifyResult, error) {
	var v verifyResult
	kind := refKind(strategy)
	for _, resp := range responses {
		v.verified++
		if r.m.kserve() {
			var body struct {
				ID      string `json:"id"`
				Outputs []struct {
					Name string    `json:"name"`
					Data []float32 `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(resp.body, &body); err != nil {
				v.fail("unreadable response: %v", err)
				continue
			}
			ai, in, ok := parseID(body.ID)
			if !ok || in >= r.m.poolSize() || len(body.Outputs) != 1 || body.Outputs[0].Name != r.m.outName {
				v.fail("response id %q or outputs do not match a request", body.ID)
				continue
			}
			want, batched, scale, err := r.get2(ctx, kind, ai)
			if err != nil {
				return v, err
			}
			exp := tensor.Float32s(want[in])
			if batched != nil && bytes.Equal(tensor.Bytes(body.Outputs[0].Data), batched[in]) {
				exp = tensor.Float32s(batched[in]) // computed in a batch
			}
			got := body.Outputs[0].Data
			if len(got) != len(exp) {
				v.fail("%s: %d values, want %d", body.ID, len(got), len(exp))
				continue
			}
			diff := 0.0
			bitwise := true
			for j := range exp {
				if math.Float32bits(got[j]) != math.Float32bits(exp[j]) {
					bitwise = false
				}
				diff = max(diff, math.Abs(float64(got[j])-float64(exp[j])))
			}
			if math.IsNaN(diff) {
				diff = math.Inf(1)
			}
			v.maxDiff = max(v.maxDiff, diff)
			if kind == refLoRA {
				if diff > loraRelTol*scale {
					v.fail("%s: max difference %g > %g", body.ID, diff, loraRelTol*scale)
				}
			} else if !bitwise {
				v.fail("%s: not bitwise equal (max difference %g)", body.ID, diff)
			}
			continue
		}
		u, err := url.Parse(resp.url)
		if err != nil {
			v.fail("bad URL %q", resp.url)
			continue
		}
		id := u.Query().Get("id")
		ai, in, ok := parseID(id)
		if !ok || in >= r.m.poolSize() {
			v.fail("request id %q does not match a request", id)
			continue
		}
		var body struct {
			Model   string `json:"model"`
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Choices) != 1 {
			v.fail("%s: unreadable completion (%v)", id, err)
			continue
		}
		if body.Model != adapterName(ai) {
			v.fail("%s: answered for model %q", id, body.Model)
			continue
		}
		want, _, err := r.get(ctx, kind, ai)
		if err != nil {
			return v, err
		}
		// The reference has the longest completion's characters (one per
		// token); a shorter greedy completion is its prefix.
		n, err := strconv.Atoi(u.Query().Get("tokens"))
		if exp := []rune(string(want[in])); err != nil || n < 1 || n > len(exp) {
			v.fail("%s: bad token count %q", id, u.Query().Get("tokens"))
		} else if got := body.Choices[0].Text; got != string(exp[:n]) {
			v.fail("%s: completion %q, want %q", id, got, string(exp[:n]))
		}
	}
	return v, nil
}

// discrimination returns, for the LoRA references of adapters, the
// smallest max difference to the base reference over the pool relative to
// the tolerance: above 1 means a response computed without the adapter
// would fail the check.
func (r *refs) discrimination(ctx context.Context, adapters []int) (float64, error) {
	base, _, err := r.get(ctx, refBase, -1)
	if err != nil {
		return 0, err
	}
	worst := math.Inf(1)
	for _, ai := range adapters {
		want, scale, err := r.get(ctx, refLoRA, ai)
		if err != nil {
			return 0, err
		}
		for i := range want {
			d := 0.0
			e, b := tensor.Float32s(want[i]), tensor.Float32s(base[i])
			for j := range e {
				d = max(d, math.Abs(float64(e[j])-float64(b[j])))
			}
			worst = min(worst, d/(loraRelTol*scale))
		}
	}
	return worst, nil
}

// textDiscrimination counts, over the charlm references computed so far
// (adapters × prompts, every kind but base), the completions that differ
// from the base model's: a response computed without its adapter (or, as
// likely, with another one) is detected only for those.
func (r *refs) textDiscrimination(ctx context.Context) (differ, total int, err error) {
	base, _, err := r.get(ctx, refBase, -1)
	if err != nil {
		return 0, 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, out := range r.out {
		if k.kind == refBase {
			continue
		}
		for i := range out {
			total++
			if !bytes.Equal(out[i], base[i]) {
				differ++
			}
		}
	}
	return differ, total, nil
}
