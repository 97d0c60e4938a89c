package npyfile

import (
	"bytes"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// FuzzRead feeds arbitrary bytes to Read, with the size known and unknown:
// every input must give a tensor or an error, never a panic or an
// allocation larger than the input promises. What reads must write back
// and read again to the same tensor.
func FuzzRead(f *testing.F) {
	f32, _ := tensor.FromFloat32([]int64{2, 3}, []float32{1, 2, 3, 4, 5, -6})
	var buf bytes.Buffer
	if err := Write(&buf, f32); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Read(bytes.NewReader(data), int64(len(data)))
		got2, err2 := Read(bytes.NewReader(data), -1)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("known size: %v; unknown size: %v", err, err2)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got.Data, got2.Data) {
			t.Fatal("known and unknown size read different data")
		}
		var out bytes.Buffer
		if err := Write(&out, got); err != nil {
			t.Fatalf("write back %v %v: %v", got.DType, got.Shape, err)
		}
		back, err := Read(bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		if back.DType != got.DType || !slices.Equal(back.Shape, got.Shape) || !bytes.Equal(back.Data, got.Data) {
			t.Fatalf("round trip: %v %v -> %v %v", got.DType, got.Shape, back.DType, back.Shape)
		}
	})
}
