package switchbench

import (
	"slices"
	"syscall"
	"time"
)

// samples collects the wall and process CPU times (user + system, all
// threads, ORT's included) of one operation. On a shared, oversubscribed
// machine the CPU time moves far less than the wall time.
type samples struct {
	wall, cpu []time.Duration
}

// time runs f and records its durations.
func (s *samples) time(f func() error) error {
	c0 := cpuNow()
	t := time.Now()
	err := f()
	s.wall = append(s.wall, time.Since(t))
	s.cpu = append(s.cpu, cpuNow()-c0)
	return err
}

// last returns the last wall time in milliseconds.
func (s *samples) last() float64 { return float64(s.wall[len(s.wall)-1]) / 1e6 }

// median returns the median wall time in milliseconds (0 for none).
func (s *samples) median() float64 { return medianMs(s.wall) }

// cpuMedian returns the median CPU time in milliseconds (0 for none).
func (s *samples) cpuMedian() float64 { return medianMs(s.cpu) }

func medianMs(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	c := slices.Clone(d)
	slices.Sort(c)
	m := c[len(c)/2]
	if len(c)%2 == 0 {
		m = (c[len(c)/2-1] + c[len(c)/2]) / 2
	}
	return float64(m) / 1e6
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ratio returns a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
