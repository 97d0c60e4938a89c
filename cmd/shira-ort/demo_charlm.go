package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// charDemoOptions tune runCharDemo.
type charDemoOptions struct {
	Prompt string
	Length int
	Seed   uint64
	// Pair names the two styles fused (default legal + bofh, or the first two).
	Pair [2]string
}

// charDemoStep is one switch of the demo: the styles it activates (fused
// when several), or a revert to the base model, and its switch times.
type charDemoStep struct {
	Label  string   // its row in the switch-time table
	Name   string   // what its samples are called ("" for a revert)
	Styles []string // the styles switched in, each at alpha 1
	Revert bool     // switch back to the base model instead
	Shira  time.Duration
	Lora   time.Duration
	LoraOK bool // a LoRA checkpoint exists for every style, Lora is set
}

// charDemo is one run of the charlm demo: one live session over the
// exported text generator, the SHiRA adapters, and the steps both halves
// (SHiRA switches, then the same switches as LoRA fusion) go through.
type charDemo struct {
	ctx        context.Context
	w          io.Writer
	o          charDemoOptions
	ws         *charlm.Workspace
	sess       *ort.Session
	model      *textgen.Model
	prompt     string
	probe      []int64 // the tokens whose logits must come back bit for bit
	shira      map[string]*adapter.Adapter
	steps      []charDemoStep
	baseText   string
	baseLogits []byte
}

// runCharDemo is `shira-ort demo` on the charlm text generator: one live
// session, SHiRA switches (and the same switches as LoRA fusion), a sample
// after each.
func runCharDemo(ctx context.Context, w io.Writer, dir string, o charDemoOptions) error {
	if o.Length <= 0 {
		o.Length = 160
	}
	if o.Prompt == "" {
		o.Prompt = "\n"
	}
	t0 := time.Now()
	ws, err := charlm.Prepare(ctx, dir)
	if err != nil {
		return err
	}
	defer ws.Close()
	vocab, err := textgen.LoadVocab(ws.Vocab)
	if err != nil {
		return err
	}
	styles := charlm.Styles()
	if len(styles) < 2 {
		return fmt.Errorf("charlm: need at least two adapters, have %v", styles)
	}
	if o.Pair[0] == "" {
		o.Pair = [2]string{styles[0], styles[1]}
		if ws.Shira["legal"] != "" && ws.Shira["bofh"] != "" {
			o.Pair = [2]string{"legal", "bofh"}
		}
	}
	var params int64
	for _, t := range ws.Model.Manifest().Tensors {
		n, _ := tensor.NumElements(t.Shape)
		params += int64(n)
	}
	fmt.Fprintf(w, "charlm: character-level transformer, %d patchable weights (%d values), exported to %s\n",
		len(ws.Model.Manifest().Tensors), params, ws.Exported)
	d := &charDemo{ctx: ctx, w: w, o: o, ws: ws, shira: map[string]*adapter.Adapter{},
		prompt: strings.ReplaceAll(o.Prompt, `\n`, "\n"), probe: vocab.Encode("The GNU General Public License")}
	for _, s := range styles {
		a, err := adapter.Open(ws.Shira[s])
		if err != nil {
			return err
		}
		defer a.Close()
		d.shira[s] = a
		fmt.Fprintf(w, "  SHiRA adapter %-9s %6d values (%.2f %% of the weights), from PEFT checkpoint shira/%s\n",
			s, a.NNZ(), 100*float64(a.NNZ())/float64(params), s)
		d.steps = append(d.steps, charDemoStep{Label: "+ " + s, Name: s, Styles: []string{s}})
	}
	pair := fmt.Sprintf("%s + %s fused (α=1 each)", o.Pair[0], o.Pair[1])
	d.steps = append(d.steps, charDemoStep{Label: pair, Name: pair, Styles: o.Pair[:]},
		charDemoStep{Label: "base (revert)", Revert: true})

	if err := ort.Init(); err != nil {
		return err
	}
	if d.sess, err = ort.OpenExported(ctx, ws.Model, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive}); err != nil {
		return err
	}
	defer d.sess.Close()
	d.model = &textgen.Model{R: d.sess, Vocab: vocab}
	fmt.Fprintf(w, "ONNX Runtime %s, one live session for the whole demo (set up in %s)\n",
		ort.Version(), fmtDuration(time.Since(t0)))
	fmt.Fprintf(w, "each sample: %d characters, temperature 0.8, top-k 40, seed %d, prompt %q\n", o.Length, o.Seed, o.Prompt)

	if err := d.runShira(); err != nil {
		return err
	}
	if err := d.runLora(); err != nil {
		return err
	}
	d.printTable()
	return nil
}

