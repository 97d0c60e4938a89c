package synth

import (
	"testing"

	"github.com/shira-ort/shira-ort/internal/mask"
)

func TestStructSizeMatchesMask(t *testing.T) {
	for _, c := range [][3]int{{16, 16, 1}, {16, 16, 4}, {10, 16, 3}, {32, 16, 5}, {7, 3, 2}, {64, 64, 64}} {
		ix, err := mask.Struct(c[0], c[1], c[2])
		if err != nil {
			t.Fatal(err)
		}
		if got := structSize(c[0], c[1], c[2]); got != len(ix) {
			t.Errorf("structSize%v = %d, mask has %d", c, got, len(ix))
		}
	}
}

func TestStructMaskBudget(t *testing.T) {
	for _, k := range []int{1, 100, 500, 2000, 4096} {
		ix, err := structMask([]int64{64, 64}, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(ix) > k && len(ix) > structSize(64, 64, 64) {
			t.Errorf("k=%d: %d entries", k, len(ix))
		}
	}
}
