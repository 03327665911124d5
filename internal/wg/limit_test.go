package wg

import (
	"testing"
	"time"
)

func TestFlowCounts(t *testing.T) {
	f := newFlow(4)
	f.add(3)
	f.admit() // 3 < 4: must not block
	f.done(2)
	if got := f.inflight.Load(); got != 1 {
		t.Fatalf("in flight = %d after +3 -2, want 1", got)
	}
	f.done(5) // keepalives and handshakes leave without having been counted in
	if got := f.inflight.Load(); got != 0 {
		t.Fatalf("in flight = %d after over-counted departures, want 0", got)
	}
}

func TestFlowWakesOnProgressAndResetsOnStall(t *testing.T) {
	f := newFlow(2)
	f.add(2)
	admitted := make(chan time.Duration, 1)
	start := time.Now()
	go func() { f.admit(); admitted <- time.Since(start) }()
	f.done(1)
	select {
	case <-admitted:
	case <-time.After(5 * time.Second):
		t.Fatal("admit still blocked 5 s after a packet left")
	}

	// Packets that never leave (dropped inside the device) must not stall
	// the reader for good: after stallReset without progress the count resets.
	f = newFlow(2)
	f.add(10)
	go func() { f.admit(); admitted <- 0 }()
	select {
	case <-admitted:
	case <-time.After(5 * time.Second):
		t.Fatal("admit blocked for good on packets that never left")
	}
	if got := f.inflight.Load(); got != 0 {
		t.Errorf("in flight = %d after a stall, want reset to 0", got)
	}
}
