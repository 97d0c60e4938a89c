package adapter

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/shira-ort/shira-ort/adapter/internal/shirafb"
	"github.com/shira-ort/shira-ort/tensor"
)

func sample(t testing.TB) *Adapter {
	t.Helper()
	t1, err := NewTensor("w1", tensor.Float32, []int64{4, 5}, []uint32{7, 1, 19}, []float32{1.5, -2, 3.25e38}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := NewTensor("w2", tensor.Float16, []int64{3, 3}, []uint32{0, 8}, []float32{0.25, -0.5}, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	t3, err := NewTensor("w3", tensor.BFloat16, []int64{2, 2, 2}, []uint32{3}, []float32{2}, tensor.BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	t2.BaseSHA256[0], t2.BaseSHA256[31] = 0xab, 0xcd
	return &Adapter{
		Name: "sample", DefaultAlpha: 0.5, Semantics: Delta, ModelFingerprint: "00ff",
		Metadata: map[string]string{"k": "v", "empty": ""},
		Tensors:  []Tensor{t1, t2, t3},
	}
}

// equalAdapters compares the exported content.
func equalAdapters(t *testing.T, got, want *Adapter) {
	t.Helper()
	g, w := *got, *want
	g.m, w.m = nil, nil
	norm := func(a *Adapter) {
		if len(a.Metadata) == 0 {
			a.Metadata = nil
		}
		ts := make([]Tensor, len(a.Tensors))
		copy(ts, a.Tensors)
		for i := range ts {
			if len(ts[i].Indices) == 0 {
				ts[i].Indices = nil
			}
			if len(ts[i].Values) == 0 {
				ts[i].Values = nil
			}
			if len(ts[i].Shape) == 0 {
				ts[i].Shape = []int64{}
			}
		}
		a.Tensors = ts
	}
	norm(&g)
	norm(&w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("round trip mismatch:\n got %+v\nwant %+v", g, w)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, enc := range []IndexEncoding{FlatU32, GapU16} {
		t.Run(enc.String(), func(t *testing.T) { testRoundTrip(t, enc) })
	}
}

func testRoundTrip(t *testing.T, enc IndexEncoding) {
	a := sample(t)
	b, err := EncodeWith(a, EncodeOptions{Index: enc})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	equalAdapters(t, got, a)
	if got.NNZ() != 6 || got.Tensor("w2").NNZ() != 2 || !got.Tensor("w2").HasBase() || got.Tensor("w1").HasBase() {
		t.Fatalf("NNZ/HasBase wrong")
	}
	// zero copy: values (and flat indices) alias b
	for _, tt := range got.Tensors {
		ip := &tt.Indices[0]
		vp := &tt.Values[0]
		if (enc == FlatU32 && !inside(b, ptrOf(ip))) || !inside(b, ptrOf(vp)) {
			t.Errorf("%s: decode copied", tt.Name)
		}
		if !aligned(tt.Values, 8) {
			t.Errorf("%s: values not 8-byte aligned", tt.Name)
		}
	}
	// unaligned buffer: still decodes (by copying)
	shifted := append(make([]byte, 1, len(b)+1), b...)[1:]
	got2, err := Decode(shifted)
	if err != nil {
		t.Fatal(err)
	}
	equalAdapters(t, got2, a)
	// deterministic encoding
	b2, _ := EncodeWith(a, EncodeOptions{Index: enc})
	if !bytes.Equal(b, b2) {
		t.Fatal("encoding not deterministic")
	}
}

func TestEmptyAdapter(t *testing.T) {
	a := &Adapter{DefaultAlpha: 1}
	b, err := Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.DefaultAlpha != 1 || len(got.Tensors) != 0 || got.Semantics != Overwrite {
		t.Fatalf("got %+v", got)
	}
}

func TestWriteOpen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.shira")
	a := sample(t)
	if err := Write(p, a); err != nil {
		t.Fatal(err)
	}
	// what a writer killed midway leaves (internal/atomicfile's temporary
	// name, a process id that cannot exist): the next Write removes it
	stale := filepath.Join(dir, ".a.shira.tmp-999999999-1")
	if err := os.WriteFile(stale, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, a); err != nil { // overwrite in place
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "a.shira" {
		t.Fatalf("temp files left: %v", ents)
	}
	got, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	equalAdapters(t, got, a)
	if err := got.Close(); err != nil {
		t.Fatal(err)
	}
	if got.Tensors[0].Indices != nil {
		t.Fatal("Close did not clear aliases")
	}
	if err := got.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bad.shira"), []byte("not an adapter at all"), 0o644)
	if _, err := Open(filepath.Join(dir, "bad.shira")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open(bad) = %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing.shira")); err == nil {
		t.Fatal("Open(missing) succeeded")
	}
	if err := Write(filepath.Join(dir, "nodir", "x.shira"), a); err == nil {
		t.Fatal("Write into missing dir succeeded")
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(a *Adapter)
		want string
	}{
		{"ok", func(a *Adapter) {}, ""},
		{"semantics", func(a *Adapter) { a.Semantics = 7 }, "semantics"},
		{"alpha", func(a *Adapter) { a.DefaultAlpha = float32(math.NaN()) }, "alpha"},
		{"dup name", func(a *Adapter) { a.Tensors[1].Name = "w1" }, "duplicate tensor name"},
		{"empty name", func(a *Adapter) { a.Tensors[1].Name = "" }, "empty name"},
		{"dtype", func(a *Adapter) { a.Tensors[0].DType = tensor.Int32 }, "weight dtype"},
		{"vdtype", func(a *Adapter) { a.Tensors[0].ValueDType = tensor.Float64 }, "value dtype"},
		{"shape", func(a *Adapter) { a.Tensors[0].Shape = []int64{-1, 2} }, "negative"},
		{"values len", func(a *Adapter) { a.Tensors[0].Values = a.Tensors[0].Values[:4] }, "bytes of float32"},
		{"unsorted", func(a *Adapter) { a.Tensors[0].Indices[0], a.Tensors[0].Indices[1] = 7, 1 }, "strictly increasing"},
		{"duplicate index", func(a *Adapter) { a.Tensors[0].Indices[1] = 1 }, "strictly increasing"},
		{"out of range", func(a *Adapter) { a.Tensors[0].Indices[2] = 20 }, "out of range"},
		{"unaligned", func(a *Adapter) {
			buf := tensor.Bytes(make([]int64, 2))
			a.Tensors[0].Values = buf[1:13]
		}, "aligned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := sample(t)
			c.mod(a)
			err := a.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrUnsupported", err)
			}
			if _, err := Encode(a); err == nil {
				t.Fatal("Encode accepted an invalid adapter")
			}
		})
	}
}

func TestSort(t *testing.T) {
	tt, err := NewTensor("x", tensor.Float32, []int64{10}, []uint32{9, 2, 5}, []float32{9, 2, 5}, tensor.Float16)
	if err != nil {
		t.Fatal(err)
	}
	vals, _ := tt.ValuesFloat32()
	if !reflect.DeepEqual(tt.Indices, []uint32{2, 5, 9}) || !reflect.DeepEqual(vals, []float32{2, 5, 9}) {
		t.Fatalf("sort: %v %v", tt.Indices, vals)
	}
	if _, err := NewTensor("x", tensor.Float32, []int64{10}, []uint32{3, 3}, []float32{1, 2}, tensor.Float32); err == nil {
		t.Fatal("duplicate index accepted")
	}
	a := &Adapter{Tensors: []Tensor{{Name: "b", DType: tensor.Float32, ValueDType: tensor.Float32}, {Name: "a", DType: tensor.Float32, ValueDType: tensor.Float32}}}
	if err := a.Sort(); err != nil || a.Tensors[0].Name != "a" {
		t.Fatalf("Adapter.Sort: %v %v", err, a.Tensors[0].Name)
	}
}

// buildRaw builds a file with the generated builders directly, to produce
// structurally valid files with content this package's Encode refuses.
func buildRaw(version uint32, enc shirafb.IndexEncoding, base []byte, dtype int32) []byte {
	fb := flatbuffers.NewBuilder(0)
	name := fb.CreateString("w")
	var baseOff flatbuffers.UOffsetT
	if base != nil {
		baseOff = fb.CreateByteVector(base)
	}
	shirafb.TensorStart(fb)
	shirafb.TensorAddName(fb, name)
	shirafb.TensorAddDtype(fb, dtype)
	shirafb.TensorAddValueDtype(fb, int32(tensor.Float32))
	shirafb.TensorAddIndexEncoding(fb, enc)
	if base != nil {
		shirafb.TensorAddBaseSha256(fb, baseOff)
	}
	tt := shirafb.TensorEnd(fb)
	vec := offsetVector(fb, []flatbuffers.UOffsetT{tt})
	shirafb.AdapterStart(fb)
	shirafb.AdapterAddFormatVersion(fb, version)
	shirafb.AdapterAddTensors(fb, vec)
	fb.FinishWithFileIdentifier(shirafb.AdapterEnd(fb), []byte("SHRA"))
	return fb.FinishedBytes()
}

func TestDecodeRefuses(t *testing.T) {
	if _, err := Decode(buildRaw(1, 0, nil, int32(tensor.Float32))); err != nil {
		t.Fatalf("valid raw file: %v", err)
	}
	cases := []struct {
		name string
		b    []byte
		is   error
		want string
	}{
		{"version 2", buildRaw(2, 0, nil, 1), ErrUnsupported, "format version 2"},
		{"version missing", buildRaw(0, 0, nil, 1), ErrInvalid, "format_version missing"},
		{"encoding", buildRaw(1, 3, nil, 1), ErrUnsupported, "index encoding 3"},
		{"base len", buildRaw(1, 0, []byte{1, 2, 3}, 1), ErrInvalid, "base_sha256"},
		{"dtype", buildRaw(1, 0, nil, int32(tensor.Int64)), ErrUnsupported, "weight dtype int64"},
		{"short", []byte("SHR"), ErrInvalid, "too short"},
		{"identifier", append([]byte{8, 0, 0, 0}, "XXXX1234"...), ErrInvalid, "identifier"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.b)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode = %v, want %v containing %q", err, c.is, c.want)
			}
		})
	}
}

