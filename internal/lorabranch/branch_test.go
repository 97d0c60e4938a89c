package lorabranch

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/export"
	"github.com/shira-ort/shira-ort/internal/onnxwire"
	"github.com/shira-ort/shira-ort/internal/ortadapter"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// modelsPath returns a path inside the repository's models directory.
func modelsPath(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", "models"}, parts...)...)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// charlmWeights are the charlm model's 13 nn.Linear weights as torch
// exported them (MatMul B, [in, out]).
var charlmWeights = []string{
	"onnx::MatMul_449", "onnx::MatMul_460", "onnx::MatMul_461", "onnx::MatMul_462",
	"onnx::MatMul_463", "onnx::MatMul_474", "onnx::MatMul_475", "onnx::MatMul_476",
	"onnx::MatMul_477", "onnx::MatMul_488", "onnx::MatMul_489", "onnx::MatMul_490",
	"onnx::MatMul_491",
}

func names(bs []Branch) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Weight
	}
	return out
}

func TestCandidates(t *testing.T) {
	cs, err := Candidates(readFile(t, modelsPath("charlm", "model.onnx")))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cs); !slices.Equal(got, charlmWeights) {
		t.Fatalf("charlm candidates %q, want %q", got, charlmWeights)
	}
	if cs[0].K != 128 || cs[0].N != 384 || cs[12].K != 128 || cs[12].N != 96 {
		t.Fatalf("shapes %+v %+v", cs[0], cs[12])
	}
	// the tiny MLP: head.weight is read by Gemm, so only the MatMul weights
	cs, err = Candidates(models.Tiny)
	if err != nil {
		t.Fatal(err)
	}
	want := []Branch{{Target{"fc1.weight", 0}, 16, 32}, {Target{"fc2.weight", 0}, 32, 32}}
	if !slices.Equal(cs, want) {
		t.Fatalf("tiny candidates %+v, want %+v", cs, want)
	}
}

func TestRankForDensity(t *testing.T) {
	for _, c := range []struct {
		k, n    int
		density float64
		want    int
	}{
		{128, 384, 0.01, 1}, {128, 384, 0.02, 2}, {128, 384, 0.05, 5}, {4096, 4096, 0.01, 20},
		{4096, 11008, 0.02, 60}, {16, 32, 0.001, 1}, {16, 32, 0, 0}, {16, 32, -1, 0}, {0, 32, 0.5, 0},
		{16, 32, math.NaN(), 0}, {100, 100, 1, 50},
	} {
		if got := RankForDensity(c.k, c.n, c.density); got != c.want {
			t.Errorf("RankForDensity(%d, %d, %g) = %d, want %d", c.k, c.n, c.density, got, c.want)
		}
	}
	ts := ForDensity([]Branch{{Target{"a", 0}, 128, 384}, {Target{"b", 7}, 128, 128}}, 0.02)
	if !slices.Equal(ts, []Target{{"a", 2}, {"b", 1}}) {
		t.Fatalf("ForDensity: %+v", ts)
	}
}

