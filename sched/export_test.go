package sched

import "time"

// SetPartnerWait sets how long a stream's request waits for the streams
// that were at the same step, and returns the function restoring it.
func SetPartnerWait(d time.Duration) (restore func()) {
	old := partnerWait
	partnerWait = d
	return func() { partnerWait = old }
}
