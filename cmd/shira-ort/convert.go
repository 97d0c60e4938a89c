package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// newConvertCmd is `shira-ort convert`: PEFT SHiRA checkpoints, or PEFT
// LoRA checkpoints reduced to their top-k entries, to .shira adapters.
func newConvertCmd() *cobra.Command {
	var (
		indexEnc                                       indexEncodingFlag
		peftDir, loraDir, model, out, name, valueDType string
		density, minLanded                             float64
		rounding                                       roundingFlag
		alpha                                          float32
		asJSON                                         bool
	)
	cmd := &cobra.Command{
		Use:   "convert (--peft DIR | --lora DIR --density D) --model EXPORTED_DIR -o A.shira",
		Short: "Convert a PEFT SHiRA checkpoint (or a PEFT LoRA, keeping its top-k entries) to a .shira adapter",
		Long: `convert maps each module of a Hugging Face PEFT checkpoint (adapter_model.safetensors +
adapter_config.json) to the exposed ONNX tensor holding its weight (through the consuming
node's name, e.g. /model/layers.0/self_attn/q_proj/MatMul), converts (row, column) indices
to flat indices of that tensor (transposed MatMul weights, Gemm transB=1, fan_in_fan_out),
and writes a .shira adapter. With --lora the dense scale*B*A of each module is computed by
ONNX Runtime and its --density largest entries are kept; the relative error each tensor
keeps is reported.

The adapter has delta semantics (w = base + alpha*value), because both sources store
changes: PEFT's SHiRA adds its sparse values to the base weight when it merges, and
scale*B*A is LoRA's change to it. alpha is PEFT's runtime scaling. (extract, which starts
from the fine-tuned weights themselves, writes overwrite semantics by default.)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openExported(model)
			if err != nil {
				return err
			}
			defer m.Close()
			name = adapterName(name, out)
			vd := tensor.Undefined
			if valueDType != "" {
				if vd, err = tensor.ParseDType(valueDType); err != nil {
					return fmt.Errorf("--value-dtype: %w", err)
				}
			}
			w := cmd.OutOrStdout()
			var a *adapter.Adapter
			var report any
			if peftDir != "" {
				ck, err := peft.Open(peftDir)
				if err != nil {
					return err
				}
				var reps []peft.ModuleReport
				if a, reps, err = peft.ConvertShira(ck, m, peft.ConvertOptions{Name: name, Alpha: alpha, ValueDType: vd}); err != nil {
					return err
				}
				report = reps
				if !asJSON {
					tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "module\ttensor\tlayout\tnnz\tdensity")
					for _, r := range reps {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.4f\n", r.Module, r.Tensor, r.Layout, r.NNZ, r.Density)
					}
					tw.Flush()
				}
			} else {
				res, e, err := openLora(loraDir, m)
				if err != nil {
					return err
				}
				defer e.Close()
				var reps []lora.TopKReport
				if a, reps, err = lora.ToShira(cmd.Context(), e, res, lora.ShiraOptions{Name: name, Density: density, ValueDType: vd, Fingerprint: m.Fingerprint()}); err != nil {
					return err
				}
				a.DefaultAlpha = max(alpha, 0)
				if alpha == 0 {
					a.DefaultAlpha = 1
				}
				report = reps
				if !asJSON {
					tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "module\ttensor\tnnz\trel_error\tenergy")
					for _, r := range reps {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%.4f\t%.4f\n", r.Module, r.Tensor, r.NNZ, r.RelError, r.Energy)
					}
					tw.Flush()
					if far := farFromLora(reps); far > 0 {
						fmt.Fprintf(w, "note: %d of %d modules keep less than 3/4 of their LoRA change's energy (rel_error > 0.5), so the adapter is far from the LoRA it comes from; a larger --density keeps more\n", far, len(reps))
					}
				}
			}
			if err := writeAdapter(out, a, indexEnc.enc); err != nil {
				return err
			}
			surv, err := survivalOn(cmd.Context(), m, a, rounding.r)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(w, map[string]any{"output": out, "tensors": len(a.Tensors), "nnz": a.NNZ(), "modules": report, "quantized": surv})
			}
			fmt.Fprintf(w, "wrote %s (%v semantics): %d tensors, %d values\n", out, a.Semantics, len(a.Tensors), a.NNZ())
			printSurvival(w, cmd.ErrOrStderr(), surv, minLanded)
			return nil
		},
	}
	f := cmd.Flags()
	addIndexEncodingFlag(f, &indexEnc)
	f.StringVar(&peftDir, "peft", "", "PEFT SHiRA adapter directory (adapter_model.safetensors + adapter_config.json)")
	f.StringVar(&loraDir, "lora", "", "PEFT LoRA adapter directory, converted to SHiRA by top-k of scale*B*A")
	f.Float64Var(&density, "density", 0, "with --lora (and required by it): fraction of each tensor's entries kept")
	f.StringVar(&model, "model", "", "exported model directory (shira-ort export)")
	f.StringVar(&name, "name", "", "adapter name (default: the file name)")
	f.Float32Var(&alpha, "alpha", 1, "default alpha stored in the adapter (PEFT's runtime scaling)")
	f.StringVar(&valueDType, "value-dtype", "", "dtype of the stored deltas (default: the weight's dtype, fp16/bf16 rounded to nearest even)")
	f.BoolVar(&asJSON, "json", false, "print the per-module report as JSON")
	f.Float64Var(&minLanded, "min-landed", 0.5, minLandedUsage)
	f.Var(&rounding, "rounding", roundingUsage)
	f.StringVarP(&out, "output", "o", "", "output .shira file")
	markRequired(cmd, "model", "output")
	cmd.MarkFlagsOneRequired("peft", "lora")
	cmd.MarkFlagsMutuallyExclusive("peft", "lora")
	cmd.MarkFlagsRequiredTogether("lora", "density")
	return cmd
}

// newFuseLoraCmd is `shira-ort fuse-lora`: the LoRA baseline, W += scale*B*A
// with the products computed by ONNX Runtime, written as a standalone model.
func newFuseLoraCmd() *cobra.Command {
	var loraDir, model, out string
	cmd := &cobra.Command{
		Use:   "fuse-lora --lora DIR --model EXPORTED_DIR -o FUSED.onnx",
		Short: "Fuse a PEFT LoRA checkpoint into the exposed weights (W += scale*B*A) and write a standalone model",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openExported(model)
			if err != nil {
				return err
			}
			defer m.Close()
			if err := refuseStandaloneOver(out, m); err != nil {
				return err
			}
			res, e, err := openLora(loraDir, m)
			if err != nil {
				return err
			}
			defer e.Close()
			weights, err := m.ReadWeights(cmd.Context())
			if err != nil {
				return err
			}
			start := time.Now()
			st, err := lora.Fuse(cmd.Context(), e, weights, res)
			if err != nil {
				return err
			}
			total := time.Since(start)
			if err := m.WriteStandalone(cmd.Context(), weights, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fused %d LoRA modules (%d elements) in %v (%s: products %v, adds %v), wrote %s\n",
				st.Tensors, st.Elements, total.Round(time.Microsecond), st.Kernel, st.Product.Round(time.Microsecond), st.Add.Round(time.Microsecond), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&loraDir, "lora", "", "PEFT LoRA adapter directory")
	f.StringVar(&model, "model", "", "exported model directory")
	f.StringVarP(&out, "output", "o", "", "output ONNX file")
	markRequired(cmd, "lora", "model", "output")
	return cmd
}

// farFromLora counts the modules whose top-k keeps less than 3/4 of the
// LoRA change's energy (relative error above 1/2).
func farFromLora(reps []lora.TopKReport) int {
	n := 0
	for _, r := range reps {
		if r.RelError > 0.5 {
			n++
		}
	}
	return n
}

// openLora reads a PEFT LoRA checkpoint, maps its modules to the exposed
// tensors of m, and starts the ORT engine that computes s·B·A. The caller
// closes the engine.
func openLora(dir string, m *export.Model) ([]lora.Resolved, *lora.Engine, error) {
	ck, err := peft.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	mods, err := ck.Lora()
	if err != nil {
		return nil, nil, err
	}
	res, err := lora.Resolve(mods, m)
	if err != nil {
		return nil, nil, err
	}
	if err := ort.Init(); err != nil {
		return nil, nil, err
	}
	e, err := lora.NewEngine(nil)
	if err != nil {
		return nil, nil, err
	}
	return res, e, nil
}
