package charlm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/qdqmodel"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// legalValidation rebuilds the "legal" style's validation text as
// models/charlm/gen_charlm.py does: every file under
// /usr/share/common-licenses (sorted, links resolved, each once) joined
// by blank lines, and the last 10 % of its characters.
func legalValidation(t *testing.T) string {
	t.Helper()
	paths, _ := filepath.Glob("/usr/share/common-licenses/*")
	sort.Strings(paths)
	seen := map[string]bool{}
	var parts []string
	for _, p := range paths {
		rp, err := filepath.EvalSymlinks(p)
		if err != nil || seen[rp] {
			continue
		}
		if st, err := os.Stat(rp); err != nil || !st.Mode().IsRegular() {
			continue
		}
		seen[rp] = true
		b, err := os.ReadFile(rp)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, strings.ToValidUTF8(string(b), "\uFFFD"))
	}
	if len(parts) == 0 {
		t.Skip("no /usr/share/common-licenses (Debian's base-files) to validate the legal style on")
	}
	r := []rune(strings.Join(parts, "\n\n"))
	return string(r[int(float64(len(r))*0.9):])
}

// TestQuantizedCharLM quantizes the text generator's MatMul weights to
// int8 per output channel (weight-only QDQ), converts each style's PEFT
// SHiRA checkpoint (trained on the float model) for the quantized model and
// applies it, and reports
// what the codes kept of each adapter and the validation loss of the legal
// style on both models: base, every adapter, and the legal adapter's gain
// over base. It checks that the quantized model runs, that every adapter
// lands most of its change, and that the legal adapter still lowers the
// legal loss on the quantized model.
func TestQuantizedCharLM(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	val := legalValidation(t)
	tmp := t.TempDir()
	ws, err := charlm.Prepare(ctx, tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var names []string
	for _, e := range ws.Model.Manifest().Tensors {
		if len(e.Shape) == 2 && len(e.Source.Perm) == 0 && e.Consumers[0].OpType == "MatMul" {
			names = append(names, e.Source.Name)
		}
	}
	src, err := os.ReadFile(filepath.Join(tmp, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := qdqmodel.QuantizeWeights(src, names)
	if err != nil {
		t.Fatal(err)
	}
	qdir := filepath.Join(tmp, "q")
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(qdir, "model.onnx"), q, 0o644); err != nil {
		t.Fatal(err)
	}
	qexp := filepath.Join(qdir, "exported")
	qm, err := export.Expose(ctx, filepath.Join(qdir, "model.onnx"), qexp, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	qem, err := export.Open(qexp)
	if err != nil {
		t.Fatal(err)
	}
	defer qem.Close()
	quantized := map[string]bool{}
	for _, e := range qm.Tensors {
		if e.Quant != nil {
			quantized[e.Name] = true
		}
	}
	if len(quantized) != len(names) {
		t.Fatalf("%d of %d weights exposed quantized (notes %q)", len(quantized), len(names), qm.Notes)
	}
	v, err := textgen.LoadVocab(ws.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	open := func(dir string) (*ort.Session, *textgen.Model) {
		s, err := ort.Open(ctx, dir, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, &textgen.Model{R: s, Vocab: v}
	}
	fs, fm := open(ws.Exported)
	qs, qmod := open(qexp)
	loss := func(m *textgen.Model) float64 {
		l, err := m.Loss(ctx, val)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	report := []string{"| adapter | kept of the change (codes unchanged / clipped) | legal loss, float | legal loss, int8 |", "|---|---|---:|---:|"}
	fBase, qBase := loss(fm), loss(qmod)
	report = append(report, fmt.Sprintf("| (base) | | %.4f | %.4f |", fBase, qBase))
	if qBase-fBase > 0.1 {
		t.Errorf("the int8 model's legal loss %.4f is far above the float model's %.4f", qBase, fBase)
	}
	gains := map[string][2]float64{}
	for _, style := range charlm.Styles() {
		a, err := adapter.Open(ws.Shira[style])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		// the PEFT SHiRA checkpoint converted for the int8 model itself
		// (peft.ConvertShira: the codes are targeted, values stay floats)
		qpath := filepath.Join(qdir, style+".shira")
		if err := charlm.ConvertShira(filepath.Join(tmp, "shira", style), qem, style, qpath); err != nil {
			t.Fatal(err)
		}
		qa, err := adapter.Open(qpath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { qa.Close() })
		for _, at := range qa.Tensors {
			if !quantized[at.Name] || at.DType != tensor.Int8 || !at.ValueDType.IsFloat() {
				t.Fatalf("%s: converted tensor %s is %v with %v values", style, at.Name, at.DType, at.ValueDType)
			}
		}
		if err := fs.Set(ctx, patch.Default(a)); err != nil {
			t.Fatal(err)
		}
		if err := qs.Set(ctx, patch.Config{Adapter: qa, Alpha: a.DefaultAlpha}); err != nil {
			t.Fatal(err)
		}
		var total patch.Survival
		for _, s := range qs.Survival() {
			total.Add(s)
		}
		fl, ql := loss(fm), loss(qmod)
		gains[style] = [2]float64{fBase - fl, qBase - ql}
		report = append(report, fmt.Sprintf("| %s | %.1f %% (%.1f %% / %.1f %%) | %.4f | %.4f |", style, 100*(1-total.RelativeError()),
			100*float64(total.Unchanged)/float64(max(1, total.Touched)), 100*float64(total.Clipped)/float64(max(1, total.Touched)), fl, ql))
		if total.Touched == 0 || 1-total.RelativeError() < 0.5 {
			t.Errorf("%s: the int8 codes kept %.1f %% of the change", style, 100*(1-total.RelativeError()))
		}
	}
	if err := qs.Revert(ctx); err != nil {
		t.Fatal(err)
	}
	g := gains["legal"]
	report = append(report, "", fmt.Sprintf("legal adapter's gain on legal text: float %.4f, int8 %.4f nats/char (%.0f %% kept)", g[0], g[1], 100*g[1]/g[0]))
	t.Logf("quantized text generator (int8 per output channel, weight-only QDQ):\n%s", strings.Join(report, "\n"))
	if g[1] <= 0 {
		t.Errorf("the legal adapter does not lower the legal loss on the int8 model (gain %.4f)", g[1])
	}
}
