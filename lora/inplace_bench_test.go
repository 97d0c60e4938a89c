package lora_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/peft"
	"github.com/shira-ort/shira-ort/tensor"
)

// BenchmarkAddInPlaceSwitch is a LoRA switch on a d×d weight: unfuse a
// rank-r adapter and fuse another in one GEMM (K = 2r), r the rank with
// the parameter count of a 1 % SHiRA adapter. The weight is far larger
// than the caches, so each op reads and writes it from memory.
func BenchmarkAddInPlaceSwitch(b *testing.B) {
	requireBLAS(b)
	for _, d := range []int{2048, 4096} {
		r := max(1, d*d/100/(2*d))
		rng := rand.New(rand.NewPCG(1, uint64(d)))
		old, nu := randTerm(rng, r, d, d, -1), randTerm(rng, r, d, d, 1)
		for _, dt := range []tensor.DType{tensor.Float32, tensor.Float16} {
			for _, th := range []int{1, 2} {
				b.Run(fmt.Sprintf("d=%d/r=%d/%v/threads=%d", d, r, dt, th), func(b *testing.B) {
					w := make([]byte, d*d*dt.Size())
					b.SetBytes(int64(2 * len(w)))
					for b.Loop() {
						if err := lora.AddInPlace(w, dt, peft.OutIn, d, d, th, old, nu); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
