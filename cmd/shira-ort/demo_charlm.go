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

// charDemoStep is one configuration of the demo with its switch time.
type charDemoStep struct {
	Label  string
	Shira  time.Duration
	Lora   time.Duration
	LoraOK bool
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
	as := map[string]*adapter.Adapter{}
	for _, s := range styles {
		a, err := adapter.Open(ws.Shira[s])
		if err != nil {
			return err
		}
		defer a.Close()
		as[s] = a
		fmt.Fprintf(w, "  SHiRA adapter %-9s %6d values (%.2f %% of the weights), from PEFT checkpoint shira/%s\n",
			s, a.NNZ(), 100*float64(a.NNZ())/float64(params), s)
	}
	if err := ort.Init(); err != nil {
		return err
	}
	sess, err := ort.OpenExported(ctx, ws.Model, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		return err
	}
	defer sess.Close()
	fmt.Fprintf(w, "ONNX Runtime %s, one live session for the whole demo (set up in %s)\n",
		ort.Version(), fmtDuration(time.Since(t0)))
	fmt.Fprintf(w, "each sample: %d characters, temperature 0.8, top-k 40, seed %d, prompt %q\n", o.Length, o.Seed, o.Prompt)

	model := &textgen.Model{R: sess, Vocab: vocab}
	prompt := strings.ReplaceAll(o.Prompt, `\n`, "\n")
	probe := vocab.Encode("The GNU General Public License")
	sample := func(label string, took time.Duration, kind string) (string, error) {
		if took >= 0 {
			fmt.Fprintf(w, "\n== %s   (%s switch %s)\n", label, kind, fmtDuration(took))
		} else {
			fmt.Fprintf(w, "\n== %s\n", label)
		}
		iw := &indentWriter{w: w, prefix: "   | "}
		iw.WriteString("")
		txt, err := model.Generate(ctx, prompt, o.Length, textgen.SampleOptions{Temperature: 0.8, TopK: 40, Seed: o.Seed},
			func(s string) error { return iw.WriteString(s) })
		fmt.Fprintln(w)
		return txt, err
	}
	logits := func() ([]byte, error) {
		l, _, err := model.Logits(ctx, probe)
		if err != nil {
			return nil, err
		}
		return tensor.Bytes(l), nil
	}

	baseText, err := sample("base model", -1, "")
	if err != nil {
		return err
	}
	baseLogits, err := logits()
	if err != nil {
		return err
	}
	var steps []charDemoStep
	timed := func(f func() error) (time.Duration, error) {
		start := time.Now()
		err := f()
		return time.Since(start), err
	}
	texts := map[string]string{}
	for _, s := range styles {
		took, err := timed(func() error { return sess.Set(ctx, patch.Config{Adapter: as[s], Alpha: 1}) })
		if err != nil {
			return err
		}
		steps = append(steps, charDemoStep{Label: "+ " + s, Shira: took})
		if texts[s], err = sample("SHiRA "+s, took, "SHiRA"); err != nil {
			return err
		}
	}
	pairLabel := fmt.Sprintf("%s + %s fused (α=1 each)", o.Pair[0], o.Pair[1])
	took, err := timed(func() error {
		return sess.Set(ctx, patch.Config{Adapter: as[o.Pair[0]], Alpha: 1}, patch.Config{Adapter: as[o.Pair[1]], Alpha: 1})
	})
	if err != nil {
		return err
	}
	steps = append(steps, charDemoStep{Label: pairLabel, Shira: took})
	if _, err := sample("SHiRA "+pairLabel, took, "SHiRA"); err != nil {
		return err
	}
	took, err = timed(func() error { return sess.Revert(ctx) })
	if err != nil {
		return err
	}
	steps = append(steps, charDemoStep{Label: "base (revert)", Shira: took})
	again, err := sample("base again (revert)", took, "SHiRA")
	if err != nil {
		return err
	}
	after, err := logits()
	if err != nil {
		return err
	}
	if again != baseText || !bytes.Equal(after, baseLogits) {
		return fmt.Errorf("revert did not restore the base model bit for bit")
	}
	fmt.Fprintln(w, "   -> identical to the first base sample; logits equal bit for bit")
	for s, t := range texts {
		if t == baseText {
			fmt.Fprintf(w, "   note: the %s sample equals the base sample\n", s)
		}
	}

	if err := runCharDemoLora(ctx, w, sess, ws, o, steps, sample, logits, baseLogits); err != nil {
		return err
	}
	return nil
}

