package servebench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/sessionbench"
)

// scenarioKey identifies a scenario of a model.
type scenarioKey struct {
	model, dist       string
	adapters, clients int
}

func keyOf(r Row) scenarioKey { return scenarioKey{r.Model, r.Dist, r.Adapters, r.Clients} }

// byScenario indexes rows by scenario and strategy.
func byScenario(rows []Row) map[scenarioKey]map[string]Row {
	m := map[scenarioKey]map[string]Row{}
	for _, r := range rows {
		k := keyOf(r)
		if m[k] == nil {
			m[k] = map[string]Row{}
		}
		m[k][r.Strategy] = r
	}
	return m
}

// ratioTo formats r's value over the same scenario's ort-lora value.
func ratioTo(idx map[scenarioKey]map[string]Row, r Row, f func(Row) float64) string {
	l, ok := idx[keyOf(r)][OrtLoRA]
	if !ok || r.Strategy == OrtLoRA || f(l) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", f(r)/f(l))
}

func breakEvenCell(r Row) string {
	switch {
	case r.BreakEven < 0:
		return "∞"
	case r.BreakEven == 0:
		return "–"
	}
	return fmt.Sprintf("%.1f", r.BreakEven)
}

// Markdown writes the report as Markdown tables.
func Markdown(w io.Writer, rep *Report) {
	c := rep.Config
	spin := "off"
	if c.Spin {
		spin = "on"
	}
	fmt.Fprintf(w, "ORT %s, %d intra-op threads (spinning %s); %s measured per scenario and strategy (in %s slices, the strategies taking turns) after a %s warm-up each; closed loop (vegeta, rate 0, one worker per client) over loopback HTTP; scheduler MaxWait %s, MaxBatch %d (where the model has a batch dimension), MaxConcurrent %d; catalogs keep %d unused adapters open; Zipf s = %g.%s\n\n",
		c.ORTVersion, c.Threads, spin, c.Duration, c.Slice, c.Warmup, c.MaxWait, c.MaxBatch, c.MaxConcurrent, c.MaxOpen, c.ZipfS,
		map[bool]string{true: " Verification on: every response checked.", false: ""}[c.Verify])
	if len(rep.Strategies) > 0 {
		fmt.Fprintln(w, "| model | strategy | session | open ms | RSS at open MiB | median switch under load ms (switches) |")
		fmt.Fprintln(w, "|---|---|---|---:|---:|---:|")
		for _, s := range rep.Strategies {
			sw := "–"
			if s.SwitchCount > 0 {
				sw = fmt.Sprintf("%.2f (%d)", s.SwitchMedianMs, s.SwitchCount)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.0f | %s |\n", s.Model, s.Strategy, s.Session, s.OpenMs, s.OpenRSSMB, sw)
		}
		fmt.Fprintln(w)
	}
	if len(rep.BreakEven) > 0 {
		fmt.Fprintln(w, "Break-even (calibration before the load: medians, round-robin; g* = t_switch / (t_lora − t_base) Runs per switch, × batch = requests per switch):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| model | batch | base Run ms | per-run LoRA Run ms | packed Run ms | LoRA ÷ base | packed switch ms (calibration) | median switch under load ms | g* requests | g* requests, switch under load | g* requests, packed Run for base |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, b := range rep.BreakEven {
			g, gl, gp := fmt.Sprintf("%.1f", b.GStarRequests), fmt.Sprintf("%.1f", b.GStarLoadRequests), fmt.Sprintf("%.1f", b.GStarPackedRequests)
			if b.NoBreakEven {
				g, gl = "∞", "∞"
			} else if b.LoadSwitchMs == 0 {
				gl = "–"
			}
			if b.GStarPackedRequests == 0 {
				gp = "∞"
			}
			fmt.Fprintf(w, "| %s | %d | %.3f | %.3f | %.3f | %.3f | %.2f | %s | %s | %s | %s |\n", b.Model, b.Batch, b.BaseMs, b.LoRAMs, b.PackedMs,
				b.LoRAMs/b.BaseMs, b.SwitchMs, sessionbench.Cell(b.LoadSwitchMs, "%.2f"), g, gl, gp)
		}
		fmt.Fprintln(w)
	}
	idx := byScenario(rep.Rows)
	verify := c.Verify
	hdr := "| model | strategy | adapters | dist | clients | req/s | × ort-lora | p50 ms | p99 ms | p99 × ort-lora | CPU % | errors | 503 | sched req / HTTP req | switches / 1k | mean group | g* | rows / Run | RSS MiB | ΔRSS MiB | registered / open | open MiB |"
	sep := "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	if verify {
		hdr += " verified | wrong | max diff |"
		sep += "---:|---:|---:|"
	}
	fmt.Fprintln(w, hdr)
	fmt.Fprintln(w, sep)
	for _, r := range rep.Rows {
		perReq := "–"
		if r.Requests > 0 {
			perReq = fmt.Sprintf("%.1f", float64(r.SchedRequests)/float64(r.Requests))
		}
		sw, group := "–", "–"
		if r.SwitchesPer1k > 0 || r.Strategy == ShiraPacked || r.Strategy == ShiraLive || r.Strategy == ShiraSlots {
			sw = fmt.Sprintf("%.1f", r.SwitchesPer1k)
			group = sessionbench.Cell(r.MeanGroup, "%.1f")
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %d | %.1f | %s | %.2f | %.2f | %s | %.0f | %d | %d | %s | %s | %s | %s | %.2f | %.0f | %+.0f | %d / %d | %.1f |",
			r.Model, r.Strategy, r.Adapters, r.Dist, r.Clients, r.Throughput, ratioTo(idx, r, func(r Row) float64 { return r.Throughput }),
			r.P50Ms, r.P99Ms, ratioTo(idx, r, func(r Row) float64 { return r.P99Ms }), r.CPUPercent, r.Errors, r.Overloaded, perReq, sw, group,
			breakEvenCell(r), r.RowsPerRun, r.RSSMB, r.DeltaRSSMB, r.Registered, r.Open, r.OpenMB)
		if verify {
			diff := fmt.Sprintf("%.3g", r.MaxDiff)
			if r.Model == ModelCharLM {
				diff = "(text)"
			}
			fmt.Fprintf(w, " %d | %d | %s |", r.Verified, r.Wrong, diff)
		}
		fmt.Fprintln(w)
	}
	if errs := errorLines(rep.Rows); len(errs) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Errors:")
		for _, e := range errs {
			fmt.Fprintln(w, "- "+e)
		}
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range rep.Notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
}