// TestCorruptEveryByte flips every byte of a small file in several ways:
// Decode must never panic, and whatever it accepts must be a valid adapter.
// A truncated file may only decode when nothing it needs was cut (the
// builder's trailing padding), and then to the same adapter.
func TestCorruptEveryByte(t *testing.T) {
	want := sample(t)
	b, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			c := append([]byte(nil), b...)
			c[i] ^= x
			a, err := Decode(c)
			if err != nil {
				rejected++
				if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("byte %d ^ %#x: error %v wraps neither sentinel", i, x, err)
				}
				continue
			}
			if err := a.Validate(); err != nil {
				t.Fatalf("byte %d ^ %#x: accepted an invalid adapter: %v", i, x, err)
			}
		}
		if a, err := Decode(b[:i]); err == nil { // truncation
			t.Logf("truncation at %d decoded", i)
			equalAdapters(t, a, want)
		}
	}
	t.Logf("%d bytes, %d of %d corruptions rejected", len(b), rejected, 3*len(b))
	if rejected == 0 {
		t.Fatal("no corruption was rejected")
	}
}

func FuzzDecode(f *testing.F) {
	b, err := Encode(sample(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	flat, err := EncodeWith(sample(f), EncodeOptions{Index: FlatU32})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(flat)
	for _, s := range gapSeeds(f) {
		f.Add(s)
	}
	f.Add(buildRaw(1, 0, nil, 1))
	f.Add(nanValued(f)) // a non-finite value: refused
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Decode(data)
		if err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid adapter: %v", err)
		}
		// what decodes must re-encode and decode to the same thing
		b, err := Encode(a)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		a2, err := Decode(b)
		if err != nil {
			t.Fatalf("decode of re-encoding: %v", err)
		}
		equalAdapters(t, a2, a)
	})
}

