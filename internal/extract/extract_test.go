package extract_test

import (
	"context"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/internal/extract"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/patch"
)

// tuned_a.onnx is the base model with the SHiRA adapter shira_a merged,
// exported by torch again: a full fine-tune whose change is 12.5% dense on
// the 16x16 weights. Extracting at that density keeps all of it.
func TestExtractRecoversFineTune(t *testing.T) {
	orttest.Require(t)
	base := pefttest.Open(t, "base")
	tuned := pefttest.Open(t, "tuned_a")
	for _, c := range []struct {
		density   float64
		semantics adapter.Semantics
		exact     bool
	}{{0.2, adapter.Overwrite, true}, {0.2, adapter.Delta, true}, {0.03, adapter.Overwrite, false}} {
		a, rep, err := extract.FromModels(context.Background(), base, tuned, extract.Options{Density: c.density, Semantics: c.semantics})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("density %g %v: %d of %d changed entries kept, energy %.4f", c.density, c.semantics, rep.NNZ, rep.Changed, rep.Energy)
		got := pefttest.RunExported(t, base.Dir(), patch.Default(a))
		d := pefttest.MaxRelDiff(got, pefttest.Reference(t, "shira_a", "merged_out.npy"))
		if c.exact && (rep.Energy != 1 || d > 1e-5) {
			t.Fatalf("density %g: energy %g, output difference %g; want the full fine-tune", c.density, rep.Energy, d)
		}
		if !c.exact && !(rep.Energy < 1 && rep.Energy > 0.1) {
			t.Fatalf("density %g: energy %g", c.density, rep.Energy)
		}
	}
}

func TestExtractIdentical(t *testing.T) {
	base := pefttest.Open(t, "base")
	if _, _, err := extract.FromModels(context.Background(), base, base, extract.Options{Density: 0.1}); err == nil {
		t.Fatal("extracting from identical models succeeded")
	}
}