// The rewrite: parameters are zero overridable initializers, the MatMul's
// output feeds the branch sum, which takes the old name; the new nodes
// follow their MatMul; everything else is kept.
func TestAddBranchesGraph(t *testing.T) {
	out, err := AddBranches(models.Tiny, []Target{{"fc2.weight", 3}, {"fc1.weight", 2}})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := Branches(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Branch{{Target{"fc1.weight", 2}, 16, 32}, {Target{"fc2.weight", 3}, 32, 32}}
	if !slices.Equal(bs, want) {
		t.Fatalf("Branches %+v, want %+v", bs, want)
	}
	if bs, err := Branches(models.Tiny); err != nil || len(bs) != 0 {
		t.Fatalf("Branches of the original: %v %v", bs, err)
	}
	m, err := onnxwire.ParseModel(out, "")
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Graph()
	if err != nil {
		t.Fatal(err)
	}
	inits, _ := g.Initializers()
	for _, it := range inits {
		if !strings.Contains(it.Name(), ".lora_") {
			continue
		}
		d, err := it.Data("")
		if err != nil {
			t.Fatal(err)
		}
		if it.DType() != tensor.Float32 || len(d) == 0 || !bytes.Equal(d, make([]byte, len(d))) {
			t.Fatalf("%s: %v, %d bytes, not all zero", it.Name(), it.DType(), len(d))
		}
	}
	ins, _ := g.Inputs()
	var inNames []string
	for _, v := range ins {
		inNames = append(inNames, v.Name())
	}
	if !slices.Equal(inNames, []string{"x", "fc2.weight.lora_A", "fc2.weight.lora_B", "fc1.weight.lora_A", "fc1.weight.lora_B"}) {
		t.Fatalf("inputs %q", inNames)
	}
	nodes, _ := g.Nodes()
	var ops []string
	produced := map[string]bool{"x": true}
	for _, it := range inits {
		produced[it.Name()] = true
	}
	for _, n := range nodes {
		ops = append(ops, n.OpType())
		for _, in := range n.Inputs() {
			if !produced[in] {
				t.Fatalf("node %s reads %s before it is produced", n.Name(), in)
			}
		}
		for _, o := range n.Outputs() {
			produced[o] = true
		}
	}
	wantOps := []string{"MatMul", "MatMul", "MatMul", "Add", "Add", "Relu", "MatMul", "MatMul", "MatMul", "Add", "Add", "Relu", "Gemm"}
	if !slices.Equal(ops, wantOps) {
		t.Fatalf("ops %q, want %q", ops, wantOps)
	}
	// a second branch on the same weight, or on a parameter, is refused;
	// the parameters are not candidates
	if _, err := AddBranches(out, []Target{{"fc1.weight", 1}}); !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), "already has a LoRA branch") {
		t.Fatalf("second branch: %v", err)
	}
	if _, err := AddBranches(out, []Target{{"fc1.weight.lora_B", 1}}); !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), "branch parameter") {
		t.Fatalf("branch on a parameter: %v", err)
	}
	cs, err := Candidates(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cs); !slices.Equal(got, []string{"fc1.weight", "fc2.weight"}) {
		t.Fatalf("candidates of the branch model %q", got)
	}
}

