package peft

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nlpodyssey/safetensors"

	"github.com/shira-ort/shira-ort/tensor"
)

// keyPrefix is the prefix PeftModel puts before every module path.
const keyPrefix = "base_model.model."

// Checkpoint is a PEFT adapter directory loaded in memory.
type Checkpoint struct {
	// Dir is the adapter directory.
	Dir string
	// Config is its adapter_config.json.
	Config *Config

	st safetensors.SafeTensors
}

// Open reads DIR/adapter_config.json and DIR/adapter_model.safetensors.
// The safetensors header is validated (offsets, sizes, dtypes) by the
// nlpodyssey/safetensors reader; tensor contents are checked by Shira and
// Lora.
func Open(dir string) (*Checkpoint, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, WeightsFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCheckpoint, p, err)
	}
	return &Checkpoint{Dir: dir, Config: cfg, st: st}, nil
}

// Keys returns the tensor names in the safetensors file, sorted.
func (c *Checkpoint) Keys() []string {
	k := c.st.Names()
	sort.Strings(k)
	return k
}

// modules returns the module paths (prefix and suffix removed) of the keys
// ending in one of suffixes, sorted, plus the keys that end in none.
func (c *Checkpoint) modules(suffixes ...string) (mods []string, other []string) {
	seen := map[string]bool{}
	for _, k := range c.Keys() {
		matched := false
		for _, s := range suffixes {
			if strings.HasSuffix(k, "."+s) {
				m := strings.TrimPrefix(strings.TrimSuffix(k, "."+s), keyPrefix)
				if !seen[m] {
					seen[m] = true
					mods = append(mods, m)
				}
				matched = true
				break
			}
		}
		if !matched {
			other = append(other, k)
		}
	}
	sort.Strings(mods)
	return mods, other
}

// key returns the full checkpoint key and view of module's tensor suffix,
// prefixed ("base_model.model.") or bare; an error wrapping ErrCheckpoint
// when it is missing, or present under both keys (which one PEFT would
// load cannot be told, and the other set must not be dropped silently).
func (c *Checkpoint) key(module, suffix string) (string, safetensors.TensorView, error) {
	pk, bk := keyPrefix+module+"."+suffix, module+"."+suffix
	pv, pok := c.st.Tensor(pk)
	bv, bok := c.st.Tensor(bk)
	switch {
	case pok && bok:
		return "", pv, fmt.Errorf("%w: module %s: both %s and %s are present; keep one", ErrCheckpoint, module, pk, bk)
	case pok:
		return pk, pv, nil
	case bok:
		return bk, bv, nil
	}
	return "", pv, fmt.Errorf("%w: module %s: missing key %s", ErrCheckpoint, module, pk)
}

// requireKeys returns the keys and views of module's tensors with the two
// suffixes, or key's error for the first one that fails.
func (c *Checkpoint) requireKeys(module, s1, s2 string) (k1 string, v1 safetensors.TensorView, k2 string, v2 safetensors.TensorView, err error) {
	if k1, v1, err = c.key(module, s1); err != nil {
		return "", v1, "", v2, err
	}
	if k2, v2, err = c.key(module, s2); err != nil {
		return "", v1, "", v2, err
	}
	return k1, v1, k2, v2, nil
}

