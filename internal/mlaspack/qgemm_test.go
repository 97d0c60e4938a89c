package mlaspack

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestQGemmLayout: Offset is a bijection of the codes onto the non-padding
// packed positions, PackedColumns.Column gives back each code's column,
// the column sums are the signed sums (top bit flipped for unsigned
// codes), and Translate equals sorting the offsets.
func TestQGemmLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		k, n     int
		unsigned bool
	}{{64, 64, false}, {300, 37, false}, {600, 40, true}, {1030, 33, false}, {5, 3, true}} {
		l, err := NewQGemmLayout(c.k, c.n, c.unsigned)
		if err != nil {
			t.Fatal(err)
		}
		w := make([]byte, c.k*c.n)
		for i := range w {
			w[i] = byte(rng.IntN(256))
		}
		buf := make([]byte, l.PackedBytes())
		l.Pack(buf, w)
		cols := l.Columns()
		seen := map[int]bool{}
		flip := byte(0)
		if c.unsigned {
			flip = 0x80
		}
		for k := range c.k {
			for n := range c.n {
				off := l.Offset(k, n)
				if seen[off] || off >= cols.Bytes() {
					t.Fatalf("%+v: offset %d of (%d, %d) reused or out of range", c, off, k, n)
				}
				seen[off] = true
				if buf[l.SumsBytes()+off] != w[k*c.n+n]^flip {
					t.Fatalf("%+v: code (%d, %d) not at its offset", c, k, n)
				}
				if got := cols.Column(off); got != n {
					t.Fatalf("%+v: Column(%d) = %d, want %d", c, off, got, n)
				}
				if gk, gn := cols.Logical(off); gk != k || gn != n {
					t.Fatalf("%+v: Logical(%d) = (%d, %d), want (%d, %d)", c, off, gk, gn, k, n)
				}
			}
		}
		for n := range c.n {
			var s int32
			for k := range c.k {
				s += int32(int8(w[k*c.n+n] ^ flip))
			}
			if got := int32(binary.LittleEndian.Uint32(buf[4*n:])); got != s {
				t.Fatalf("%+v: column %d sums to %d, want %d", c, n, got, s)
			}
		}
		if !l.Matches(buf, w) {
			t.Fatal("Matches refuses the packed buffer")
		}
		var idx []uint32
		for i := range c.k * c.n {
			if rng.IntN(4) == 0 {
				idx = append(idx, uint32(i))
			}
		}
		vals := make([]byte, len(idx))
		for j := range vals {
			vals[j] = byte(j)
		}
		got, gv := l.Translate(idx, vals, 1)
		for j := 1; j < len(got); j++ {
			if got[j] <= got[j-1] {
				t.Fatalf("%+v: translated offsets not sorted", c)
			}
		}
		for j, i := range idx {
			off := uint32(l.Offset(int(i)/c.n, int(i)%c.n))
			lo, hi := 0, len(got)
			for lo < hi {
				m := (lo + hi) / 2
				if got[m] < off {
					lo = m + 1
				} else {
					hi = m
				}
			}
			if lo == len(got) || got[lo] != off || gv[lo] != vals[j] {
				t.Fatalf("%+v: entry %d not translated to offset %d with its value", c, j, off)
			}
		}
	}
}
