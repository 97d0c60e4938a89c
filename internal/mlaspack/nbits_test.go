package mlaspack

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// code reads logical element (k, n) of a MatMulNBits storage with kp rows
// (whole blocks) of 4-bit codes in blocks of bs.
func code(raw []byte, kp, bs, k, n int) byte {
	pos := n*kp + k // blocks of a column are contiguous: the block index is k/bs
	return raw[pos/2] >> (4 * (pos & 1)) & 15
}

// TestNBitsLayout: every logical code of a packed buffer sits at its
// permuted row (Row) of the same column and block, Row is a permutation
// of every block's rows, Matches accepts the packed buffer and refuses a
// one-nibble change, and Translate equals sorting the mapped entries.
func TestNBitsLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ k, n, bs int }{{256, 8, 16}, {256, 5, 32}, {100, 7, 32}, {300, 3, 64}, {300, 4, 128}, {512, 2, 256}} {
		l, err := NewNBitsLayout(c.k, c.n, 4, c.bs)
		if err != nil {
			t.Fatal(err)
		}
		kp := l.Padded()
		src := make([]byte, l.PackedBytes())
		for i := range src {
			src[i] = byte(rng.IntN(256))
		}
		packed := make([]byte, len(src))
		l.Pack(packed, src)
		for k := range kp {
			r := l.Row(k)
			if r/c.bs != k/c.bs {
				t.Fatalf("%+v: row %d moves to %d, another block", c, k, r)
			}
			for n := range c.n {
				if code(packed, kp, c.bs, r, n) != code(src, kp, c.bs, k, n) {
					t.Fatalf("%+v: element (%d, %d) is not at row %d of the packed buffer", c, k, n, r)
				}
			}
		}
		if !l.Matches(packed, src) {
			t.Fatalf("%+v: Matches refuses the packed buffer", c)
		}
		bad := bytes.Clone(packed)
		bad[rng.IntN(len(bad))] ^= 0x10
		if l.Matches(bad, src) {
			t.Fatalf("%+v: Matches accepts a changed buffer", c)
		}
		// Translate against a sort
		var idx []uint32
		for i := range c.k * c.n {
			if rng.IntN(3) == 0 {
				idx = append(idx, uint32(i))
			}
		}
		vals := make([]byte, 2*len(idx))
		for i := range vals {
			vals[i] = byte(rng.IntN(256))
		}
		got, gotVals := l.Translate(idx, vals, 2)
		type pair struct {
			i uint32
			v [2]byte
		}
		var want []pair
		for j, i := range idx {
			k, n := int(i)/c.n, int(i)%c.n
			want = append(want, pair{uint32(l.Row(k)*c.n + n), [2]byte{vals[2*j], vals[2*j+1]}})
		}
		slices.SortFunc(want, func(a, b pair) int { return int(a.i) - int(b.i) })
		if len(got) != len(want) {
			t.Fatalf("%+v: %d translated entries, want %d", c, len(got), len(want))
		}
		for j, p := range want {
			if got[j] != p.i || gotVals[2*j] != p.v[0] || gotVals[2*j+1] != p.v[1] {
				t.Fatalf("%+v: entry %d is (%d, %v), want (%d, %v)", c, j, got[j], gotVals[2*j:2*j+2], p.i, p.v)
			}
		}
	}
	if _, err := NewNBitsLayout(64, 4, 8, 32); err == nil {
		t.Fatal("an 8-bit layout was accepted")
	}
}
