package sessionbench

import (
	"fmt"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Cell formats v for a table, "–" for 0 (not measured).
func Cell(v float64, format string) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

// Markdown writes rows as a Markdown table.
func Markdown(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| model | session | batch | Run ms (median) | × plain | Set ms | switch → adapted output ms | switch → full speed ms | open ms | peak RSS MiB | steady RSS MiB | steady RSS × plain |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		v := variantLabel(r.Variant)
		fmt.Fprintf(w, "| %s | %s | %d | %.2f | %.3f | %s | %s | %s | %.0f | %s | %s | %s |\n", r.Model, v, r.Batch, r.RunMs, r.Ratio,
			Cell(r.SetMs, "%.1f"), Cell(r.AdaptedMs, "%.1f"), Cell(r.FullSpeedMs, "%.0f"), r.OpenMs,
			Cell(r.PeakRSSMB, "%.0f"), Cell(r.SteadyRSSMB, "%.0f"), Cell(r.SteadyRatio, "%.3f"))
	}
}

// Text writes rows as an aligned plain-text table.
func Text(w io.Writer, rows []Row) {
	fmt.Fprintf(w, "%-5s %-7s %5s %10s %8s %9s %11s %11s %9s %9s %9s\n", "model", "session", "batch", "run-ms", "x-plain", "set-ms", "adapted-ms", "fullspd-ms", "open-ms", "peak-MiB", "stdy-MiB")
	for _, r := range rows {
		fmt.Fprintf(w, "%-5s %-7s %5d %10.2f %8.3f %9s %11s %11s %9.0f %9s %9s\n", r.Model, r.Variant, r.Batch, r.RunMs, r.Ratio,
			Cell(r.SetMs, "%.1f"), Cell(r.AdaptedMs, "%.1f"), Cell(r.FullSpeedMs, "%.0f"), r.OpenMs, Cell(r.PeakRSSMB, "%.0f"), Cell(r.SteadyRSSMB, "%.0f"))
	}
}

// Plot saves a grouped bar chart (PNG, SVG, ... by extension) of Run
// latency relative to the plain session, per (model, batch).
func Plot(path string, rows []Row) error {
	p := plot.New()
	p.Title.Text = "Steady-state Run latency ÷ plain ORT session"
	p.Y.Label.Text = "× plain (lower is better)"
	var groups []string
	idx := map[string]int{}
	for _, r := range rows {
		g := fmt.Sprintf("%s b=%d", r.Model, r.Batch)
		if _, ok := idx[g]; !ok {
			idx[g] = len(groups)
			groups = append(groups, g)
		}
	}
	w := vg.Points(14)
	var shown []string
	for _, v := range Variants {
		for _, r := range rows {
			if r.Variant == v {
				shown = append(shown, v)
				break
			}
		}
	}
	for k, v := range shown {
		vals := make(plotter.Values, len(groups))
		for _, r := range rows {
			if r.Variant == v {
				vals[idx[fmt.Sprintf("%s b=%d", r.Model, r.Batch)]] = r.Ratio
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("sessionbench: %w", err)
		}
		bars.Color = plotutil.Color(k)
		bars.Offset = w * vg.Length(float64(k)-float64(len(shown)-1)/2)
		p.Add(bars)
		p.Legend.Add(variantLabel(v), bars)
	}
	maxRatio := 1.0
	for _, r := range rows {
		maxRatio = max(maxRatio, r.Ratio)
	}
	p.Y.Min, p.Y.Max = 0, maxRatio*1.6 // room for the legend above the bars
	p.Legend.Top, p.Legend.Left = true, true
	p.NominalX(groups...)
	if err := p.Save(vg.Length(100+45*len(groups))*vg.Millimeter, 100*vg.Millimeter, path); err != nil {
		return fmt.Errorf("sessionbench: %w", err)
	}
	return nil
}

// variantLabel names a variant in tables and plots.
func variantLabel(v string) string {
	switch v {
	case "hybrid":
		return "hybrid (after rebake)"
	case HybridKeep:
		return "hybrid + KeepLiveWeights (after rebake)"
	}
	return v
}
