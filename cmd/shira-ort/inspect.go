package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// newInspectCmd is `shira-ort inspect`: an exported model, an adapter, or
// (--providers) where ONNX Runtime runs a model's nodes.
func newInspectCmd() *cobra.Command {
	var (
		asJSON, providers bool
		provs             providerFlags
		model             string
		minLanded         float64
		rounding          roundingFlag
	)
	cmd := &cobra.Command{
		Use:   "inspect PATH [--providers [--provider P]... [--provider-fallback]] [--model DIR]",
		Short: "Summarize an exported model directory or a .shira adapter file",
		Long: `inspect summarizes an exported model directory or a .shira adapter file.

--providers (model directory or .onnx file) creates ONNX Runtime sessions with the
--provider list, runs them once on zero inputs with profiling on, and reports which
execution provider ran each node, and where the nodes reading each exposed weight run,
for the live session (weights are graph inputs) and the baked one (weights are constants).

--model DIR (with a .shira adapter) also says what the model's quantized weights would keep
of the adapter at its default alpha (kept, landed, unchanged and clipped codes), fusing it into
a copy of the weights; nothing is written.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if providers {
				return inspectProviders(cmd.Context(), w, args[0], &provs, asJSON)
			}
			if st.IsDir() {
				m, err := export.Open(args[0])
				if err != nil {
					return err
				}
				defer m.Close()
				if asJSON {
					return writeJSON(w, modelJSON{Manifest: m.Manifest(), Inputs: m.Inputs(), Outputs: m.Outputs()})
				}
				return printModel(w, m)
			}
			a, err := adapter.Open(args[0])
			if err != nil {
				return err
			}
			defer a.Close()
			s := summarizeAdapter(a)
			var surv map[string]patch.Survival
			if model != "" {
				m, err := openExported(model)
				if err != nil {
					return err
				}
				defer m.Close()
				if surv, err = survivalOn(cmd.Context(), m, a, rounding.r); err != nil {
					return err
				}
			}
			if asJSON {
				if model != "" {
					return writeJSON(w, map[string]any{"adapter": s, "quantized": surv})
				}
				return writeJSON(w, s)
			}
			if err := printAdapter(w, args[0], s); err != nil {
				return err
			}
			printSurvival(w, cmd.ErrOrStderr(), surv, minLanded)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines")
	cmd.Flags().StringVar(&model, "model", "", "with an adapter: the exported model whose quantized weights' survival to report")
	cmd.Flags().Float64Var(&minLanded, "min-landed", 0.5, minLandedUsage)
	cmd.Flags().Var(&rounding, "rounding", roundingUsage)
	cmd.Flags().BoolVar(&providers, "providers", false, "report which execution provider runs each node (profiles a Run)")
	provs.register(cmd.Flags())
	return cmd
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// modelJSON is `inspect --json DIR`: the manifest plus the graph's inputs
// and outputs.
type modelJSON struct {
	*export.Manifest
	Inputs  []export.ValueInfo `json:"inputs"`
	Outputs []export.ValueInfo `json:"outputs"`
}

// printModel is `inspect DIR`: the graph, its inputs and outputs, and the
// exposed weights with their consumers and sources.
func printModel(w io.Writer, em *export.Model) error {
	m := em.Manifest()
	var total int64
	for _, t := range m.Tensors {
		total += t.Length
	}
	fmt.Fprintf(w, "exported model %s\n  graph %s, weights %s\n  fingerprint %s\n", em.Dir(), m.Model, m.WeightsFile, m.Fingerprint)
	for _, io := range []struct {
		what string
		vs   []export.ValueInfo
	}{{"input", em.Inputs()}, {"output", em.Outputs()}} {
		for _, v := range io.vs {
			fmt.Fprintf(w, "  %s %s: %v %s\n", io.what, v.Name, v.DType, shapeText(v.Shape, v.SymbolicDims))
		}
	}
	fmt.Fprintf(w, "  %d exposed weights, %.2f MB\n\n", len(m.Tensors), float64(total)/1e6)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDTYPE\tSHAPE\tCONSUMER\tSOURCE")
	for _, t := range m.Tensors {
		consumer := ""
		if len(t.Consumers) > 0 {
			consumer = fmt.Sprintf("%s (%s)", t.Consumers[0].Node, t.Consumers[0].OpType)
			if len(t.Consumers) > 1 {
				consumer += fmt.Sprintf(" +%d", len(t.Consumers)-1)
			}
		}
		src := t.Source.Name
		if len(t.Source.Perm) > 0 {
			src += fmt.Sprintf(" transposed %v", t.Source.Perm)
		}
		if t.Source.FromConstant {
			src += " (Constant node)"
		}
		dt := t.DType.String()
		if q := t.Quant; q != nil {
			per := "per tensor"
			if len(q.Scales) > 1 {
				per = fmt.Sprintf("per axis %d", q.Axis)
			}
			zp := "no zero point"
			if len(q.ZeroPoints) > 0 {
				zp = "zero points"
			}
			dt = fmt.Sprintf("%v codes (%s %s, %s)", t.DType, q.Form, per, zp)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", t.Name, dt, t.Shape, consumer, src)
	}
	return tw.Flush()
}

// shapeText renders a declared shape with the names of its symbolic
// dimensions, e.g. [batch 16].
func shapeText(shape []int64, symbolic []string) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		switch {
		case d >= 0:
			parts[i] = fmt.Sprint(d)
		case i < len(symbolic) && symbolic[i] != "":
			parts[i] = symbolic[i]
		default:
			parts[i] = "?"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// adapterSummary is what `inspect` reports about an adapter.
type adapterSummary struct {
	Name             string            `json:"name"`
	Semantics        string            `json:"semantics"`
	DefaultAlpha     float32           `json:"default_alpha"`
	ModelFingerprint string            `json:"model_fingerprint"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	NNZ              int               `json:"nnz"`
	Tensors          []tensorSummary   `json:"tensors"`
}

// tensorSummary is what `inspect` reports about one tensor of an adapter.
type tensorSummary struct {
	Name       string       `json:"name"`
	DType      tensor.DType `json:"dtype"`
	ValueDType tensor.DType `json:"value_dtype"`
	Shape      []int64      `json:"shape"`
	NNZ        int          `json:"nnz"`
	Density    float64      `json:"density"`
	BaseSHA256 string       `json:"base_sha256,omitempty"`
}

// summarizeAdapter summarizes a, tensors sorted by name.
func summarizeAdapter(a *adapter.Adapter) adapterSummary {
	s := adapterSummary{Name: a.Name, Semantics: a.Semantics.String(), DefaultAlpha: a.DefaultAlpha,
		ModelFingerprint: a.ModelFingerprint, Metadata: a.Metadata}
	for i := range a.Tensors {
		t := &a.Tensors[i]
		n, _ := tensor.NumElements(t.Shape)
		ts := tensorSummary{Name: t.Name, DType: t.DType, ValueDType: t.ValueDType, Shape: t.Shape,
			NNZ: len(t.Indices), Density: float64(len(t.Indices)) / float64(max(n, 1))}
		if t.BaseSHA256 != ([32]byte{}) {
			ts.BaseSHA256 = hex.EncodeToString(t.BaseSHA256[:])
		}
		s.NNZ += ts.NNZ
		s.Tensors = append(s.Tensors, ts)
	}
	sort.Slice(s.Tensors, func(i, j int) bool { return s.Tensors[i].Name < s.Tensors[j].Name })
	return s
}

// printAdapter is `inspect A.shira`.
func printAdapter(w io.Writer, path string, s adapterSummary) error {
	fmt.Fprintf(w, "adapter %s (%s)\n  semantics %s, default alpha %g\n  model fingerprint %s\n  %d tensors, %d values\n",
		path, s.Name, s.Semantics, s.DefaultAlpha, s.ModelFingerprint, len(s.Tensors), s.NNZ)
	keys := make([]string, 0, len(s.Metadata))
	for k := range s.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, s.Metadata[k])
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tDTYPE\tVALUES\tSHAPE\tNNZ\tDENSITY")
	for _, t := range s.Tensors {
		fmt.Fprintf(tw, "%s\t%v\t%v\t%v\t%d\t%.2f%%\n", t.Name, t.DType, t.ValueDType, t.Shape, t.NNZ, 100*t.Density)
	}
	return tw.Flush()
}
