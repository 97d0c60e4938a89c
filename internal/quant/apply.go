package quant

import (
	"errors"
	"fmt"
	"math"
)

// ErrBatch is wrapped by the errors of the batch methods (ApplyOverwrite,
// ApplyDelta, Restore) when their arguments do not fit the scheme; on such
// an error raw is untouched.
var ErrBatch = errors.New("quant: bad batch")

// Survival counts what happened to the entries of one or more batch
// applications. Norms are sums of squares in float64 over the entries
// whose intended and landed deltas are both finite:
//
//	intended_i = target_i − base_i   (target = the float patch result)
//	landed_i   = Dequantize(new_i) − base_i, base_i = Dequantize(old_i)
//
// with each value widened from float32 before subtracting.
type Survival struct {
	// Touched is the number of entries processed.
	Touched int
	// Unchanged is the number whose code did not change (the delta was
	// lost entirely unless it was zero).
	Unchanged int
	// Clipped is the number whose code saturated at the code range (NaN
	// targets included).
	Clipped int
	// NonFinite is the number whose intended or landed delta was NaN or
	// infinite; they are left out of the sums below.
	NonFinite int
	// IntendedSq is Σ intended_i².
	IntendedSq float64
	// LandedSq is Σ landed_i².
	LandedSq float64
	// ErrSq is Σ (landed_i − intended_i)².
	ErrSq float64
	// Dot is Σ intended_i·landed_i.
	Dot float64
}

// Add accumulates o into s (to total several tensors or chunks).
func (s *Survival) Add(o Survival) {
	s.Touched += o.Touched
	s.Unchanged += o.Unchanged
	s.Clipped += o.Clipped
	s.NonFinite += o.NonFinite
	s.IntendedSq += o.IntendedSq
	s.LandedSq += o.LandedSq
	s.ErrSq += o.ErrSq
	s.Dot += o.Dot
}

// Record accumulates one entry's changes: intended = target − base and
// landed = the new code's value − base (in float64); an entry where either
// is not finite counts in NonFinite only. It does not count Touched,
// Unchanged or Clipped.
func (s *Survival) Record(base, target, landed float32) {
	b := float64(base)
	in := float64(target) - b
	la := float64(landed) - b
	if math.IsNaN(in) || math.IsInf(in, 0) || math.IsNaN(la) || math.IsInf(la, 0) {
		s.NonFinite++
		return
	}
	// explicit conversions keep the sums free of FMA fusion
	s.IntendedSq += float64(in * in)
	s.LandedSq += float64(la * la)
	s.ErrSq += float64((la - in) * (la - in))
	s.Dot += float64(in * la)
}

// LandedFraction returns ‖landed‖/‖intended‖ = sqrt(LandedSq/IntendedSq):
// the size of the change that reached the weights relative to the size
// intended. It can exceed 1 (rounding away from the base) and says nothing
// about direction; see RelativeError and Projection. With nothing intended
// it is 1 if nothing landed either, else +Inf.
func (s Survival) LandedFraction() float64 {
	if s.IntendedSq == 0 {
		if s.LandedSq == 0 {
			return 1
		}
		return math.Inf(1)
	}
	return math.Sqrt(s.LandedSq / s.IntendedSq)
}

