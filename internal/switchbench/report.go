package switchbench

import (
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot file names written by [Report.Plots].
const (
	TensorPlotFile = "switch-vs-d.png"
	ModelPlotFile  = "whole-model.png"
)

// Report is everything one run measured.
type Report struct {
	Tensors []TensorRow `json:"tensors,omitempty"`
	Models  []ModelRow  `json:"models,omitempty"`
	Index   []IndexRow  `json:"index,omitempty"`
	// LoraKernel names the BLAS library of the in-place LoRA baseline.
	LoraKernel string `json:"lora_kernel,omitempty"`
}

// Markdown writes the report's tables as Markdown.
func (r *Report) Markdown(w io.Writer) {
	if len(r.Tensors) > 0 {
		fmt.Fprintln(w, "### Per tensor (d×d, SHiRA values in the weight dtype; medians, ms)")
		fmt.Fprintln(w)
		if r.LoraKernel != "" {
			fmt.Fprintf(w, "LoRA baseline: in-place GEMM with beta = 1 (%s); the switch is one GEMM over the concatenated factors [−B_A | B_B]·[A_A; A_B]. ", r.LoraKernel)
		}
		fmt.Fprintln(w, "Also shown: two in-place GEMMs (unfuse, fuse) and the PEFT-style merge (dense s·B·A from ONNX Runtime, added in a second pass), for context only.")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| dtype | d | density | threads | nnz | LoRA r | SHiRA apply | revert | **SHiRA switch** | LoRA fuse (in-place) | unfuse | **LoRA switch, 1 GEMM** | LoRA switch, 2 GEMMs | PEFT-style merge switch | **in-place LoRA / SHiRA** | merge / SHiRA | CPU ms SHiRA / LoRA | copy GB/s | SHiRA MB moved | streaming floor | pattern floor | **× pattern floor** | × streaming floor | LoRA floor (W once) |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, t := range r.Tensors {
			fmt.Fprintf(w, "| %s | %d | %g%% | %d | %d | %d | %.3f | %.3f | **%.3f** | %.2f | %.2f | **%.2f** | %.2f | %.1f | **%.1f×** | %.0f× | %.2f / %.1f | %.1f | %.1f | %.3f | %.3f | **%.2f×** | %.2f× | %.2f |\n",
				t.DType, t.D, t.Density*100, t.Threads, t.NNZ, t.Rank, t.ApplyMs, t.RevertMs, t.SwitchMs,
				t.FuseMs, t.UnfuseMs, t.LoraSwitchMs, t.Lora2GemmMs, t.MergeSwitchMs, t.Speedup(), t.MergeSpeedup(),
				t.SwitchCPUMs, t.LoraSwitchCPUMs, t.BandwidthGBs, float64(t.SwitchBytes)/1e6, t.SwitchFloorMs, t.PatternFloorMs,
				t.FloorMultiple(), t.StreamFloorMultiple(), t.LoraFloorMs)
		}
		fmt.Fprintln(w)
	}
	if len(r.Models) > 0 {
		fmt.Fprintln(w, "### Whole model (switch A→B end to end, including reading the adapter file; medians, ms)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| dtype | layers | params | tensors | threads | cache | SHiRA file MB | SHiRA open | SHiRA set | **SHiRA switch** | LoRA file MB | LoRA read | LoRA unfuse+fuse | **LoRA switch** | **LoRA/SHiRA** | CPU ms SHiRA / LoRA | LoRA/SHiRA (CPU) | SHiRA floor (set) | set × floor |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, m := range r.Models {
			cache := m.Cache
			if m.Cache == "cold" {
				cache = fmt.Sprintf("cold (%.0f%% resident)", m.ColdResident*100)
			}
			fmt.Fprintf(w, "| %s | %d | %.2f B | %d | %d | %s | %.1f | %.1f | %.1f | **%.1f** | %.1f | %.1f | %.1f | **%.1f** | **%.1f×** | %.1f / %.1f | %.1f× | %.1f | %.1f× |\n",
				m.DType, m.Layers, float64(m.Params)/1e9, m.Tensors, m.Threads, cache, m.ShiraFileMB, m.ShiraOpenMs, m.ShiraSetMs, m.ShiraMs,
				m.LoraFileMB, m.LoraReadMs, m.LoraFuseMs, m.LoraMs, m.Speedup(), m.ShiraCPUMs, m.LoraCPUMs, ratio(m.LoraCPUMs, m.ShiraCPUMs),
				m.SetFloorMs, ratio(m.ShiraSetMs, m.SetFloorMs))
		}
		fmt.Fprintln(w)
	}
	if len(r.Index) > 0 {
		fmt.Fprintln(w, "### Index encodings (one adapter over the whole model; medians, ms)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| encoding | dtype | threads | nnz | file MB | index bytes / entry | Open (warm) | Open + Set (cold) | Set | switch A→B |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, x := range r.Index {
			fmt.Fprintf(w, "| %s | %s | %d | %d | %.1f | %.2f | %.1f | %.1f | %.1f | %.1f |\n", x.Encoding, x.DType, x.Threads, x.NNZ, x.FileMB,
				x.IndexBytesPerEntry, x.OpenWarmMs, x.OpenSetColdMs, x.SetMs, x.SwitchMs)
		}
		fmt.Fprintln(w)
	}
}

// Text writes a compact plain-text summary.
func (r *Report) Text(w io.Writer) {
	if len(r.Tensors) > 0 {
		fmt.Fprintf(w, "%-8s %5s %5s %3s %9s %9s %9s %9s %9s %9s %8s %8s %8s\n", "dtype", "d", "dens", "thr", "shira-ms", "lora-ms", "lora/shr", "2gemm-ms", "merge-ms", "pattern", "x-pat", "x-strm", "GB/s")
		for _, t := range r.Tensors {
			fmt.Fprintf(w, "%-8s %5d %4g%% %3d %9.3f %9.2f %8.1fx %9.2f %9.1f %9.3f %7.2fx %7.2fx %8.1f\n", t.DType, t.D, t.Density*100, t.Threads,
				t.SwitchMs, t.LoraSwitchMs, t.Speedup(), t.Lora2GemmMs, t.MergeSwitchMs, t.PatternFloorMs, t.FloorMultiple(), t.StreamFloorMultiple(), t.BandwidthGBs)
		}
	}
	if len(r.Models) > 0 {
		fmt.Fprintf(w, "\n%-8s %6s %3s %5s %10s %10s %9s %9s\n", "dtype", "layers", "thr", "cache", "shira-ms", "lora-ms", "lora/shr", "cpu-ratio")
		for _, m := range r.Models {
			fmt.Fprintf(w, "%-8s %6d %3d %5s %10.1f %10.1f %8.1fx %8.1fx\n", m.DType, m.Layers, m.Threads, m.Cache, m.ShiraMs, m.LoraMs, m.Speedup(), ratio(m.LoraCPUMs, m.ShiraCPUMs))
		}
	}
	if len(r.Index) > 0 {
		fmt.Fprintf(w, "\n%-10s %-8s %9s %9s %11s %9s %9s\n", "encoding", "dtype", "file-MB", "open-ms", "cold-o+s", "set-ms", "switch")
		for _, x := range r.Index {
			fmt.Fprintf(w, "%-10s %-8s %9.1f %9.1f %11.1f %9.1f %9.1f\n", x.Encoding, x.DType, x.FileMB, x.OpenWarmMs, x.OpenSetColdMs, x.SetMs, x.SwitchMs)
		}
	}
}

// Plots writes TensorPlotFile (switch time vs d, log scale, SHiRA vs
// LoRA, at the largest thread count) and ModelPlotFile (whole-model bars)
// into dir, for the parts the report has.
func (r *Report) Plots(dir string) error {
	if len(r.Tensors) > 0 {
		if err := r.tensorPlot(filepath.Join(dir, TensorPlotFile)); err != nil {
			return err
		}
	}
	if len(r.Models) > 0 {
		if err := r.modelPlot(filepath.Join(dir, ModelPlotFile)); err != nil {
			return err
		}
	}
	return nil
}

func (r *Report) tensorPlot(path string) error {
	th := 0
	for _, t := range r.Tensors {
		th = max(th, t.Threads)
	}
	type key struct {
		dtype   string
		density float64
	}
	var keys []key
	names := []string{"SHiRA", "LoRA in-place", "PEFT-style merge"}
	pts := map[key][3]plotter.XYs{} // SHiRA, LoRA in-place (1 GEMM), PEFT-style merge
	for _, t := range r.Tensors {
		if t.Threads != th {
			continue
		}
		k := key{t.DType, t.Density}
		if _, ok := pts[k]; !ok {
			keys = append(keys, k)
		}
		v := pts[k]
		v[0] = append(v[0], plotter.XY{X: float64(t.D), Y: t.SwitchMs})
		v[1] = append(v[1], plotter.XY{X: float64(t.D), Y: t.LoraSwitchMs})
		v[2] = append(v[2], plotter.XY{X: float64(t.D), Y: t.MergeSwitchMs})
		pts[k] = v
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Switch time of one d×d weight (%d thread%s)", th, plural(th))
	p.X.Label.Text = "d"
	p.Y.Label.Text = "switch A→B, ms (log)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = dimTicks(r.Tensors), plot.LogTicks{Prec: -1}
	for i, k := range keys {
		for m, name := range names {
			l, s, err := plotter.NewLinePoints(pts[k][m])
			if err != nil {
				return fmt.Errorf("switchbench: plot: %w", err)
			}
			c := plotutil.Color(i)
			l.Color, s.Color = c, c
			s.Shape = plotutil.Shape(m)
			switch m {
			case 1:
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			case 2:
				l.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
			}
			p.Add(l, s)
			p.Legend.Add(fmt.Sprintf("%s %s %g%%", name, k.dtype, k.density*100), l, s)
		}
	}
	p.Legend.Top, p.Legend.Left = true, true
	if err := p.Save(160*vg.Millimeter, 110*vg.Millimeter, path); err != nil {
		return fmt.Errorf("switchbench: plot: %w", err)
	}
	return nil
}

// dimTicks labels the x axis with the measured sizes.
func dimTicks(rows []TensorRow) plot.ConstantTicks {
	var ds []int
	for _, t := range rows {
		if !slices.Contains(ds, t.D) {
			ds = append(ds, t.D)
		}
	}
	slices.Sort(ds)
	ticks := make(plot.ConstantTicks, len(ds))
	for i, d := range ds {
		ticks[i] = plot.Tick{Value: float64(d), Label: fmt.Sprint(d)}
	}
	return ticks
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (r *Report) modelPlot(path string) error {
	var groups []string
	gi := map[string]int{}
	for _, m := range r.Models {
		g := fmt.Sprintf("%s %s, %d thr", m.DType, m.Cache, m.Threads)
		if _, ok := gi[g]; !ok {
			gi[g] = len(groups)
			groups = append(groups, g)
		}
	}
	p := plot.New()
	p.Title.Text = "Whole-model switch A→B incl. reading the adapter file"
	p.Y.Label.Text = "seconds"
	w := vg.Points(18)
	for k, name := range []string{"SHiRA", "LoRA"} {
		vals := make(plotter.Values, len(groups))
		for _, m := range r.Models {
			v := m.ShiraMs
			if k == 1 {
				v = m.LoraMs
			}
			vals[gi[fmt.Sprintf("%s %s, %d thr", m.DType, m.Cache, m.Threads)]] = v / 1e3
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("switchbench: plot: %w", err)
		}
		bars.Color = plotutil.Color(k)
		bars.LineStyle.Color = color.Black
		bars.Offset = w * vg.Length(float64(k)-0.5)
		p.Add(bars)
		p.Legend.Add(name, bars)
	}
	maxS := 0.0
	for _, m := range r.Models {
		maxS = max(maxS, m.ShiraMs/1e3, m.LoraMs/1e3)
	}
	p.Y.Min, p.Y.Max = 0, maxS*1.3 // room for the legend
	p.Legend.Top, p.Legend.Left = true, true
	p.NominalX(groups...)
	p.X.Min, p.X.Max = -0.6, float64(len(groups))-0.4 // keep the outer bars inside
	p.X.Tick.Label.Rotation = 0.4
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	if err := p.Save(vg.Length(60+40*len(groups))*vg.Millimeter, 110*vg.Millimeter, path); err != nil {
		return fmt.Errorf("switchbench: plot: %w", err)
	}
	return nil
}

// logger returns a printf that writes a line to w (nothing when w is nil).
func logger(w io.Writer) func(format string, a ...any) {
	return func(format string, a ...any) {
		if w != nil {
			fmt.Fprintf(w, format+"\n", a...)
		}
	}
}

// workDir returns dir, or a new temporary directory when dir is empty;
// cleanup removes what workDir created.
func workDir(dir string) (_ string, cleanup func(), _ error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "shira-ort-switchbench-*")
	if err != nil {
		return "", nil, fmt.Errorf("switchbench: %w", err)
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}
