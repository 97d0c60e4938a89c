package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/synth"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// newDemoCmd is `shira-ort demo`: the charlm demo, or the tiny-MLP one.
func newDemoCmd() *cobra.Command {
	var (
		keep, model, prompt string
		length              int
		seed                uint64
	)
	cmd := &cobra.Command{
		Use:   "demo [--model charlm|tiny]",
		Short: "Switch SHiRA adapters in and out of one live session: a text generator changes style in milliseconds",
		Long: `demo (default --model charlm) exports the shipped character-level language model
(models/charlm), converts its PEFT SHiRA checkpoints (one per style of text: licenses, BOFH
excuses, fortunes, man pages) to .shira adapters, opens ONE live ONNX Runtime session and
generates a sample from the base model, from each adapter, from a fused pair and from the base
again after revert, printing the time of each switch. The same switches are then done as LoRA
fusion (adapters of the same parameter count: dense scale*B*A computed by OpenBLAS, or by ORT
without it, and added to the weights) for comparison.

--model tiny runs the original demo on the tiny MLP: two random adapters, outputs and switch
times. Nothing is downloaded beyond the set-up step.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := keep
			if dir == "" {
				tmp, err := os.MkdirTemp("", "shira-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			switch model {
			case "tiny":
				return runDemo(cmd.Context(), cmd.OutOrStdout(), dir)
			case "charlm", "":
				return runCharDemo(cmd.Context(), cmd.OutOrStdout(), dir, charDemoOptions{Prompt: prompt, Length: length, Seed: seed})
			default:
				return fmt.Errorf("--model %q: want charlm or tiny", model)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&keep, "workdir", "", "keep the exported model and adapters in this directory")
	f.StringVar(&model, "model", "charlm", "demo model: charlm (text generator) or tiny (MLP)")
	f.StringVar(&prompt, "prompt", "", "charlm: text each sample continues (default: a newline)")
	f.IntVarP(&length, "length", "n", 160, "charlm: characters per sample")
	f.Uint64Var(&seed, "seed", 7, "charlm: sampling seed (the same for every sample)")
	return cmd
}

// runDemo is `shira-ort demo --model tiny`: two random adapters switched in
// one live session over the tiny MLP, and a bit-exact revert.
func runDemo(ctx context.Context, w io.Writer, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	src := filepath.Join(dir, "tiny.onnx")
	if err := os.WriteFile(src, models.Tiny, 0o644); err != nil {
		return err
	}
	exported := filepath.Join(dir, "tiny")
	if _, err := export.Expose(ctx, src, exported, export.Options{}); err != nil {
		return err
	}
	m, err := export.Open(exported)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(w, "exported models/tiny: %d patchable weights -> %s\n", len(m.Manifest().Tensors), exported)
	weights, err := m.ReadWeights(ctx)
	if err != nil {
		return err
	}
	var as []*adapter.Adapter
	for _, o := range []synth.Options{
		{Name: "A (random mask)", Mask: synth.MaskRandom, Density: 0.02, Scale: 0.8, Seed: 11, Semantics: adapter.Delta},
		{Name: "B (weight-magnitude mask)", Mask: synth.MaskWeightMagnitude, Density: 0.02, Scale: 0.8, Seed: 12, Semantics: adapter.Delta},
	} {
		a, err := synth.New(m.Manifest(), weights, o)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, fmt.Sprintf("%c.shira", 'a'+len(as)))
		if err := writeAdapter(path, a, adapter.DefaultIndexEncoding); err != nil {
			return err
		}
		if a, err = adapter.Open(path); err != nil {
			return err
		}
		defer a.Close()
		fmt.Fprintf(w, "created adapter %-28s %4d values (2%% of each weight) -> %s\n", a.Name, a.NNZ(), path)
		as = append(as, a)
	}

	if err := ort.Init(); err != nil {
		return err
	}
	fmt.Fprintf(w, "ONNX Runtime %s, one live session for the whole demo\n\n", ort.Version())
	sess, err := ort.OpenExported(ctx, m, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		return err
	}
	defer sess.Close()

	x := make([]float32, 16)
	for i := range x {
		x[i] = float32(i%5)*0.25 - 0.5
	}
	in, err := tensor.FromFloat32([]int64{1, 16}, x)
	if err != nil {
		return err
	}
	run := func() ([]byte, []float32, error) {
		outs, err := sess.Run(ctx, map[string]*tensor.Tensor{"x": in})
		if err != nil {
			return nil, nil, err
		}
		y, err := outs["y"].AsFloat32()
		return outs["y"].Data, y, err
	}
	baseBytes, y, err := run()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-34s %10s   y[0, :]\n", "configuration", "switch")
	fmt.Fprintf(w, "%-34s %10s   %s\n", "base", "-", fmtVec(y))
	steps := []struct {
		label string
		cfgs  []patch.Config
	}{
		{"A", []patch.Config{{Adapter: as[0], Alpha: 1}}},
		{"B", []patch.Config{{Adapter: as[1], Alpha: 1}}},
		{"A*0.5 + B*0.5 (fused)", []patch.Config{{Adapter: as[0], Alpha: 0.5}, {Adapter: as[1], Alpha: 0.5}}},
		{"base (revert)", nil},
	}
	for _, s := range steps {
		start := time.Now()
		if s.cfgs == nil {
			err = sess.Revert(ctx)
		} else {
			err = sess.Set(ctx, s.cfgs...)
		}
		took := time.Since(start)
		if err != nil {
			return err
		}
		out, y, err := run()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%-34s %10s   %s\n", s.label, fmtDuration(took), fmtVec(y))
		if s.cfgs == nil {
			if !bytes.Equal(out, baseBytes) {
				return fmt.Errorf("revert did not restore the base outputs bit for bit")
			}
			fmt.Fprintln(w, "\nrevert restored the base outputs bit for bit; the session was never re-created.")
		}
	}
	return nil
}

// fmtVec renders a vector with three decimals and signs.
func fmtVec(v []float32) string {
	parts := make([]string, len(v))
	for i, f := range v {
		parts[i] = fmt.Sprintf("%+.3f", f)
	}
	return strings.Join(parts, " ")
}

// fmtDuration renders a switch time in µs below a millisecond, else in ms.
func fmtDuration(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3)
	}
	return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6)
}