// RelativeError returns ‖landed − intended‖/‖intended‖ = sqrt(ErrSq /
// IntendedSq): 0 when every intended change landed exactly, 1 when none
// did (every code unchanged). With nothing intended it is 0 if nothing
// landed, else +Inf.
func (s Survival) RelativeError() float64 {
	if s.IntendedSq == 0 {
		if s.ErrSq == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(s.ErrSq / s.IntendedSq)
}

// Projection returns ⟨landed, intended⟩/‖intended‖² = Dot/IntendedSq: the
// fraction of the intended delta landed along its own direction (1 exact,
// 0 nothing). With nothing intended it is 1.
func (s Survival) Projection() float64 {
	if s.IntendedSq == 0 {
		return 1
	}
	return s.Dot / s.IntendedSq
}

// String formats the counts and the three ratios.
func (s Survival) String() string {
	return fmt.Sprintf("touched %d, unchanged %d, clipped %d, non-finite %d, landed %.4f, rel.err %.4f, projection %.4f",
		s.Touched, s.Unchanged, s.Clipped, s.NonFinite, s.LandedFraction(), s.RelativeError(), s.Projection())
}

// ApplyOverwrite patches the codes at the logical indices idx (strictly
// increasing, each < NumElements) of raw (RawLen bytes) toward vals: with
// base = Dequantize(old code), the float result is
// base + float32(alpha·(v − base)) (v itself when alpha == 1, as package
// patch does), requantized with Quantize and stored with SetCode's bit
// discipline. If saved is not nil (len(idx) entries) it receives the old
// codes, for Restore. If st is not nil the entries are added to it. The
// arguments are checked before the first write; on error raw is untouched.
func (s *Scheme) ApplyOverwrite(raw []byte, idx []uint32, vals []float32, alpha float32, saved []int32, st *Survival) error {
	return s.apply(raw, idx, vals, alpha, saved, st, false)
}

// ApplyDelta is ApplyOverwrite with the Delta semantics: the float result
// is base + float32(alpha·v).
func (s *Scheme) ApplyDelta(raw []byte, idx []uint32, vals []float32, alpha float32, saved []int32, st *Survival) error {
	return s.apply(raw, idx, vals, alpha, saved, st, true)
}

// Restore writes the codes saved by ApplyOverwrite/ApplyDelta back at idx
// (the same indices), which returns raw to its exact bytes before that
// call: only the codes' own bits are written. The arguments are checked
// (order, bounds, code range) before the first write.
func (s *Scheme) Restore(raw []byte, idx []uint32, saved []int32) error {
	if err := s.checkBatch(raw, idx, len(idx), saved, true); err != nil {
		return err
	}
	for t, q := range saved {
		if q < s.qmin || q > s.qmax {
			return fmt.Errorf("%w: saved code[%d] = %d outside [%d, %d]", ErrBatch, t, q, s.qmin, s.qmax)
		}
	}
	for t, ii := range idx {
		_, off, sh := s.loc(int(ii))
		s.put(raw, off, sh, saved[t])
	}
	return nil
}

func (s *Scheme) checkBatch(raw []byte, idx []uint32, nvals int, saved []int32, needSaved bool) error {
	if !s.ready {
		return fmt.Errorf("%w: Scheme not validated", ErrBatch)
	}
	if len(raw) != s.rawLen {
		return fmt.Errorf("%w: %d raw bytes, scheme stores %d", ErrBatch, len(raw), s.rawLen)
	}
	if nvals != len(idx) {
		return fmt.Errorf("%w: %d values for %d indices", ErrBatch, nvals, len(idx))
	}
	if (saved != nil || needSaved) && len(saved) != len(idx) {
		return fmt.Errorf("%w: %d saved codes for %d indices", ErrBatch, len(saved), len(idx))
	}
	prev := int64(-1)
	for t, i := range idx {
		if int64(i) <= prev {
			return fmt.Errorf("%w: index[%d] = %d not above index[%d] = %d", ErrBatch, t, i, t-1, prev)
		}
		prev = int64(i)
	}
	if prev >= int64(s.numel) {
		return fmt.Errorf("%w: index %d out of range [0, %d)", ErrBatch, prev, s.numel)
	}
	return nil
}

func (s *Scheme) apply(raw []byte, idx []uint32, vals []float32, alpha float32, saved []int32, st *Survival, delta bool) error {
	if err := s.checkBatch(raw, idx, len(vals), saved, false); err != nil {
		return err
	}
	if math.IsNaN(float64(alpha)) || math.IsInf(float64(alpha), 0) {
		return fmt.Errorf("%w: alpha %v", ErrBatch, alpha)
	}
	vals = vals[:len(idx)]
	exact := !delta && alpha == 1
	var sv Survival
	for t, ii := range idx {
		p, off, sh := s.loc(int(ii))
		old := s.get(raw, off, sh)
		if saved != nil {
			saved[t] = old
		}
		base := s.deq(p, old)
		v := vals[t]
		var target float32
		switch {
		case delta:
			target = base + float32(alpha*v)
		case exact:
			target = v
		default:
			target = base + float32(alpha*(v-base))
		}
		q, clipped := s.quant(s.DitherIndex(ii), p, target)
		if q != old {
			s.put(raw, off, sh, q)
		} else {
			sv.Unchanged++
		}
		if clipped {
			sv.Clipped++
		}
		if st == nil {
			continue
		}
		sv.Record(base, target, s.deq(p, q))
	}
	if st != nil {
		sv.Touched = len(idx)
		st.Add(sv)
	}
	return nil
}
