package ppocr_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/internal/ppocr"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

func TestDecode(t *testing.T) {
	classes := []string{"", "a", "b", " "}
	// a a blank a b b space -> "aab "
	p := []float32{
		0, 1, 0, 0,
		0, 1, 0, 0,
		1, 0, 0, 0,
		0, 1, 0, 0,
		0, 0, 1, 0,
		0, 0, 1, 0,
		0, 0, 0, 1,
	}
	got, err := ppocr.Decode(p, classes)
	if err != nil || got != "aab " {
		t.Fatalf("Decode = %q, %v", got, err)
	}
	if _, err := ppocr.Decode(p[:5], classes); err == nil {
		t.Fatal("ragged probabilities accepted")
	}
}

// TestAdapterChangesRecognizedText runs PP-OCRv4's recognizer (weights
// stored as Constant nodes, exposed by export) on a line rendered in Go,
// switches in a SHiRA adapter that swaps two letters' columns of the CTC
// head (0.03 % of that weight) and checks the string changes accordingly;
// revert must restore the string and the output bytes exactly.
func TestAdapterChangesRecognizedText(t *testing.T) {
	orttest.Require(t)
	model := orttest.ThirdPartyModel(t, "ch_PP-OCRv4_rec_infer.onnx")
	classes, err := ppocr.LoadClasses(orttest.ThirdPartyModel(t, "ppocr_keys_v1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rec")
	m, err := export.Expose(context.Background(), model, dir, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.Open(context.Background(), dir, &ort.Options{IntraOpThreads: 1, Mode: ort.ModeLive})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	const text = "HELLO WORLD 2024"
	x, _, err := ppocr.Render(text)
	if err != nil {
		t.Fatal(err)
	}
	base, baseOut, err := ppocr.Recognize(context.Background(), sess, x, classes)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rendered %q, recognized %q", text, base)
	if strings.ReplaceAll(base, " ", "") != strings.ReplaceAll(text, " ", "") {
		t.Fatalf("base model read %q, want %q", base, text)
	}

	// The head: MatMul B [in, classes] feeding the final softmax.
	head := m.Entry("linear_85.w_0")
	if head == nil || len(head.Shape) != 2 || head.Shape[1] != int64(len(classes)) {
		t.Fatalf("CTC head linear_85.w_0 not exposed as [in, %d]: %+v", len(classes), head)
	}
	class := func(s string) int {
		for i, c := range classes {
			if c == s {
				return i
			}
		}
		t.Fatalf("no class %q", s)
		return 0
	}
	a, b := class("L"), class("O")
	wb, err := sess.Weight(head.Name)
	if err != nil {
		t.Fatal(err)
	}
	w := tensor.Float32s(wb)
	in, nc := int(head.Shape[0]), int(head.Shape[1])
	var idx []uint32
	var vals []float32
	for r := 0; r < in; r++ {
		idx = append(idx, uint32(r*nc+a), uint32(r*nc+b))
		vals = append(vals, w[r*nc+b], w[r*nc+a])
	}
	at, err := adapter.NewTensor(head.Name, head.DType, head.Shape, idx, vals, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	swap := &adapter.Adapter{Name: "swap L and O", DefaultAlpha: 1, Semantics: adapter.Overwrite,
		ModelFingerprint: m.Fingerprint, Tensors: []adapter.Tensor{at}}
	if err := sess.Set(context.Background(), patch.Config{Adapter: swap, Alpha: 1}); err != nil {
		t.Fatal(err)
	}
	got, _, err := ppocr.Recognize(context.Background(), sess, x, classes)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with the adapter (%d values): %q", swap.NNZ(), got)
	want := strings.NewReplacer("L", "O", "O", "L").Replace(base)
	if got != want {
		t.Errorf("adapter: recognized %q, want %q", got, want)
	}
	if err := sess.Revert(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, againOut, err := ppocr.Recognize(context.Background(), sess, x, classes)
	if err != nil {
		t.Fatal(err)
	}
	if again != base || !bytes.Equal(againOut, baseOut) {
		t.Errorf("revert: recognized %q (outputs equal: %v), want %q bit for bit", again, bytes.Equal(againOut, baseOut), base)
	}
}