func errorLines(rows []Row) []string {
	var out []string
	for _, r := range rows {
		for _, e := range r.ErrorText {
			out = append(out, fmt.Sprintf("%s/%s %d %s %d clients: %s", r.Model, r.Strategy, r.Adapters, r.Dist, r.Clients, e))
		}
	}
	return out
}

// Text writes the main table as aligned plain text.
func Text(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "%-6s %-12s %5s %-7s %4s %9s %8s %9s %9s %5s %5s %5s %8s %8s %7s %6s %7s %9s\n",
		"model", "strategy", "adapt", "dist", "cli", "req/s", "x-lora", "p50-ms", "p99-ms", "cpu%", "err", "503", "sw/1k", "group", "g*", "rows", "RSS-MiB", "wrong")
	idx := byScenario(rep.Rows)
	for _, r := range rep.Rows {
		wrong := "–"
		if rep.Config.Verify {
			wrong = fmt.Sprintf("%d/%d", r.Wrong, r.Verified)
		}
		fmt.Fprintf(w, "%-6s %-12s %5d %-7s %4d %9.1f %8s %9.2f %9.2f %5.0f %5d %5d %8.1f %8s %7s %6.2f %7.0f %9s\n",
			r.Model, r.Strategy, r.Adapters, r.Dist, r.Clients, r.Throughput, ratioTo(idx, r, func(r Row) float64 { return r.Throughput }),
			r.P50Ms, r.P99Ms, r.CPUPercent, r.Errors, r.Overloaded, r.SwitchesPer1k, sessionbench.Cell(r.MeanGroup, "%.1f"), breakEvenCell(r), r.RowsPerRun, r.RSSMB, wrong)
	}
	for _, b := range rep.BreakEven {
		g := fmt.Sprintf("%.1f", b.GStarRequests)
		if b.NoBreakEven {
			g = "inf"
		}
		fmt.Fprintf(w, "break-even %s batch %d: base %.3f ms, LoRA %.3f ms, packed %.3f ms, switch %.2f ms (under load %.2f ms): g* = %s requests per switch (%.1f with the switch under load)\n",
			b.Model, b.Batch, b.BaseMs, b.LoRAMs, b.PackedMs, b.SwitchMs, b.LoadSwitchMs, g, b.GStarLoadRequests)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
}