// runShira samples the base model, then goes through the steps with the
// SHiRA adapters; the revert must give the base sample and logits back bit
// for bit.
func (d *charDemo) runShira() error {
	var err error
	if d.baseText, err = d.sample("base model", -1, ""); err != nil {
		return err
	}
	if d.baseLogits, err = d.logits(); err != nil {
		return err
	}
	texts := map[string]string{}
	for i := range d.steps {
		st := &d.steps[i]
		if st.Shira, err = timed(func() error { return d.switchShira(st) }); err != nil {
			return err
		}
		if st.Revert {
			if err := d.checkRevert(st.Shira); err != nil {
				return err
			}
			continue
		}
		txt, err := d.sample("SHiRA "+st.Name, st.Shira, "SHiRA")
		if err != nil {
			return err
		}
		if len(st.Styles) == 1 {
			texts[st.Styles[0]] = txt
		}
	}
	for _, s := range charlm.Styles() {
		if texts[s] == d.baseText {
			fmt.Fprintf(d.w, "   note: the %s sample equals the base sample\n", s)
		}
	}
	return nil
}

// switchShira makes st's SHiRA adapters active (or reverts).
func (d *charDemo) switchShira(st *charDemoStep) error {
	if st.Revert {
		return d.sess.Revert(d.ctx)
	}
	cfgs := make([]patch.Config, len(st.Styles))
	for i, s := range st.Styles {
		cfgs[i] = patch.Config{Adapter: d.shira[s], Alpha: 1}
	}
	return d.sess.Set(d.ctx, cfgs...)
}

// checkRevert samples the base model again after the SHiRA revert and
// fails unless text and logits equal the first base sample's.
func (d *charDemo) checkRevert(took time.Duration) error {
	again, err := d.sample("base again (revert)", took, "SHiRA")
	if err != nil {
		return err
	}
	after, err := d.logits()
	if err != nil {
		return err
	}
	if again != d.baseText || !bytes.Equal(after, d.baseLogits) {
		return fmt.Errorf("revert did not restore the base model bit for bit")
	}
	fmt.Fprintln(d.w, "   -> identical to the first base sample; logits equal bit for bit")
	return nil
}

// runLora repeats the steps with the LoRA checkpoints (dense scale*B*A
// from lora.Engine, added into the same live weights); the revert must give the
// base logits back bit for bit. A step with a style that has no LoRA
// checkpoint is skipped.
func (d *charDemo) runLora() error {
	eng, err := lora.NewEngine(&ort.Options{IntraOpThreads: 1})
	if err != nil {
		return err
	}
	defer eng.Close()
	mods := map[string][]lora.Resolved{}
	for s, dir := range d.ws.Lora {
		ck, err := peft.Open(dir)
		if err != nil {
			return err
		}
		lm, err := ck.Lora()
		if err != nil {
			return err
		}
		if mods[s], err = lora.Resolve(lm, d.ws.Model); err != nil {
			return err
		}
	}
	kernel, blasErr := lora.BLAS()
	if blasErr != nil {
		kernel = "ONNX Runtime (no BLAS library: " + blasErr.Error() + ")"
	}
	fmt.Fprintf(d.w, "\nThe same switches as LoRA fusion (r=1 LoRA adapters with the same parameter count; scale*B*A of every\n"+
		"weight computed by %s, then added densely into the same session's weights):\n", kernel)
	idx := denseIndices(d.ws.Model.Manifest())
	for i := range d.steps {
		st := &d.steps[i]
		if st.Revert {
			if st.Lora, err = timed(func() error { return d.sess.Revert(d.ctx) }); err != nil {
				return err
			}
			st.LoraOK = true
			after, err := d.logits()
			if err != nil {
				return err
			}
			if !bytes.Equal(after, d.baseLogits) {
				return fmt.Errorf("revert after LoRA fusion did not restore the base logits bit for bit")
			}
			continue
		}
		if !hasAll(mods, st.Styles) {
			continue
		}
		st.Lora, err = timed(func() error {
			var cfgs []patch.Config
			for _, s := range st.Styles {
				a, err := loraDense(d.ctx, eng, mods[s], d.ws.Model.Manifest(), idx)
				if err != nil {
					return err
				}
				cfgs = append(cfgs, patch.Config{Adapter: a, Alpha: 1})
			}
			return d.sess.Set(d.ctx, cfgs...)
		})
		if err != nil {
			return err
		}
		st.LoraOK = true
		if _, err := d.sample("LoRA "+st.Name, st.Lora, "LoRA"); err != nil {
			return err
		}
	}
	return nil
}