// TestNonFiniteValuesRefused: a NaN or infinite value, in any value dtype,
// is refused by Validate, Encode and Decode (ErrNonFinite, ErrInvalid).
func TestNonFiniteValuesRefused(t *testing.T) {
	for _, vdt := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16} {
		for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			at, err := NewTensor("w", tensor.Float32, []int64{4}, []uint32{0, 2}, []float32{1, v}, vdt)
			if err != nil {
				t.Fatal(err)
			}
			a := &Adapter{Name: "bad", DefaultAlpha: 1, Tensors: []Tensor{at}}
			if err := a.Validate(); !errors.Is(err, ErrNonFinite) || !errors.Is(err, ErrInvalid) {
				t.Errorf("%v %v: Validate = %v, want ErrNonFinite", vdt, v, err)
			}
			if _, err := Encode(a); !errors.Is(err, ErrNonFinite) {
				t.Errorf("%v %v: Encode = %v, want ErrNonFinite", vdt, v, err)
			}
		}
	}
	// a file written before the check (a value set after encoding) is refused on Decode
	if _, err := Decode(nanValued(t)); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("Decode of a NaN value = %v, want ErrNonFinite", err)
	}
}

// nanValued returns the encoding of an adapter whose second value is NaN
// (set in the bytes after encoding, as an old or hostile writer could).
func nanValued(tb testing.TB) []byte {
	tb.Helper()
	good, err := NewTensor("w", tensor.Float32, []int64{4}, []uint32{0, 2}, []float32{1, 7}, tensor.Float32)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := Encode(&Adapter{Name: "ok", DefaultAlpha: 1, Tensors: []Tensor{good}})
	if err != nil {
		tb.Fatal(err)
	}
	i := bytes.Index(b, []byte{0, 0, 0xe0, 0x40}) // 7.0f, little-endian
	if i < 0 {
		tb.Fatal("value not found in the encoding")
	}
	copy(b[i:], []byte{0, 0, 0xc0, 0x7f}) // NaN
	return b
}