// runCharDemoLora repeats the switches with the LoRA checkpoints (dense
// scale*B*A from ORT, added into the same live weights) and prints the
// switch-time table.
func runCharDemoLora(ctx context.Context, w io.Writer, sess *ort.Session, ws *charlm.Workspace, o charDemoOptions, steps []charDemoStep,
	sample func(string, time.Duration, string) (string, error), logits func() ([]byte, error), baseLogits []byte) error {
	var loraNote string
	eng, err := lora.NewEngine(&ort.Options{IntraOpThreads: 1})
	if err != nil {
		return err
	}
	defer eng.Close()
	mods := map[string][]lora.Resolved{}
	for s, dir := range ws.Lora {
		ck, err := peft.Open(dir)
		if err != nil {
			return err
		}
		lm, err := ck.Lora()
		if err != nil {
			return err
		}
		if mods[s], err = lora.Resolve(lm, ws.Model); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\nThe same switches as LoRA fusion (r=1 LoRA adapters with the same parameter count; ORT computes\n"+
		"scale*B*A for every weight, which is then added densely into the same live session's weights):\n")
	idx := denseIndices(ws.Model.Manifest())
	loraSwitch := func(styles ...string) (time.Duration, error) {
		start := time.Now()
		var cfgs []patch.Config
		for _, s := range styles {
			a, err := loraDense(ctx, eng, mods[s], ws.Model.Manifest(), idx)
			if err != nil {
				return 0, err
			}
			cfgs = append(cfgs, patch.Config{Adapter: a, Alpha: 1})
		}
		if err := sess.Set(ctx, cfgs...); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	for i := range steps {
		st := &steps[i]
		var styles []string
		switch {
		case st.Label == "base (revert)":
			took, err := timedRevert(ctx, sess)
			if err != nil {
				return err
			}
			st.Lora, st.LoraOK = took, true
			after, err := logits()
			if err != nil {
				return err
			}
			if !bytes.Equal(after, baseLogits) {
				return fmt.Errorf("revert after LoRA fusion did not restore the base logits bit for bit")
			}
			continue
		case strings.HasPrefix(st.Label, "+ "):
			styles = []string{strings.TrimPrefix(st.Label, "+ ")}
		default:
			styles = o.Pair[:]
		}
		ok := true
		for _, s := range styles {
			if _, has := mods[s]; !has {
				ok = false
			}
		}
		if !ok {
			loraNote = "(-: no LoRA checkpoint for that style)"
			continue
		}
		took, err := loraSwitch(styles...)
		if err != nil {
			return err
		}
		st.Lora, st.LoraOK = took, true
		if _, err := sample("LoRA "+strings.TrimPrefix(st.Label, "+ "), took, "LoRA"); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\n%-36s %12s %12s\n", "switch to", "SHiRA", "LoRA fusion")
	for _, st := range steps {
		l := "-"
		if st.LoraOK {
			l = fmtDuration(st.Lora)
		}
		fmt.Fprintf(w, "%-36s %12s %12s\n", st.Label, fmtDuration(st.Shira), l)
	}
	if loraNote != "" {
		fmt.Fprintln(w, loraNote)
	}
	fmt.Fprintln(w, "(the first switch of a session also pays the copy-on-write faults of the weight pages it touches)")
	fmt.Fprintln(w, "\nOne session throughout; every revert restored the base logits bit for bit.")
	return nil
}

func timedRevert(ctx context.Context, sess *ort.Session) (time.Duration, error) {
	start := time.Now()
	err := sess.Revert(ctx)
	return time.Since(start), err
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
// every resolved weight, computed by ORT (lora.Engine), touching every entry.
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