// PlotThroughput writes a PNG of throughput per strategy against the
// number of adapters: one panel per (model, distribution) row and clients
// column.
func PlotThroughput(path string, rep *Report) error {
	return plotGrid(path, rep, "req/s", func(r Row) float64 { return r.Throughput })
}

// PlotP99 writes the same grid for the p99 latency.
func PlotP99(path string, rep *Report) error {
	return plotGrid(path, rep, "p99 ms", func(r Row) float64 { return r.P99Ms })
}

func plotGrid(path string, rep *Report, ylabel string, f func(Row) float64) error {
	type panelKey struct {
		model, dist string
		clients     int
	}
	var panelRows []struct{ model, dist string }
	seenRow := map[[2]string]bool{}
	var clients []int
	seenC := map[int]bool{}
	for _, r := range rep.Rows {
		if k := [2]string{r.Model, r.Dist}; !seenRow[k] {
			seenRow[k] = true
			panelRows = append(panelRows, struct{ model, dist string }{r.Model, r.Dist})
		}
		if !seenC[r.Clients] {
			seenC[r.Clients] = true
			clients = append(clients, r.Clients)
		}
	}
	if len(panelRows) == 0 {
		return nil
	}
	// The single-adapter scenario is run once (under the first
	// distribution): show it in every distribution's panels.
	points := func(model, dist, strategy string, c int) plotter.XYs {
		var xys plotter.XYs
		for _, r := range rep.Rows {
			if r.Model == model && r.Strategy == strategy && r.Clients == c && (r.Dist == dist || r.Adapters == 1) && f(r) > 0 {
				xys = append(xys, plotter.XY{X: float64(r.Adapters), Y: f(r)})
			}
		}
		return xys
	}
	plots := make([][]*plot.Plot, len(panelRows))
	for i, pr := range panelRows {
		plots[i] = make([]*plot.Plot, len(clients))
		for j, c := range clients {
			p := plot.New()
			p.Title.Text = fmt.Sprintf("%s, %s, %d clients", pr.model, pr.dist, c)
			p.X.Label.Text = "adapters"
			p.Y.Label.Text = ylabel
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = plot.LogTicks{Prec: -1}
			p.Y.Min = 0
			var args []any
			for _, st := range rep.Config.Strategies {
				if xys := points(pr.model, pr.dist, st, c); len(xys) > 0 {
					args = append(args, st, xys)
				}
			}
			if err := plotutil.AddLinePoints(p, args...); err != nil {
				return fmt.Errorf("servebench: %w", err)
			}
			// Room above the data for the legend.
			ymax := 0.0
			for _, r := range rep.Rows {
				if r.Model == pr.model && r.Clients == c && (r.Dist == pr.dist || r.Adapters == 1) {
					ymax = max(ymax, f(r))
				}
			}
			p.Y.Max = ymax * 1.5
			p.Legend.Top = true
			p.Legend.Left = true
			plots[i][j] = p
		}
	}
	w, h := vg.Length(len(clients))*90*vg.Millimeter, vg.Length(len(panelRows))*75*vg.Millimeter
	img := vgimg.New(w, h)
	dc := draw.New(img)
	t := draw.Tiles{Rows: len(panelRows), Cols: len(clients), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, t, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	if err := atomicfile.WriteFile(path, buf.Bytes()); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	return nil
}

// Write writes PREFIX.md, PREFIX.json, PREFIX-throughput.png and
// PREFIX-p99.png.
func Write(prefix string, rep *Report) error {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	var md bytes.Buffer
	Markdown(&md, rep)
	if err := atomicfile.WriteFile(prefix+".md", md.Bytes()); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	if err := atomicfile.WriteFile(prefix+".json", js); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	if err := PlotThroughput(prefix+"-throughput.png", rep); err != nil {
		return err
	}
	return PlotP99(prefix+"-p99.png", rep)
}
