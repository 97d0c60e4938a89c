package ort

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestHybridRebuildWaitsForFirstRun: the background rebuild after a
// hybrid switch starts when the first Run after the switch returns (or
// after RebuildDelay), and Close does not wait for the delay.
func TestHybridRebuildWaitsForFirstRun(t *testing.T) {
	requireORT(t)
	dir, m := optModelDir(t)
	in := optInputs(t, 1, 3)
	A := patch.Default(randomAdapter(t, m, 0.05, 31))
	B := patch.Default(randomAdapter(t, m, 0.05, 32))

	s := mustOpen(t, dir, &Options{Mode: ModeHybrid, IntraOpThreads: 1, RebuildDelay: time.Hour})
	if err := s.Set(context.Background(), A); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := s.WaitBaked(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || s.Baked() {
		t.Fatalf("before any Run: WaitBaked = %v, Baked = %v; want the rebuild still waiting", err, s.Baked())
	}
	live := mustRun(t, s, in) // starts the rebuild
	waitBaked(t, s)
	if !s.Baked() {
		t.Fatal("not baked after the first Run and WaitBaked")
	}
	assertClose(t, "rebaked Y", tensor.Float32s(mustRun(t, s, in)["Y"].Data), tensor.Float32s(live["Y"].Data), 1e-5)

	if err := s.Set(context.Background(), B); err != nil { // a rebuild waits again; Close must not
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close waited for the rebuild delay")
	}

	// Without a Run the rebuild starts after the delay; a negative delay
	// starts it with the switch.
	for _, delay := range []time.Duration{50 * time.Millisecond, -1} {
		s := mustOpen(t, dir, &Options{Mode: ModeHybrid, IntraOpThreads: 1, RebuildDelay: delay})
		if err := s.Set(context.Background(), A); err != nil {
			t.Fatal(err)
		}
		waitBaked(t, s)
		if !s.Baked() {
			t.Fatalf("delay %v: not baked after WaitBaked", delay)
		}
	}
}
