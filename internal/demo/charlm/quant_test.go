package charlm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
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
)

// styleValidations returns every style's held-out text (charlm.Validation).
// Under CI=true a missing text fails the test (.ci/run installs the
// packages); elsewhere the styles without text are left out, and the test
// is skipped when none has one.
func styleValidations(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, style := range charlm.Styles() {
		v, err := charlm.Validation(t.Context(), style)
		switch {
		case err == nil:
			out[style] = v
		case errors.Is(err, charlm.ErrNoText) && os.Getenv("CI") != "true":
			t.Logf("left out: %v", err)
		default:
			t.Fatal(err)
		}
	}
	if len(out) == 0 {
		t.Skip("no style text on this machine (Debian packages: " + strings.Join(charlm.TextPackages, " ") + ")")
	}
	return out
}

// scriptLoss is models/charlm/gen_charlm.py's val_loss: the mean
// cross-entropy over 48 windows of the context length, evenly spaced over
// text. The script's base losses (losses.json) are reproduced with it to
// show that StyleText read the same text as the script.
func scriptLoss(t *testing.T, m *textgen.Model, text string) float64 {
	t.Helper()
	ids := m.Vocab.Encode(text)
	c := m.Vocab.Context
	var sum float64
	var n int
	for k := range 48 {
		lo := int(float64(k) * float64(len(ids)-c-2) / 47)
		l, np, err := m.Logits(t.Context(), ids[lo:lo+c])
		if err != nil {
			t.Fatal(err)
		}
		v := m.Vocab.Size()
		for p := range np {
			sum += textgen.CrossEntropy(l[p*v:(p+1)*v], int(ids[lo+p+1]))
			n++
		}
	}
	return sum / float64(n)
}

// quantForms are the quantized forms of the text generator the tests
// measure: ONNX QDQ int8 per output channel (what mobile NPUs run) and
// ONNX Runtime's MatMulNBits 4-bit in blocks of 32 with zero points (what
// onnxruntime-genai's LLMs run; accuracy_level 0, so live and rebuilt
// sessions compute alike).
var quantForms = []struct {
	name       string
	quantize   func(model []byte, names []string) ([]byte, error)
	maxDegrade float64 // how far above the float model's loss the base may be
	packed     bool    // a default session is packed (and must compute what the live one does)
}{
	{"int8 per channel (QDQ)", qdqmodel.QuantizeWeights, 0.01, false},
	{"4-bit blocks of 32 (MatMulNBits)", func(m []byte, names []string) ([]byte, error) {
		return qdqmodel.QuantizeWeightsNBits(m, names, 4, 32, 0)
	}, 0.1, true},
}

