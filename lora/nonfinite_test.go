package lora_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// A finite scale whose product overflows float32 is refused by Delta,
// Fuse and ToShira, naming the module, and Fuse changes no weight.
func TestNonFiniteProduct(t *testing.T) {
	e, _, w, res := setup(t)
	last := &res[len(res)-1].Module
	for _, x := range [][]float32{last.A, last.B} {
		for i := range x {
			x[i] = 1
		}
	}
	last.Scale = math.MaxFloat32 // B·A is r = 4 everywhere
	bad := last.Module
	before := snapshot(w)
	_, err := lora.Fuse(t.Context(), e, w, res)
	checkNonFinite(t, "Fuse", err, bad)
	unchanged(t, before, w)
	_, _, err = lora.ToShira(t.Context(), e, res, lora.ShiraOptions{Density: 1})
	checkNonFinite(t, "ToShira", err, bad)
}

// A delta that is finite in float32 but whose sum with an fp16 weight
// overflows fp16 is refused by Fuse (with every weight unchanged, also
// those of the modules fused before it), and by ToShira with fp16 values.
func TestNonFiniteFp16(t *testing.T) {
	e, _, w, res := setup(t)
	last := &res[len(res)-1]
	entry := *last.Target.Entry
	entry.DType = tensor.Float16
	last.Target.Entry = &entry
	h := make([]uint16, len(w[entry.Name])/4)
	for i := range h {
		h[i] = tensor.Float32ToFloat16(60000)
	}
	w[entry.Name] = tensor.Bytes(h)
	last.Module.Scale *= 1e4 // |scale·B·A| reaches thousands: finite in float32, not in fp16 once added
	bad := last.Module.Module
	before := snapshot(w)
	_, err := lora.Fuse(t.Context(), e, w, res)
	checkNonFinite(t, "Fuse", err, bad)
	unchanged(t, before, w)

	last.Module.Scale *= 100 // now the values themselves overflow fp16
	_, _, err = lora.ToShira(t.Context(), e, res, lora.ShiraOptions{Density: 1, ValueDType: tensor.Float16})
	checkNonFinite(t, "ToShira", err, bad)
	if _, _, err = lora.ToShira(t.Context(), e, res, lora.ShiraOptions{Density: 1, ValueDType: tensor.Float32}); err != nil {
		t.Errorf("ToShira with float32 values: %v", err)
	}
}

func checkNonFinite(t *testing.T, what string, err error, module string) {
	t.Helper()
	if !errors.Is(err, lora.ErrNonFinite) || !errors.Is(err, peft.ErrNonFinite) || !strings.Contains(err.Error(), module) {
		t.Fatalf("%s: err = %v, want ErrNonFinite naming %s", what, err, module)
	}
	t.Logf("%s: %v", what, err)
}

func snapshot(w map[string][]byte) map[string]string {
	s := map[string]string{}
	for k, v := range w {
		s[k] = string(v)
	}
	return s
}

func unchanged(t *testing.T, before map[string]string, w map[string][]byte) {
	t.Helper()
	for k, v := range w {
		if before[k] != string(v) {
			t.Errorf("%s changed although Fuse failed", k)
		}
	}
}