// floats decodes a float tensor (F32, F16, BF16, F64) into float32,
// rejecting NaN and infinities.
func floats(key string, v safetensors.TensorView) ([]float32, error) {
	d := v.Data()
	var out []float32
	switch v.DType() {
	case safetensors.F32:
		// one copy of the little-endian bytes (the project's byte order,
		// as tensor.Float32s assumes), then the check below
		out = make([]float32, len(d)/4)
		copy(tensor.Bytes(out), d)
	case safetensors.F16, safetensors.BF16:
		out = make([]float32, len(d)/2)
		for i := range out {
			h := binary.LittleEndian.Uint16(d[2*i:])
			if v.DType() == safetensors.F16 {
				out[i] = tensor.Float16ToFloat32(h)
			} else {
				out[i] = tensor.BFloat16ToFloat32(h)
			}
		}
	case safetensors.F64:
		out = make([]float32, len(d)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	default:
		return nil, fmt.Errorf("%w: %s: dtype %v, want a float type", ErrCheckpoint, key, v.DType())
	}
	for i, f := range out {
		if math.Float32bits(f)&0x7f800000 == 0x7f800000 { // all exponent bits: NaN or ±Inf
			return nil, fmt.Errorf("%w: %s: value %d is %v", ErrCheckpoint, key, i, f)
		}
	}
	return out, nil
}

// ints decodes an index tensor: I32, I64, or whole-number F32 (PEFT on
// Windows), rejecting negative values.
func ints(key string, v safetensors.TensorView) ([]int64, error) {
	d := v.Data()
	var out []int64
	switch v.DType() {
	case safetensors.I32:
		out = make([]int64, len(d)/4)
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(d[4*i:])))
		}
	case safetensors.I64:
		out = make([]int64, len(d)/8)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
		}
	case safetensors.F32:
		out = make([]int64, len(d)/4)
		for i := range out {
			f := math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
			if f != float32(math.Trunc(float64(f))) || f > 1<<24 {
				return nil, fmt.Errorf("%w: %s: float32 index %d is %v, not an exact whole number", ErrCheckpoint, key, i, f)
			}
			out[i] = int64(f)
		}
	default:
		return nil, fmt.Errorf("%w: %s: dtype %v, want I32 (or F32, as PEFT writes on Windows)", ErrCheckpoint, key, v.DType())
	}
	for i, x := range out {
		if x < 0 {
			return nil, fmt.Errorf("%w: %s: index %d is negative (%d)", ErrCheckpoint, key, i, x)
		}
	}
	return out, nil
}

// ShiraModule is one adapted module of a SHiRA checkpoint.
type ShiraModule struct {
	// Module is the module path, e.g. "model.layers.0.self_attn.q_proj".
	Module string
	// Dim0 and Dim1 index the module's stored weight: (output row, input
	// column) of [out, in], or (input, output) of [in, out] with
	// fan_in_fan_out. They are in the checkpoint's order.
	Dim0, Dim1 []int64
	// Values are the deltas, aligned with the indices.
	Values []float32
}

// NNZ returns the number of entries.
func (m *ShiraModule) NNZ() int { return len(m.Values) }

// Shira returns the modules of a SHiRA checkpoint, sorted by path. Every
// module must have both shira_weight [nnz] and shira_indices [2, nnz],
// finite values and non-negative whole-number indices; bounds are checked
// against the target weight by Convert.
func (c *Checkpoint) Shira() ([]ShiraModule, error) {
	if c.Config.PeftType != "SHIRA" {
		return nil, fmt.Errorf("%w: %s: peft_type %q, want SHIRA", ErrCheckpoint, c.Dir, c.Config.PeftType)
	}
	mods, _ := c.modules("shira_weight", "shira_indices")
	if len(mods) == 0 {
		return nil, fmt.Errorf("%w: %s: no *.shira_weight / *.shira_indices tensors (keys: %s)", ErrCheckpoint, c.Dir, sample(c.Keys()))
	}
	out := make([]ShiraModule, 0, len(mods))
	for _, m := range mods {
		wk, wv, ik, iv, err := c.requireKeys(m, "shira_weight", "shira_indices")
		if err != nil {
			return nil, err
		}
		if s := wv.Shape(); len(s) != 1 {
			return nil, fmt.Errorf("%w: %s: shape %v, want [nnz]", ErrCheckpoint, wk, s)
		}
		nnz := wv.Shape()[0]
		if s := iv.Shape(); len(s) != 2 || s[0] != 2 || s[1] != nnz {
			return nil, fmt.Errorf("%w: %s: shape %v, want [2, %d] (nnz of %s)", ErrCheckpoint, ik, s, nnz, wk)
		}
		vals, err := floats(wk, wv)
		if err != nil {
			return nil, err
		}
		ix, err := ints(ik, iv)
		if err != nil {
			return nil, err
		}
		out = append(out, ShiraModule{Module: m, Dim0: ix[:nnz], Dim1: ix[nnz:], Values: vals})
	}
	return out, nil
}

