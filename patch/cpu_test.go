package patch

import (
	"syscall"
	"testing"
	"time"
)

// cpuTimer reports the process CPU time (user + system, all threads) per
// op as "cpu-ns/op": on a shared, oversubscribed machine it moves far less
// than wall time. Call it right before the timed loop and the returned
// function right after.
func cpuTimer(b *testing.B) func() {
	t0 := cpuNow()
	return func() { b.ReportMetric(float64(cpuNow()-t0)/float64(b.N), "cpu-ns/op") }
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