// TestCodeTensorRoundTrip: an overwrite adapter holding codes (int8 and
// uint16) encodes and decodes with its codes; a delta one is refused; a
// code that does not fit the dtype is refused by NewCodeTensor.
func TestCodeTensorRoundTrip(t *testing.T) {
	a := &Adapter{Name: "codes", Semantics: Overwrite, DefaultAlpha: 1}
	for _, c := range []struct {
		dt    tensor.DType
		codes []int32
	}{{tensor.Int8, []int32{-128, 5, 127}}, {tensor.Uint16, []int32{0, 40000, 65535}}} {
		ct, err := NewCodeTensor("w"+c.dt.String(), c.dt, []int64{4, 5}, []uint32{19, 0, 7}, c.codes)
		if err != nil {
			t.Fatal(err)
		}
		a.Tensors = append(a.Tensors, ct)
	}
	b, err := Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for k, ct := range got.Tensors {
		if !ct.CodeValues() || !slices.Equal(ct.Indices, []uint32{0, 7, 19}) {
			t.Fatalf("tensor %s: code values %v, indices %v", ct.Name, ct.CodeValues(), ct.Indices)
		}
		want := []int32{-128, 5, 127} // sorted by index: 0→5, 7→127, 19→-128
		want = []int32{want[1], want[2], want[0]}
		if k == 1 {
			want = []int32{40000, 65535, 0}
		}
		for j := range ct.Indices {
			if ct.Code(j) != want[j] {
				t.Fatalf("tensor %s: code %d = %d, want %d", ct.Name, j, ct.Code(j), want[j])
			}
		}
	}
	a.Semantics = Delta
	if _, err := Encode(a); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a delta adapter holding codes encoded: %v", err)
	}
	if _, err := NewCodeTensor("w", tensor.Int8, []int64{4}, []uint32{1}, []int32{128}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("code 128 as int8: %v", err)
	}
}
