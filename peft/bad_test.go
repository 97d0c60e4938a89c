package peft_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"

	"github.com/shira-ort/shira-ort/internal/pefttest"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

type view struct {
	dt    safetensors.DType
	shape []uint64
	data  []byte
}

func (v view) DType() safetensors.DType { return v.dt }
func (v view) Shape() []uint64          { return v.shape }
func (v view) Data() []byte             { return v.data }
func (v view) DataLen() uint64          { return uint64(len(v.data)) }

// mutated writes a copy of models/peft/shira_a after edit changes its
// tensors (key -> view); config "" keeps the fixture's.
func mutated(t *testing.T, config string, edit func(map[string]view)) string {
	t.Helper()
	return mutatedFrom(t, "shira_a", config, edit)
}

// mutatedFrom is mutated for the checkpoint models/peft/fixture.
func mutatedFrom(t *testing.T, fixture, config string, edit func(map[string]view)) string {
	t.Helper()
	b, err := os.ReadFile(pefttest.Path(fixture, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]view{}
	for _, tv := range st.Tensors() {
		m[tv.Name] = view{tv.TensorView.DType(), tv.TensorView.Shape(), append([]byte(nil), tv.TensorView.Data()...)}
	}
	edit(m)
	out, err := safetensors.Serialize(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, peft.WeightsFile), out, 0o644); err != nil {
		t.Fatal(err)
	}
	if config == "" {
		cb, err := os.ReadFile(pefttest.Path(fixture, peft.ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		config = string(cb)
	}
	if err := os.WriteFile(filepath.Join(dir, peft.ConfigFile), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const q = "base_model.model.model.layers.0.self_attn.q_proj."

func TestBadCheckpoints(t *testing.T) {
	m := pefttest.Open(t, "base")
	cases := []struct {
		name, config, want string
		edit               func(map[string]view)
	}{
		{"missing key", "", "missing key " + q + "shira_indices", func(v map[string]view) { delete(v, q+"shira_indices") }},
		{"shape mismatch", "", "want [2, 31]", func(v map[string]view) {
			w := v[q+"shira_weight"]
			v[q+"shira_weight"] = view{w.dt, []uint64{31}, w.data[:31*4]}
		}},
		{"index out of range", "", "out of range", func(v map[string]view) {
			ix := v[q+"shira_indices"]
			binary.LittleEndian.PutUint32(ix.data[4*3:], 16) // row 16 of a 16-row weight
		}},
		{"NaN value", "", "is NaN", func(v map[string]view) {
			binary.LittleEndian.PutUint32(v[q+"shira_weight"].data[4*5:], math.Float32bits(float32(math.NaN())))
		}},
		{"negative index", "", "negative", func(v map[string]view) {
			binary.LittleEndian.PutUint32(v[q+"shira_indices"].data[0:], math.MaxUint32)
		}},
		{"fractional float index", "", "not an exact whole number", func(v map[string]view) {
			ix := v[q+"shira_indices"]
			f := make([]byte, len(ix.data))
			for i := 0; i < len(ix.data)/4; i++ {
				binary.LittleEndian.PutUint32(f[4*i:], math.Float32bits(float32(binary.LittleEndian.Uint32(ix.data[4*i:]))+0.5))
			}
			v[q+"shira_indices"] = view{safetensors.F32, ix.shape, f}
		}},
		{"unknown module", "", "closest candidates: model.layers.0.self_attn.q_proj", func(v map[string]view) {
			for _, s := range []string{"shira_weight", "shira_indices"} {
				v["base_model.model.model.layers.0.self_attn.qproj."+s] = v[q+s]
				delete(v, q+s)
			}
		}},
		{"nnz not r*(in+out)", `{"peft_type": "SHIRA", "r": 2}`, "r*(in+out) = 52", func(map[string]view) {}},
		{"nnz check with r = MaxInt64", `{"peft_type": "SHIRA", "r": 9223372036854775807}`, // lm_head: 26 * MaxInt64
			"r*(in+out) = 239807672958224170982", func(map[string]view) {}},
		{"prefixed and bare keys", "", "both " + q + "shira_weight and model.layers.0.self_attn.q_proj.shira_weight", func(v map[string]view) {
			for _, s := range []string{"shira_weight", "shira_indices"} {
				x := v[q+s]
				v[strings.TrimPrefix(q, "base_model.model.")+s] = view{x.dt, x.shape, append([]byte(nil), x.data...)}
			}
		}},
		{"wrong peft type", `{"peft_type": "LORA", "r": 1}`, "want SHIRA", func(map[string]view) {}},
		{"duplicate index", "", "duplicate index", func(v map[string]view) {
			ix := v[q+"shira_indices"].data
			nnz := len(ix) / 8
			copy(ix[4:8], ix[0:4])                // row of entry 1 = row of entry 0
			copy(ix[4*nnz+4:4*nnz+8], ix[4*nnz:]) // column too
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := mutated(t, c.config, c.edit)
			ck, err := peft.Open(dir)
			if err == nil {
				_, _, err = peft.ConvertShira(ck, m, peft.ConvertOptions{})
			}
			if err == nil {
				t.Fatal("bad checkpoint accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

// With fan_in_fan_out the indices address the module's stored [in, out]
// weight: swapping the two index rows and setting the flag gives the same
// adapter.
func TestFanInFanOut(t *testing.T) {
	m := pefttest.Open(t, "base")
	ref, err := peft.Open(pefttest.Path("shira_a"))
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := peft.ConvertShira(ref, m, peft.ConvertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(pefttest.Path("shira_a", peft.ConfigFile))
	cfgS := strings.Replace(string(cfg), `"fan_in_fan_out": false`, `"fan_in_fan_out": true`, 1)
	dir := mutated(t, cfgS, func(v map[string]view) {
		for k, x := range v {
			if strings.HasSuffix(k, "shira_indices") {
				n := len(x.data) / 2
				sw := append(append([]byte(nil), x.data[n:]...), x.data[:n]...)
				v[k] = view{x.dt, x.shape, sw}
			}
		}
	})
	ck, err := peft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := peft.ConvertShira(ck, m, peft.ConvertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.Tensors {
		w, g := &want.Tensors[i], got.Tensor(want.Tensors[i].Name)
		if g == nil || len(g.Indices) != len(w.Indices) || string(g.Values) != string(w.Values) {
			t.Fatalf("%s differs with fan_in_fan_out", w.Name)
		}
		for j := range w.Indices {
			if w.Indices[j] != g.Indices[j] {
				t.Fatalf("%s index %d: %d vs %d", w.Name, j, g.Indices[j], w.Indices[j])
			}
		}
	}
}

// lora_alpha 0 gives scale 0 (PEFT: lora_alpha/r), as an alpha_pattern
// entry of 0 does; a missing lora_alpha means scale 1.
func TestLoraAlpha(t *testing.T) {
	const cfg = `{"peft_type": "LORA", "r": 4%s}`
	for _, c := range []struct {
		name, config string
		q, other     float32 // scale of the q_proj modules and of the others
	}{
		{"alpha 6", `, "lora_alpha": 6`, 1.5, 1.5},
		{"alpha 0", `, "lora_alpha": 0`, 0, 0},
		{"alpha missing", ``, 1, 1},
		{"alpha null", `, "lora_alpha": null`, 1, 1},
		{"alpha_pattern 0", `, "lora_alpha": 6, "alpha_pattern": {"q_proj": 0}`, 0, 1.5},
		{"rslora", `, "lora_alpha": 6, "use_rslora": true`, 3, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck, err := peft.Open(mutatedFrom(t, "lora", fmt.Sprintf(cfg, c.config), func(map[string]view) {}))
			if err != nil {
				t.Fatal(err)
			}
			mods, err := ck.Lora()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range mods {
				want := c.other
				if strings.HasSuffix(m.Module, "q_proj") {
					want = c.q
				}
				if m.Scale != want {
					t.Errorf("%s: scale %g, want %g", m.Module, m.Scale, want)
				}
			}
		})
	}
}

// A LoRA checkpoint holding a module's tensors under both the prefixed and
// the bare key is refused, naming both.
func TestLoraPrefixedAndBare(t *testing.T) {
	const k = "base_model.model.lm_head.lora_A.weight"
	dir := mutatedFrom(t, "lora", "", func(v map[string]view) {
		x := v[k]
		v["lm_head.lora_A.weight"] = view{x.dt, x.shape, append([]byte(nil), x.data...)}
	})
	ck, err := peft.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ck.Lora()
	if !errors.Is(err, peft.ErrCheckpoint) || !strings.Contains(err.Error(), "both "+k+" and lm_head.lora_A.weight") {
		t.Fatalf("err = %v, want ErrCheckpoint naming both keys", err)
	}
	t.Log(err)
}

// A finite checkpoint value that overflows the stored value dtype (1e5 in
// fp16) is refused before anything is written, naming the module; the
// same checkpoint converts with float32 or bfloat16 values.
func TestConvertNonFiniteAfterRounding(t *testing.T) {
	m := pefttest.Open(t, "base")
	ck, err := peft.Open(mutated(t, "", func(v map[string]view) {
		binary.LittleEndian.PutUint32(v[q+"shira_weight"].data[4*5:], math.Float32bits(1e5))
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = peft.ConvertShira(ck, m, peft.ConvertOptions{ValueDType: tensor.Float16})
	if !errors.Is(err, peft.ErrNonFinite) || !strings.Contains(err.Error(), "model.layers.0.self_attn.q_proj") {
		t.Fatalf("err = %v, want ErrNonFinite naming the module", err)
	}
	t.Log(err)
	for _, vd := range []tensor.DType{tensor.Undefined, tensor.Float32, tensor.BFloat16} {
		if _, _, err := peft.ConvertShira(ck, m, peft.ConvertOptions{ValueDType: vd}); err != nil {
			t.Errorf("value dtype %v: %v", vd, err)
		}
	}
}

// A lora_alpha whose scale overflows float32 is refused, naming the module.
func TestLoraHugeAlpha(t *testing.T) {
	ck, err := peft.Open(mutatedFrom(t, "lora", `{"peft_type": "LORA", "r": 4, "lora_alpha": 1e300}`, func(map[string]view) {}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ck.Lora()
	if !errors.Is(err, peft.ErrNonFinite) || !strings.Contains(err.Error(), "lm_head") {
		t.Fatalf("err = %v, want ErrNonFinite naming the module", err)
	}
	t.Log(err)
}
