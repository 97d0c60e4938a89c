package mlaspack

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// matchesPair returns a weight's raw bytes as stored and its packed form.
func matchesPair(l Layout) (buf, w []byte) {
	wf := make([]float32, l.K*l.N)
	x := uint32(1)
	for i := range wf {
		x = x*1664525 + 1013904223
		wf[i] = float32(x>>8) / (1 << 24)
	}
	pf := make([]float32, l.PackedLen())
	l.Pack(pf, wf)
	return bitsToBytes(floatsToBits(pf)), bitsToBytes(floatsToBits(wf))
}

// BenchmarkMatches reports the packed buffer's bytes per second (the
// weight's bytes are read too).
func BenchmarkMatches(b *testing.B) {
	for _, sh := range [][2]int{{2048, 2048}, {4096, 11008}, {11008, 4096}, {4096, 4100}} {
		for _, trans := range []bool{false, true} {
			l := Layout{K: sh[0], N: sh[1], Trans: trans}
			b.Run(fmt.Sprintf("K%d_N%d_T%v", l.K, l.N, trans), func(b *testing.B) {
				buf, w := matchesPair(l)
				b.SetBytes(int64(len(buf)))
				for b.Loop() {
					if !l.Matches(buf, w) {
						b.Fatal("no match")
					}
				}
			})
		}
	}
}

// BenchmarkTranslate translates 2% of a weight's entries.
func BenchmarkTranslate(b *testing.B) {
	for _, sh := range [][2]int{{4096, 4096}, {2048, 5632}, {5632, 2048}} {
		for _, trans := range []bool{false, true} {
			for _, vs := range []int{2, 4} {
				l := Layout{K: sh[0], N: sh[1], Trans: trans}
				r := rand.New(rand.NewPCG(1, 1))
				idx, vals := randomSparse(r, l.K*l.N, 0.02, -1, vs)
				b.Run(fmt.Sprintf("K%d_N%d_T%v_v%d", l.K, l.N, trans, vs), func(b *testing.B) {
					for b.Loop() {
						l.Translate(idx, vals, vs)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(idx)), "ns/entry")
				})
			}
		}
	}
}
