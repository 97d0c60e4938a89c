package quant

import (
	"math/rand/v2"
	"testing"

	"github.com/shira-ort/shira-ort/tensor"
)

// benchApply runs ApplyOverwrite over 1 % random sorted indices of a
// 4096×4096 weight, saving the old codes and collecting Survival, and
// reports ns per entry. Each iteration re-patches the same raw buffer (the
// codes drift, the work per entry does not).
func benchApply(b *testing.B, s *Scheme, withStats bool) {
	r := rand.New(rand.NewPCG(7, 8))
	raw := make([]byte, s.RawLen())
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	n := s.NumElements()
	idx := randIdx(r, n, n/100)
	vals := make([]float32, len(idx))
	for j := range vals {
		vals[j] = float32(r.NormFloat64()) * 0.05
	}
	saved := make([]int32, len(idx))
	var st *Survival
	if withStats {
		st = new(Survival)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.ApplyOverwrite(raw, idx, vals, 0.8, saved, st); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(idx)), "ns/entry")
}

func benchSchemes(b *testing.B) (int8PerAxis, nbits4 *Scheme) {
	const K, N = 4096, 4096
	r := rand.New(rand.NewPCG(9, 10))
	sc := make([]float32, K)
	for i := range sc {
		sc[i] = 0.001 + r.Float32()*0.01
	}
	q := mustQDQ(b, tensor.Int8, []int64{K, N}, 0, sc, nil)
	kb := K / 32
	zp := make([]int32, N*kb)
	for i := range zp {
		zp[i] = r.Int32N(16)
	}
	packed, err := PackNBitsZeroPoints(zp, N, kb, 4)
	if err != nil {
		b.Fatal(err)
	}
	nb := mustNBits(b, K, N, 4, 32, randScales(r, N*kb), packed)
	return q, nb
}

func BenchmarkApplyOverwrite(b *testing.B) {
	q, nb := benchSchemes(b)
	b.Run("int8-per-axis", func(b *testing.B) { benchApply(b, q, true) })
	b.Run("int8-per-axis-nostats", func(b *testing.B) { benchApply(b, q, false) })
	b.Run("nbits4-block32-zp", func(b *testing.B) { benchApply(b, nb, true) })
	b.Run("nbits4-block32-zp-nostats", func(b *testing.B) { benchApply(b, nb, false) })
}

func BenchmarkRestore(b *testing.B) {
	q, nb := benchSchemes(b)
	for _, c := range []struct {
		name string
		s    *Scheme
	}{{"int8-per-axis", q}, {"nbits4-block32-zp", nb}} {
		b.Run(c.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(11, 12))
			raw := make([]byte, c.s.RawLen())
			n := c.s.NumElements()
			idx := randIdx(r, n, n/100)
			saved := make([]int32, len(idx))
			for j, i := range idx {
				saved[j] = c.s.Code(raw, int(i))
			}
			for b.Loop() {
				if err := c.s.Restore(raw, idx, saved); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(idx)), "ns/entry")
		})
	}
}