// TestQuantizedCharLM quantizes the text generator's 13 MatMul weights
// (each form of quantForms), converts each style's PEFT SHiRA checkpoint
// (trained on the float model) for the quantized model and applies it, and
// reports what the codes kept of each adapter and each style's validation
// loss on both models, base and with the style's own adapter. It checks
// that the style texts are the ones the model was trained on (the script's
// base losses), that the quantized models run close to the float one, and
// that each adapter still lowers its own style's loss on the int8 model
// (the 4-bit model's gains are reported), and that the 4-bit model opens
// packed by default and computes there exactly what plain ORT computes on
// the offline-fused model.
func TestQuantizedCharLM(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	vals := styleValidations(t)
	var script struct {
		Base map[string]float64 `json:"base"`
	}
	if b, err := charlm.Files.ReadFile("losses.json"); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &script); err != nil {
		t.Fatal(err)
	}
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
	v, err := textgen.LoadVocab(ws.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	open := func(dir string, r patch.Rounding, mode ...ort.Mode) (*ort.Session, *textgen.Model) {
		m := ort.ModeLive
		if len(mode) > 0 {
			m = mode[0]
		}
		s, err := ort.Open(ctx, dir, &ort.Options{IntraOpThreads: 1, Mode: m, Rounding: r})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, &textgen.Model{R: s, Vocab: v}
	}
	fs, fm := open(ws.Exported, patch.RoundNearestEven)
	loss := func(m *textgen.Model, text string) float64 {
		l, err := m.Loss(ctx, text)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	type floatResult struct{ base, adapted float64 }
	floats := map[string]floatResult{}
	for _, style := range charlm.Styles() {
		val, ok := vals[style]
		if !ok {
			continue
		}
		// the text is the script's: its base loss is reproduced (to the
		// rounding of torch against ORT and the windows' float32 spacing)
		if want, ok := script.Base[style]; !ok {
			t.Fatalf("losses.json has no base loss for %s", style)
		} else if got := scriptLoss(t, fm, val); math.Abs(got-want) > 0.003 {
			t.Errorf("%s: base loss over the script's 48 windows %.4f, the script measured %.4f: not the text the model was trained on", style, got, want)
		}
		a, err := adapter.Open(ws.Shira[style])
		if err != nil {
			t.Fatal(err)
		}
		fr := floatResult{base: loss(fm, val)}
		if err := fs.Set(ctx, patch.Default(a)); err != nil {
			t.Fatal(err)
		}
		fr.adapted = loss(fm, val)
		if err := fs.Revert(ctx); err != nil {
			t.Fatal(err)
		}
		a.Close()
		floats[style] = fr
	}
	for fi, form := range quantForms {
		q, err := form.quantize(src, names)
		if err != nil {
			t.Fatal(err)
		}
		qdir := filepath.Join(tmp, fmt.Sprint("q", fi))
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
			t.Fatalf("%s: %d of %d weights exposed quantized (notes %q)", form.name, len(quantized), len(names), qm.Notes)
		}
		for _, rounding := range []patch.Rounding{patch.RoundNearestEven, patch.RoundStochastic} {
			qs, qmod := open(qexp, rounding)
			var ps *ort.Session
			var pmod *textgen.Model
			if form.packed {
				if ps, pmod = open(qexp, rounding, ort.ModePacked); ps.Mode() != ort.ModePacked {
					t.Fatalf("%s: the default session is not packed: %s", form.name, ps.FallbackReason())
				}
			}
			report := []string{
				"| style | kept of the change (codes unchanged / clipped) | base loss, float / quantized | with its adapter, float / quantized | gain, float / quantized | gain kept |",
				"|---|---|---|---|---|---:|",
			}
			for _, style := range charlm.Styles() {
				val, ok := vals[style]
				if !ok {
					continue
				}
				fr := floats[style]
				qBase := loss(qmod, val)
				if qBase-fr.base > form.maxDegrade {
					t.Errorf("%s, %s: the quantized model's loss %.4f is far above the float model's %.4f", form.name, style, qBase, fr.base)
				}
				// the PEFT SHiRA checkpoint converted for the quantized model
				// itself (peft.ConvertShira: the codes are targeted, values stay
				// floats)
				qpath := filepath.Join(qdir, style+".shira")
				if err := charlm.ConvertShira(filepath.Join(tmp, "shira", style), qem, style, qpath); err != nil {
					t.Fatal(err)
				}
				qa, err := adapter.Open(qpath)
				if err != nil {
					t.Fatal(err)
				}
				for _, at := range qa.Tensors {
					if !quantized[at.Name] || !at.DType.IsQuantCode() || !at.ValueDType.IsFloat() {
						t.Fatalf("%s, %s: converted tensor %s is %v with %v values", form.name, style, at.Name, at.DType, at.ValueDType)
					}
				}
				if err := qs.Set(ctx, patch.Default(qa)); err != nil {
					t.Fatal(err)
				}
				var total patch.Survival
				for _, s := range qs.Survival() {
					total.Add(s)
				}
				ql := loss(qmod, val)
				if ps != nil {
					if err := ps.Set(ctx, patch.Default(qa)); err != nil {
						t.Fatal(err)
					}
					// the oracle: plain ORT on the offline-fused model, bit for bit
					w, err := qem.Fuse(ctx, []patch.Config{patch.Default(qa)}, patch.WithRounding(rounding))
					if err != nil {
						t.Fatal(err)
					}
					fused := filepath.Join(qdir, "fused.onnx")
					if err := qem.WriteStandalone(ctx, w, fused); err != nil {
						t.Fatal(err)
					}
					plain, err := ort.OpenModel(ctx, fused, &ort.Options{IntraOpThreads: 1})
					if err != nil {
						t.Fatal(err)
					}
					pl, fl := loss(pmod, val), loss(&textgen.Model{R: plain, Vocab: v}, val)
					plain.Close()
					if pl != fl {
						t.Errorf("%s, %s: the packed session's loss %v differs from plain ORT's on the fused model, %v", form.name, style, pl, fl)
					}
					if math.Abs(pl-ql) > 1e-6 {
						t.Errorf("%s, %s: the packed session's loss %v is far from the live one's %v", form.name, style, pl, ql)
					}
					if err := ps.Revert(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if err := qs.Revert(ctx); err != nil {
					t.Fatal(err)
				}
				qa.Close()
				fGain, qGain := fr.base-fr.adapted, qBase-ql
				report = append(report, fmt.Sprintf("| %s | %.1f %% (%.1f %% / %.1f %%) | %.4f / %.4f | %.4f / %.4f | %.4f / %.4f | %.0f %% |",
					style, 100*(1-total.RelativeError()),
					100*float64(total.Unchanged)/float64(max(1, total.Touched)), 100*float64(total.Clipped)/float64(max(1, total.Touched)),
					fr.base, qBase, fr.adapted, ql, fGain, qGain, 100*qGain/fGain))
				if total.Touched == 0 {
					t.Errorf("%s, %s: the adapter touched no code", form.name, style)
				}
				if fGain <= 0 {
					t.Errorf("%s: the adapter's gain on its own style is %.4f on the float model", style, fGain)
				}
				if fi == 0 && qGain <= 0 {
					t.Errorf("%s, %s: the adapter's gain on its own style is %.4f on the quantized model", form.name, style, qGain)
				}
			}
			t.Logf("text generator quantized to %s, %s rounding; losses in nats/char over each style's held-out text:\n%s", form.name, rounding, strings.Join(report, "\n"))
		}
	}
}