// A weight read by two MatMuls gets one pair of parameters and a branch on
// each reader.
func TestAddBranchesSharedWeight(t *testing.T) {
	b := onnxwire.NewBuilder()
	b.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
	b.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 4}, make([]byte, 64)))
	b.AddNode("", "MatMul", []string{"x", "W"}, []string{"h"})
	b.AddNode("mm2", "MatMul", []string{"h", "W"}, []string{"y"})
	b.AddOutput("y", tensor.Float32, []int64{-1, 4}, "batch")
	out, err := AddBranches(b.Bytes(), []Target{{"W", 2}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := onnxwire.ParseModel(out, "")
	g, _ := m.Graph()
	nodes, _ := g.Nodes()
	var got []string
	for _, n := range nodes {
		got = append(got, n.Name()+":"+strings.Join(n.Inputs(), ",")+"->"+strings.Join(n.Outputs(), ","))
	}
	want := []string{
		":x,W->h/lora_base",
		"h/lora_A/MatMul:x,W.lora_A->h/lora_XA",
		"h/lora_B/MatMul:h/lora_XA,W.lora_B->h/lora_XAB",
		"h/lora/Add:h/lora_base,h/lora_XAB->h",
		"mm2:h,W->y/lora_base",
		"mm2/lora_A/MatMul:h,W.lora_A->y/lora_XA",
		"mm2/lora_B/MatMul:y/lora_XA,W.lora_B->y/lora_XAB",
		"mm2/lora/Add:y/lora_base,y/lora_XAB->y",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("nodes\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAddBranchesRefuses(t *testing.T) {
	tiny := models.Tiny
	sub := onnxwire.NewBuilder()
	sub.AddNode("inner", "MatMul", []string{"x", "W"}, []string{"z"})
	sub.AddOutput("z", tensor.Float32, []int64{-1, 4})
	ifm := onnxwire.NewBuilder()
	ifm.AddInput("x", tensor.Float32, []int64{-1, 4}, "batch")
	ifm.AddInput("c", tensor.Bool, []int64{})
	ifm.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{4, 4}, make([]byte, 64)))
	ifm.AddInitializer(onnxwire.NewTensor("W16", tensor.Float16, []int64{4, 4}, make([]byte, 32)))
	ifm.AddInitializer(onnxwire.NewTensor("W3", tensor.Float32, []int64{1, 4, 4}, make([]byte, 64)))
	ifm.AddInitializer(onnxwire.NewTensor("Wout", tensor.Float32, []int64{4, 4}, make([]byte, 64)))
	ifm.AddInitializer(onnxwire.NewTensor("unused", tensor.Float32, []int64{4, 4}, make([]byte, 64)))
	ifm.AddNode("top", "MatMul", []string{"x", "W"}, []string{"y"})
	ifm.AddNode("half", "MatMul", []string{"x", "W16"}, []string{"y16"})
	ifm.AddNode("three", "MatMul", []string{"x", "W3"}, []string{"y3"})
	ifm.AddNode("o", "MatMul", []string{"x", "Wout"}, []string{"yo"})
	ifm.AddNode("if", "If", []string{"c"}, []string{"z"}, onnxwire.GraphAttr("then_branch", sub.Graph()))
	ifm.AddNodeProto(onnxwire.NewNode("custom", "MatMul", "com.example", []string{"x", "unused2"}, []string{"yc"}))
	ifm.AddInitializer(onnxwire.NewTensor("unused2", tensor.Float32, []int64{4, 4}, make([]byte, 64)))
	ifm.AddOutput("y", tensor.Float32, []int64{-1, 4})
	ifm.AddOutput("Wout", tensor.Float32, []int64{4, 4})
	ifm.AddNode("clash", "Identity", []string{"x"}, []string{"Wc.lora_A"})
	ifm.AddInitializer(onnxwire.NewTensor("Wc", tensor.Float32, []int64{4, 4}, make([]byte, 64)))
	ifm.AddNode("mmc", "MatMul", []string{"x", "Wc"}, []string{"yc2"})
	sg := ifm.Bytes()

	for _, c := range []struct {
		name    string
		model   []byte
		targets []Target
		want    string
	}{
		{"gemm", tiny, []Target{{"head.weight", 1}}, `read by Gemm node "/head/Gemm" as input 1`},
		{"unknown", tiny, []Target{{"fc1.weigth", 1}}, `no initializer "fc1.weigth" in the main graph (did you mean "fc1.weight", "fc2.weight"?)`},
		{"not a weight", tiny, []Target{{"fc1.bias", 1}}, `"fc1.bias" has shape [32]`},
		{"rank 0", tiny, []Target{{"fc1.weight", 0}}, "rank 0 is not in [1, 16]"},
		{"rank too big", tiny, []Target{{"fc1.weight", 17}}, "rank 17 is not in [1, 16]"},
		{"twice", tiny, []Target{{"fc1.weight", 1}, {"fc1.weight", 2}}, "listed twice"},
		{"none", tiny, nil, "no targets"},
		{"subgraph", sg, []Target{{"W", 1}}, "control-flow subgraph"},
		{"fp16", sg, []Target{{"W16", 1}}, "is float16; only float32"},
		{"rank 3", sg, []Target{{"W3", 1}}, "has shape [1 4 4]"},
		{"graph output", sg, []Target{{"Wout", 1}}, "is a graph output"},
		{"no reader", sg, []Target{{"unused", 1}}, "no node reads"},
		{"custom domain", sg, []Target{{"unused2", 1}}, "read by com.example.MatMul node"},
		{"name clash", sg, []Target{{"Wc", 1}}, `"Wc.lora_A"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := AddBranches(c.model, c.targets)
			if !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrTarget containing %q", err, c.want)
			}
		})
	}
	// a weight behind a Transpose (what Expose folds) and a Conv weight
	for _, dir := range []string{"transpose", "conv"} {
		model := readFile(t, modelsPath("testdata", dir, "model.onnx"))
		cs, err := Candidates(model)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := onnxwire.ParseModel(model, "")
		g, _ := m.Graph()
		inits, _ := g.Initializers()
		for _, it := range inits {
			if d, _ := it.Dims(); len(d) < 2 || slices.ContainsFunc(cs, func(b Branch) bool { return b.Weight == it.Name() }) {
				continue
			}
			if _, err := AddBranches(model, []Target{{it.Name(), 1}}); !errors.Is(err, ErrTarget) {
				t.Errorf("%s: %s accepted: %v", dir, it.Name(), err)
			} else {
				t.Logf("%s: %v", dir, err)
			}
		}
	}
	// declared dims without the data: nothing is allocated for them
	huge := onnxwire.NewBuilder()
	huge.AddInput("x", tensor.Float32, []int64{-1, 1 << 30}, "batch")
	huge.AddInitializer(onnxwire.NewTensor("W", tensor.Float32, []int64{1 << 30, 1 << 30}, nil))
	huge.AddNode("", "MatMul", []string{"x", "W"}, []string{"y"})
	huge.AddOutput("y", tensor.Float32, []int64{-1, 1 << 30}, "batch")
	if _, err := AddBranches(huge.Bytes(), []Target{{"W", 1}}); err == nil || !strings.Contains(err.Error(), "raw_data has 0 bytes") {
		t.Fatalf("weight without data: %v", err)
	}
	huge.AddInitializer(onnxwire.TensorSpec{Name: "E", DType: tensor.Float32, Dims: []int64{1 << 30, 1 << 30},
		External: &onnxwire.ExternalData{Location: "w.bin", Length: -1}}.Tensor())
	huge.AddNode("", "MatMul", []string{"x", "E"}, []string{"ye"})
	if _, err := AddBranches(huge.Bytes(), []Target{{"E", 1}}); !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), "2 GB protobuf limit") {
		t.Fatalf("external weight over the limit: %v", err)
	}
	if _, err := AddBranches([]byte("not a model"), []Target{{"W", 1}}); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestParamsAndAdapter(t *testing.T) {
	bs := []Branch{{Target{"W1", 2}, 3, 4}, {Target{"W2", 1}, 4, 2}}
	p1, err := Random(bs, 7, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := Random(bs, 7, 0.5)
	p3, _ := Random(bs, 8, 0.5)
	if !slices.Equal(p1[0].A, p2[0].A) || !slices.Equal(p1[1].B, p2[1].B) || slices.Equal(p1[0].A, p3[0].A) {
		t.Fatal("Random is not a function of the seed")
	}
	if len(p1[0].A) != 6 || len(p1[0].B) != 8 || len(p1[1].A) != 4 || len(p1[1].B) != 2 {
		t.Fatalf("sizes %d %d %d %d", len(p1[0].A), len(p1[0].B), len(p1[1].A), len(p1[1].B))
	}
	d, err := p1[0].Delta()
	if err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		for n := range 4 {
			want := float64(p1[0].A[k*2])*float64(p1[0].B[n]) + float64(p1[0].A[k*2+1])*float64(p1[0].B[4+n])
			if d[k*4+n] != float32(want) {
				t.Fatalf("delta[%d,%d] = %g, want %g", k, n, d[k*4+n], want)
			}
		}
	}
	// the spread of A·B follows scale
	big, err := Random([]Branch{{Target{"W", 8}, 256, 256}}, 1, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	bd, _ := big[0].Delta()
	var ss float64
	for _, v := range bd {
		ss += float64(v) * float64(v)
	}
	if sd := math.Sqrt(ss / float64(len(bd))); math.Abs(sd-0.25) > 0.03 {
		t.Fatalf("std of A·B = %g, want about 0.25", sd)
	}
	for _, s := range []float64{-1, math.NaN(), math.Inf(1)} {
		if _, err := Random(bs, 1, s); err == nil {
			t.Errorf("scale %g accepted", s)
		}
	}
	if _, err := Random(bs, 1, 1e300); !errors.Is(err, ErrNonFinite) {
		t.Errorf("overflowing scale: %v", err)
	}
	if _, err := Random([]Branch{{Target{"W", 0}, 3, 4}}, 1, 1); err == nil {
		t.Error("rank 0 accepted")
	}

	// Merge adds A·B
	w := map[string][]byte{"W1": tensor.Bytes(make([]float32, 12)), "W2": tensor.Bytes([]float32{1, 2, 3, 4, 5, 6, 7, 8})}
	if err := Merge(w, p1); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tensor.Float32s(w["W1"]), d) {
		t.Fatal("Merge into zeros is not Delta")
	}
	if err := Merge(map[string][]byte{"W1": w["W1"]}, p1); err == nil || !strings.Contains(err.Error(), "no weight") {
		t.Fatalf("missing weight: %v", err)
	}
	before := slices.Clone(w["W1"])
	if err := Merge(map[string][]byte{"W1": w["W1"], "W2": tensor.Bytes([]float32{math.MaxFloat32, 0, 0, 0, 0, 0, 0, 0})},
		[]Params{p1[0], {Branch: p1[1].Branch, A: []float32{1e30, 0, 0, 0}, B: []float32{1e30, 0}}}); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("overflowing merge: %v", err)
	}
	if !bytes.Equal(before, w["W1"]) {
		t.Fatal("a failed Merge changed a weight")
	}

	// the adapter file: names, dims and bytes of the branch inputs
	data, err := Encode(p1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.onnx_adapter")
	if err := WriteAdapter(path, p1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, path), data) {
		t.Fatal("WriteAdapter wrote other bytes than Encode returns")
	}
	want, _ := ortadapter.Encode(&ortadapter.Adapter{Parameters: []ortadapter.Parameter{
		{Name: "W1.lora_A", DType: tensor.Float32, Dims: []int64{3, 2}, Data: tensor.Bytes(p1[0].A)},
		{Name: "W1.lora_B", DType: tensor.Float32, Dims: []int64{2, 4}, Data: tensor.Bytes(p1[0].B)},
		{Name: "W2.lora_A", DType: tensor.Float32, Dims: []int64{4, 1}, Data: tensor.Bytes(p1[1].A)},
		{Name: "W2.lora_B", DType: tensor.Float32, Dims: []int64{1, 2}, Data: tensor.Bytes(p1[1].B)},
	}})
	if !bytes.Equal(data, want) {
		t.Fatal("Encode differs from the ortadapter encoding of the branch inputs")
	}
	bad := []Params{p1[0], p1[0]}
	if _, err := Encode(bad); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate: %v", err)
	}
	short := []Params{{Branch: p1[0].Branch, A: p1[0].A[:5], B: p1[0].B}}
	if _, err := Encode(short); err == nil {
		t.Fatal("short A accepted")
	}
	if err := WriteAdapter(path, nil); err == nil {
		t.Fatal("empty adapter accepted")
	}
}

// FromResolved lays the module out so that W + A·B is W + s·B·A in the
// stored layout, for both layouts.
func TestFromResolvedLayouts(t *testing.T) {
	const r, in, out = 2, 3, 5
	mod := peft.LoraModule{Module: "m", R: r, In: in, Out: out, Scale: 1.5,
		A: []float32{1, 2, 3, 4, 5, 6}, B: []float32{1, -1, 2, 0.5, 0, 3, -2, 1, 0.25, 4}}
	merged := func(o, i int) float64 { // s·(B·A)[o, i]
		var s float64
		for j := range r {
			s += float64(mod.B[o*r+j]) * float64(mod.A[j*in+i])
		}
		return 1.5 * s
	}
	for _, layout := range []peft.Layout{peft.InOut, peft.OutIn} {
		shape := []int64{in, out}
		if layout == peft.OutIn {
			shape = []int64{out, in}
		}
		e := &export.TensorEntry{Name: "W", DType: tensor.Float32, Shape: shape}
		ps, err := FromResolved([]lora.Resolved{{Module: mod, Target: peft.Target{Entry: e, Layout: layout, Out: out, In: in}}})
		if err != nil {
			t.Fatal(err)
		}
		p := ps[0]
		if p.Weight != "W" || p.Rank != r || int64(p.K) != shape[0] || int64(p.N) != shape[1] {
			t.Fatalf("%v: %+v", layout, p.Branch)
		}
		d, err := p.Delta()
		if err != nil {
			t.Fatal(err)
		}
		for o := range out {
			for i := range in {
				tg := peft.Target{Layout: layout, Out: out, In: in}
				if got, want := float64(d[tg.Flat(int64(o), int64(i))]), merged(o, i); math.Abs(got-want) > 1e-6 {
					t.Fatalf("%v (%d,%d): %g, want %g", layout, o, i, got, want)
				}
			}
		}
		// shape disagreeing with the layout
		e.Shape = []int64{shape[1], shape[0]}
		if _, err := FromResolved([]lora.Resolved{{Module: mod, Target: peft.Target{Entry: e, Layout: layout, Out: out, In: in}}}); err == nil {
			t.Fatalf("%v: transposed shape accepted", layout)
		}
	}
	huge := mod
	huge.Scale = 1e38
	huge.B = slices.Repeat([]float32{1e10}, out*r)
	e := &export.TensorEntry{Name: "W", DType: tensor.Float32, Shape: []int64{in, out}}
	if _, err := FromResolved([]lora.Resolved{{Module: huge, Target: peft.Target{Entry: e, Layout: peft.InOut, Out: out, In: in}}}); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("overflowing scale: %v", err)
	}
}
