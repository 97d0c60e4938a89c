package adapter

import (
	"encoding/binary"
	"fmt"
)

// IndexEncoding says how a .shira file stores a tensor's indices. Decoded
// tensors always hold flat uint32 Indices; the encoding only changes the
// file.
type IndexEncoding uint8

const (
	// FlatU32 stores the sorted flat indices as uint32 (4 bytes per entry;
	// Decode aliases them without copying). Every reader knows it.
	FlatU32 IndexEncoding = 0
	// GapU16 stores the distance to the previous index as a uint16 (2
	// bytes per entry at densities above 1/65536; larger gaps take an
	// escape of 6 bytes). Decode expands it into a new []uint32. Readers
	// older than this encoding refuse such files.
	GapU16 IndexEncoding = 1
)

// String returns "flat-u32" or "gap-u16".
func (e IndexEncoding) String() string {
	switch e {
	case FlatU32:
		return "flat-u32"
	case GapU16:
		return "gap-u16"
	}
	return fmt.Sprintf("index-encoding(%d)", uint8(e))
}

// DefaultIndexEncoding is what Encode and Write use: FlatU32. Its indices
// are used in place from the mapped file by Open and, with one adapter on a
// weight, by the patcher (no decode, no heap copy), so a warm Open is 6-9x
// faster than GapU16's decode and a cold Open + Set equal or faster on the
// 1 B-parameter benchmark (docs/perf.md §4); GapU16 files are 25-33 %
// smaller. Choose it with EncodeWith / WriteWith (CLI: --index-encoding)
// where file size matters more.
const DefaultIndexEncoding = FlatU32

// ParseIndexEncoding accepts the names String returns.
func ParseIndexEncoding(s string) (IndexEncoding, error) {
	for _, e := range []IndexEncoding{FlatU32, GapU16} {
		if s == e.String() {
			return e, nil
		}
	}
	return 0, fmt.Errorf("adapter: unknown index encoding %q (want flat-u32 or gap-u16)", s)
}

// gapEscape marks a gap that does not fit a uint16: the absolute index
// follows as two uint16 (low, high).
const gapEscape = 0

// encodeGaps appends the GapU16 form of the sorted, strictly increasing
// indices ix to dst.
func encodeGaps(dst []uint16, ix []uint32) []uint16 {
	prev := int64(-1)
	for _, i := range ix {
		if g := int64(i) - prev; g < 1<<16 {
			dst = append(dst, uint16(g))
		} else {
			dst = append(dst, gapEscape, uint16(i), uint16(i>>16))
		}
		prev = int64(i)
	}
	return dst
}

// gapCount returns the number of uint16 encodeGaps produces for ix.
func gapCount(ix []uint32) int {
	n, prev := 0, int64(-1)
	for _, i := range ix {
		if int64(i)-prev < 1<<16 {
			n++
		} else {
			n += 3
		}
		prev = int64(i)
	}
	return n
}

// decodeGaps expands raw (little-endian uint16 gaps) into exactly n
// strictly increasing indices below numel, or fails.
func decodeGaps(raw []byte, n, numel int) ([]uint32, error) {
	if len(raw)/2 < n {
		return nil, fmt.Errorf("%d gaps for %d entries", len(raw)/2, n)
	}
	out := make([]uint32, n)
	prev, p := int64(-1), 0
	for k := range out {
		if p+2 > len(raw) {
			return nil, fmt.Errorf("ends after %d of %d entries", k, n)
		}
		g := int64(binary.LittleEndian.Uint16(raw[p:]))
		p += 2
		cur := prev + g
		if g == gapEscape {
			if p+4 > len(raw) {
				return nil, fmt.Errorf("escape at entry %d cut off", k)
			}
			cur = int64(binary.LittleEndian.Uint16(raw[p:])) | int64(binary.LittleEndian.Uint16(raw[p+2:]))<<16
			p += 4
			if cur <= prev {
				return nil, fmt.Errorf("escaped index %d at entry %d is not above %d", cur, k, prev)
			}
		}
		if cur >= int64(numel) {
			return nil, fmt.Errorf("index %d at entry %d out of range for %d elements", cur, k, numel)
		}
		out[k] = uint32(cur)
		prev = cur
	}
	if p != len(raw) {
		return nil, fmt.Errorf("%d bytes left after %d entries", len(raw)-p, n)
	}
	return out, nil
}
