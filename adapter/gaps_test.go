package adapter

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/shira-ort/shira-ort/adapter/internal/shirafb"
	"github.com/shira-ort/shira-ort/tensor"
)

// buildGapRaw builds a one-tensor file with the given raw gaps, nvals
// float32 values, shape and (optionally) flat indices too.
func buildGapRaw(gaps []uint16, nvals int, shape []int64, flat []uint32) []byte {
	fb := flatbuffers.NewBuilder(0)
	name := fb.CreateString("w")
	fb.Prep(8, 4*nvals)
	vals := fb.CreateByteVector(make([]byte, 4*nvals))
	fb.StartVector(2, len(gaps), 8)
	for i := len(gaps) - 1; i >= 0; i-- {
		fb.PlaceUint16(gaps[i])
	}
	g := fb.EndVector(len(gaps))
	var ix flatbuffers.UOffsetT
	if flat != nil {
		fb.StartVector(4, len(flat), 8)
		for i := len(flat) - 1; i >= 0; i-- {
			fb.PlaceUint32(flat[i])
		}
		ix = fb.EndVector(len(flat))
	}
	fb.StartVector(8, len(shape), 8)
	for i := len(shape) - 1; i >= 0; i-- {
		fb.PlaceInt64(shape[i])
	}
	sh := fb.EndVector(len(shape))
	shirafb.TensorStart(fb)
	shirafb.TensorAddName(fb, name)
	shirafb.TensorAddShape(fb, sh)
	shirafb.TensorAddDtype(fb, int32(tensor.Float32))
	shirafb.TensorAddValueDtype(fb, int32(tensor.Float32))
	shirafb.TensorAddIndexEncoding(fb, shirafb.IndexEncodingGapU16)
	if flat != nil {
		shirafb.TensorAddIndices(fb, ix)
	}
	shirafb.TensorAddValues(fb, vals)
	shirafb.TensorAddIndexGaps(fb, g)
	tt := shirafb.TensorEnd(fb)
	vec := offsetVector(fb, []flatbuffers.UOffsetT{tt})
	shirafb.AdapterStart(fb)
	shirafb.AdapterAddFormatVersion(fb, FormatVersion)
	shirafb.AdapterAddTensors(fb, vec)
	fb.FinishWithFileIdentifier(shirafb.AdapterEnd(fb), []byte("SHRA"))
	return fb.FinishedBytes()
}

// gapSeeds are fuzz seeds for the GapU16 decoder: valid files with and
// without escapes, and broken ones.
func gapSeeds(tb testing.TB) map[string][]byte {
	tb.Helper()
	t, err := NewTensor("big", tensor.Float32, []int64{65536, 65536}, []uint32{0, 5, 70000, 70001, 1<<32 - 1}, []float32{1, 2, 3, 4, 5}, tensor.Float32)
	if err != nil {
		tb.Fatal(err)
	}
	esc, err := EncodeWith(&Adapter{DefaultAlpha: 1, Tensors: []Tensor{t}}, EncodeOptions{Index: GapU16})
	if err != nil {
		tb.Fatal(err)
	}
	return map[string][]byte{
		"gap16_escape":        esc,
		"gap16_raw":           buildGapRaw([]uint16{1, 3, 0, 9, 0}, 3, []int64{4, 4}, nil),
		"gap16_cut_escape":    buildGapRaw([]uint16{1, 0, 9}, 2, []int64{4, 4}, nil),
		"gap16_out_of_range":  buildGapRaw([]uint16{1, 20}, 2, []int64{4, 4}, nil),
		"gap16_with_flat":     buildGapRaw([]uint16{1}, 1, []int64{4, 4}, []uint32{0}),
		"gap16_extra_gaps":    buildGapRaw([]uint16{1, 1, 1}, 2, []int64{4, 4}, nil),
		"gap16_escape_behind": buildGapRaw([]uint16{5, 0, 2, 0}, 2, []int64{4, 4}, nil),
	}
}

func TestGapEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, numel := range []int{1, 100, 70000, 1 << 20} {
		for _, density := range []float64{0.00001, 0.01, 0.5, 1} {
			var ix []uint32
			for i := range numel {
				if rng.Float64() < density {
					ix = append(ix, uint32(i))
				}
			}
			g := encodeGaps(nil, ix)
			if len(g) != gapCount(ix) {
				t.Fatalf("gapCount %d, encoded %d", gapCount(ix), len(g))
			}
			got, err := decodeGaps(tensor.Bytes(g), len(ix), numel)
			if err != nil || !slices.Equal(got, ix) {
				t.Fatalf("numel %d density %g: round trip failed: %v", numel, density, err)
			}
		}
	}
	seeds := gapSeeds(t)
	a, err := Decode(seeds["gap16_escape"])
	if err != nil {
		t.Fatal(err)
	}
	if ix := a.Tensors[0].Indices; !slices.Equal(ix, []uint32{0, 5, 70000, 70001, 1<<32 - 1}) {
		t.Fatalf("escaped indices decode to %v", ix)
	}
	if a, err := Decode(seeds["gap16_raw"]); err != nil || !slices.Equal(a.Tensors[0].Indices, []uint32{0, 3, 9}) {
		t.Fatalf("raw gaps: %v %v", a, err)
	}
	for name, want := range map[string]string{
		"gap16_cut_escape":    "cut off",
		"gap16_out_of_range":  "out of range",
		"gap16_with_flat":     "flat indices",
		"gap16_extra_gaps":    "left after",
		"gap16_escape_behind": "not above",
	} {
		if _, err := Decode(seeds[name]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want ErrInvalid with %q", name, err, want)
		}
	}
}