// LoraModule is one adapted module of a LoRA checkpoint.
type LoraModule struct {
	// Module is the module path.
	Module string
	// R, In and Out are the rank and the module's feature counts.
	R, In, Out int
	// A is lora_A.weight, row-major [R, In]; B is lora_B.weight [Out, R].
	A, B []float32
	// Scale is lora_alpha/r (lora_alpha/sqrt(r) with use_rslora).
	Scale float32
}

// Lora returns the modules of a LoRA checkpoint, sorted by path. DoRA
// magnitudes, LoRA biases and embedding/conv LoRA are refused, and so is a
// scale that overflows float32 (ErrNonFinite).
func (c *Checkpoint) Lora() ([]LoraModule, error) {
	if c.Config.PeftType != "LORA" {
		return nil, fmt.Errorf("%w: %s: peft_type %q, want LORA", ErrCheckpoint, c.Dir, c.Config.PeftType)
	}
	mods, other := c.modules("lora_A.weight", "lora_B.weight")
	if len(other) > 0 {
		return nil, fmt.Errorf("%w: %s: unsupported tensor %s (only nn.Linear LoRA without DoRA or lora_bias is supported)", ErrCheckpoint, c.Dir, other[0])
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("%w: %s: no *.lora_A.weight / *.lora_B.weight tensors", ErrCheckpoint, c.Dir)
	}
	out := make([]LoraModule, 0, len(mods))
	for _, m := range mods {
		ak, av, bk, bv, err := c.requireKeys(m, "lora_A.weight", "lora_B.weight")
		if err != nil {
			return nil, err
		}
		as, bs := av.Shape(), bv.Shape()
		// no zero dimension: then every dimension is bounded by the data
		// actually in the file (so int conversions below cannot overflow)
		if len(as) != 2 || len(bs) != 2 || as[0] != bs[1] || as[0] == 0 || as[1] == 0 || bs[0] == 0 {
			return nil, fmt.Errorf("%w: module %s: lora_A %v and lora_B %v do not form non-empty [out, r]·[r, in]", ErrCheckpoint, m, as, bs)
		}
		r := int(as[0])
		rank := c.Config.R
		if v, ok := patternFor(c.Config.RankPattern, m); ok {
			rank = v
		}
		if rank != 0 && rank != r {
			return nil, fmt.Errorf("%w: module %s: lora_A has rank %d but the config says r=%d", ErrCheckpoint, m, r, rank)
		}
		a, err := floats(ak, av)
		if err != nil {
			return nil, err
		}
		b, err := floats(bk, bv)
		if err != nil {
			return nil, err
		}
		alpha := float64(r) // no lora_alpha: scale 1 (PEFT's own default, 8, is not assumed)
		if c.Config.LoraAlpha != nil {
			alpha = *c.Config.LoraAlpha
		}
		if v, ok := patternFor(c.Config.AlphaPattern, m); ok {
			alpha = v
		}
		scale := alpha / float64(r)
		if c.Config.UseRSLoRA {
			scale = alpha / math.Sqrt(float64(r))
		}
		if s := float32(scale); math.IsInf(float64(s), 0) || math.IsNaN(float64(s)) {
			return nil, fmt.Errorf("%w: module %s: lora_alpha %g with r=%d gives scale %g, beyond float32", ErrNonFinite, m, alpha, r, scale)
		}
		out = append(out, LoraModule{Module: m, R: r, In: int(as[1]), Out: int(bs[0]), A: a, B: b, Scale: float32(scale)})
	}
	return out, nil
}

func sample(keys []string) string {
	if len(keys) > 5 {
		return strings.Join(keys[:5], ", ") + fmt.Sprintf(", ... (%d keys)", len(keys))
	}
	return strings.Join(keys, ", ")
}
