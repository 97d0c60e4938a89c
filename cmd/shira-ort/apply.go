package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
)

func newApplyCmd() *cobra.Command {
	var (
		model, out string
		adapters   []string
		force      bool
	)
	cmd := &cobra.Command{
		Use:   "apply --model DIR --adapter A.shira[:ALPHA]... -o FUSED.onnx",
		Short: "Fuse adapters offline into a self-contained ONNX model that plain ONNX Runtime loads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || out == "" || len(adapters) == 0 {
				return fmt.Errorf("--model DIR, at least one --adapter and -o FUSED.onnx are required")
			}
			fm, err := loadFused(model, adapters, force)
			if err != nil {
				return err
			}
			if err := export.WriteStandalone(model, fm.m, fm.weights, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fused %d adapter(s) in %v, wrote %s\n", fm.adapters, fm.took.Round(time.Microsecond), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "exported model directory")
	cmd.Flags().StringArrayVar(&adapters, "adapter", nil, "adapter file, optionally with :ALPHA (repeatable)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "output ONNX file")
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	return cmd
}

// forceUsage documents --force for apply and run.
const forceUsage = "apply adapters made for another base model (model fingerprint or base weight sha256 mismatch); names, dtypes, shapes and index bounds are still checked"

// fusedModel is an exported model's manifest and weights with adapters
// fused in memory.
type fusedModel struct {
	m        *export.Manifest
	weights  map[string][]byte
	touched  map[string]bool // the exposed weights the adapters write
	adapters int
	took     time.Duration // the fusion alone
}

// loadFused reads the exported model in dir and fuses the adapters named
// by the --adapter flags into its weights (see fuse); the adapter files
// are closed again before it returns.
func loadFused(dir string, adapterFlags []string, force bool) (*fusedModel, error) {
	m, err := export.LoadManifest(dir)
	if err != nil {
		return nil, err
	}
	cfgs, closeAdapters, err := openAdapters(adapterFlags, nil)
	if err != nil {
		return nil, err
	}
	defer closeAdapters()
	weights, err := export.ReadWeights(dir, m)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := fuse(m, weights, cfgs, force); err != nil {
		return nil, err
	}
	fm := &fusedModel{m: m, weights: weights, touched: map[string]bool{}, adapters: len(cfgs), took: time.Since(start)}
	for _, c := range cfgs {
		for i := range c.Adapter.Tensors {
			fm.touched[c.Adapter.Tensors[i].Name] = true
		}
	}
	return fm, nil
}

// fuse applies cfgs to the in-memory weights with the same code a live
// session uses, so the fused model matches the live session bit for bit.
// Like a live session it refuses an adapter made for another model (its
// model fingerprint or a weight's base sha256 differs) unless force is set.
func fuse(m *export.Manifest, weights map[string][]byte, cfgs []patch.Config, force bool) error {
	ws := make([]patch.Weight, 0, len(m.Tensors))
	for _, e := range m.Tensors {
		w, err := patchWeight(e, weights[e.Name])
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}
	opts := []patch.Option{patch.WithModelFingerprint(m.Fingerprint)}
	if force {
		opts = append(opts, patch.WithoutFingerprintCheck())
	}
	if err := patch.FuseInto(ws, cfgs, opts...); err != nil {
		if errors.Is(err, patch.ErrFingerprint) && !force {
			return fmt.Errorf("%w (--force applies it anyway when the shapes fit)", err)
		}
		return err
	}
	return nil
}

func patchWeight(e export.TensorEntry, data []byte) (patch.Weight, error) {
	w := patch.Weight{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: data}
	if e.SHA256 == "" {
		return w, nil // base unknown
	}
	sum, ok := e.Sum()
	if !ok {
		return w, fmt.Errorf("manifest entry %q: bad sha256 %q", e.Name, e.SHA256)
	}
	w.BaseSHA256 = sum
	return w, nil
}