// printTable prints the switch times of both halves.
func (d *charDemo) printTable() {
	fmt.Fprintf(d.w, "\n%-36s %12s %12s\n", "switch to", "SHiRA", "LoRA fusion")
	missing := false
	for _, st := range d.steps {
		l := "-"
		if st.LoraOK {
			l = fmtDuration(st.Lora)
		}
		missing = missing || !st.LoraOK
		fmt.Fprintf(d.w, "%-36s %12s %12s\n", st.Label, fmtDuration(st.Shira), l)
	}
	if missing {
		fmt.Fprintln(d.w, "(-: no LoRA checkpoint for that style)")
	}
	fmt.Fprintln(d.w, "(the first switch of a session also pays the copy-on-write faults of the weight pages it touches)")
	fmt.Fprintln(d.w, "\nOne session throughout; every revert restored the base logits bit for bit.")
}

// sample prints a header (with the switch time when took >= 0) and streams
// a sample of the current configuration, indented; it returns the text.
func (d *charDemo) sample(label string, took time.Duration, kind string) (string, error) {
	if took >= 0 {
		fmt.Fprintf(d.w, "\n== %s   (%s switch %s)\n", label, kind, fmtDuration(took))
	} else {
		fmt.Fprintf(d.w, "\n== %s\n", label)
	}
	iw := &indentWriter{w: d.w, prefix: "   | "}
	iw.WriteString("")
	txt, err := d.model.Generate(d.ctx, d.prompt, d.o.Length, textgen.SampleOptions{Temperature: 0.8, TopK: 40, Seed: d.o.Seed},
		func(s string) error { return iw.WriteString(s) })
	fmt.Fprintln(d.w)
	return txt, err
}

// logits returns the raw bytes of the current configuration's logits for
// the probe text.
func (d *charDemo) logits() ([]byte, error) {
	l, _, err := d.model.Logits(d.ctx, d.probe)
	if err != nil {
		return nil, err
	}
	return tensor.Bytes(l), nil
}

// timed runs f and returns how long it took.
func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// hasAll reports whether mods has every style.
func hasAll(mods map[string][]lora.Resolved, styles []string) bool {
	for _, s := range styles {
		if _, ok := mods[s]; !ok {
			return false
		}
	}
	return true
}

// denseIndices holds 0..n-1 for every exposed tensor size (shared, read-only).
func denseIndices(m *export.Manifest) map[int][]uint32 {
	out := map[int][]uint32{}
	for _, t := range m.Tensors {
		n, _ := tensor.NumElements(t.Shape)
		if _, ok := out[n]; !ok {
			ix := make([]uint32, n)
			for i := range ix {
				ix[i] = uint32(i)
			}
			out[n] = ix
		}
	}
	return out
}

// loraDense turns LoRA modules into a dense delta adapter: scale*B*A for
// every resolved weight, computed by lora.Engine (BLAS, or ORT without one), touching every entry.
// Applied with patch (delta semantics) it is exactly LoRA fusion, W += scale*B*A,
// and Revert restores the saved originals.
func loraDense(ctx context.Context, e *lora.Engine, mods []lora.Resolved, m *export.Manifest, idx map[int][]uint32) (*adapter.Adapter, error) {
	a := &adapter.Adapter{Name: "lora", DefaultAlpha: 1, Semantics: adapter.Delta, ModelFingerprint: m.Fingerprint}
	for i := range mods {
		r := &mods[i]
		d, err := e.Delta(ctx, &r.Module, r.Target.Layout)
		if err != nil {
			return nil, err
		}
		ent := r.Target.Entry
		if len(d) != len(idx[len(d)]) {
			return nil, fmt.Errorf("lora: %s: delta has %d values", ent.Name, len(d))
		}
		a.Tensors = append(a.Tensors, adapter.Tensor{Name: ent.Name, DType: ent.DType, ValueDType: tensor.Float32,
			Shape: ent.Shape, Indices: idx[len(d)], Values: tensor.Bytes(d)})
	}
	return a, nil
}

// indentWriter prefixes every line it writes.
type indentWriter struct {
	w       io.Writer
	prefix  string
	started bool
}

// WriteString writes s, starting each line with the prefix.
func (iw *indentWriter) WriteString(s string) error {
	if !iw.started {
		iw.started = true
		if _, err := io.WriteString(iw.w, iw.prefix); err != nil {
			return err
		}
	}
	for _, r := range s {
		if _, err := io.WriteString(iw.w, string(r)); err != nil {
			return err
		}
		if r == '\n' {
			if _, err := io.WriteString(iw.w, iw.prefix); err != nil {
				return err
			}
		}
	}
	return nil
}
