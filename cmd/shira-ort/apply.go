package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
)

// newApplyCmd is `shira-ort apply`: offline fusion into a standalone model.
func newApplyCmd() *cobra.Command {
	var (
		model, out string
		adapters   []string
		force      bool
		minLanded  float64
		rounding   roundingFlag
	)
	cmd := &cobra.Command{
		Use:   "apply --model DIR --adapter A.shira[:ALPHA]... -o FUSED.onnx",
		Short: "Fuse adapters offline into a self-contained ONNX model that plain ONNX Runtime loads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openExported(model)
			if err != nil {
				return err
			}
			defer m.Close()
			if err := refuseStandaloneOver(out, m, adapterInputs(adapters)...); err != nil {
				return err
			}
			fm, err := loadFused(cmd.Context(), m, adapters, force, rounding.r)
			if err != nil {
				return err
			}
			if err := m.WriteStandalone(cmd.Context(), fm.weights, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fused %d adapter(s) in %v, wrote %s\n", fm.adapters, fm.took.Round(time.Microsecond), out)
			printSurvival(cmd.OutOrStdout(), cmd.ErrOrStderr(), fm.survival, minLanded)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "exported model directory")
	cmd.Flags().StringArrayVar(&adapters, "adapter", nil, adapterUsage)
	cmd.Flags().StringVarP(&out, "output", "o", "", "output ONNX file")
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	cmd.Flags().Float64Var(&minLanded, "min-landed", 0.5, minLandedUsage)
	cmd.Flags().Var(&rounding, "rounding", roundingUsage)
	markRequired(cmd, "model", "adapter", "output")
	return cmd
}

// adapterUsage documents --adapter for apply, run and export-ort-adapter.
const adapterUsage = "adapter A.shira, optionally A.shira:ALPHA to scale it (default: the alpha stored in the adapter); repeatable: several adapters are fused"

// forceUsage documents --force for apply and run.
const forceUsage = "apply adapters made for another base model (model fingerprint or base weight sha256 mismatch); names, dtypes, shapes and index bounds are still checked"

// fusedModel is an exported model's weights with adapters fused in memory.
type fusedModel struct {
	m        *export.Model
	weights  map[string][]byte
	touched  map[string]bool           // the exposed weights the adapters write
	survival map[string]patch.Survival // of the quantized weights fused
	adapters int
	took     time.Duration // the fusion alone
}

// loadFused reads the weights of m and fuses the adapters named by the
// --adapter flags into them with the same code a live session uses, so
// the fused model matches the live session bit for bit. Like a live session
// it refuses an adapter made for another model unless force is set. The
// adapter files are closed again before it returns.
func loadFused(ctx context.Context, m *export.Model, adapterFlags []string, force bool, r patch.Rounding) (*fusedModel, error) {
	cfgs, closeAdapters, err := openAdapters(adapterFlags, nil)
	if err != nil {
		return nil, err
	}
	defer closeAdapters()
	weights, err := m.ReadWeights(ctx)
	if err != nil {
		return nil, err
	}
	var surv map[string]patch.Survival
	opts := append(offlineFuseOptions(r, force), patch.WithSurvivalReport(func(m map[string]patch.Survival) { surv = m }))
	start := time.Now()
	if err := m.FuseInto(weights, cfgs, opts...); err != nil {
		if errors.Is(err, patch.ErrFingerprint) && !force {
			return nil, fmt.Errorf("%w (--force applies it anyway when the shapes fit)", err)
		}
		return nil, err
	}
	fm := &fusedModel{m: m, weights: weights, touched: map[string]bool{}, survival: surv, adapters: len(cfgs), took: time.Since(start)}
	for _, c := range cfgs {
		for i := range c.Adapter.Tensors {
			fm.touched[c.Adapter.Tensors[i].Name] = true
		}
	}
	return fm, nil
}
