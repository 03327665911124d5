package agent

import (
	"runtime"
	"testing"
	"time"
)

func TestMemRegime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var m memRegime
	var total int64
	step := func(at time.Duration, add int64, want memAction) {
		t.Helper()
		total += add
		if got := m.observe(t0.Add(at), total); got != want {
			t.Fatalf("at %v (+%d bytes): got action %d, want %d", at, add, got, want)
		}
	}
	step(0, 0, memKeep)              // first look: counts as busy, nothing to undo
	step(time.Second, 1000, memKeep) // quiet from here
	// A pass right after another (a discovery update) with a handshake's
	// bytes in between is no burst of traffic: it must not restart the
	// quiet period, so the agent still goes idle 30 s after it began.
	for s := 2; s < 31; s++ {
		step(time.Duration(s)*time.Second, 500, memKeep)
		step(time.Duration(s)*time.Second+10*time.Millisecond, 5000, memKeep)
	}
	step(31*time.Second, 0, memIdle)
	step(32*time.Second, 0, memKeep)
	step(91*time.Second, 0, memTrim)
	step(92*time.Second, 0, memKeep)
	// Real traffic leaves the idle regime, and the quiet period starts over.
	step(93*time.Second, 10<<20, memBusy)
	step(94*time.Second, 10<<20, memKeep)
	step(95*time.Second, 0, memKeep)
	step(124*time.Second, 0, memKeep)
	step(125*time.Second, 0, memIdle)
}

func TestIdleGCPercent(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},                // no collection yet
		{1 << 20, 100},          // a small heap keeps the default pace
		{8 << 20, 25},           // kernel WireGuard: headroom over a few MB
		{30 << 20, 6},           // userspace: its buffers are most of the heap
		{60 << 20, 5},           // never below 5 %
		{idleHeadroom * 10, 10}, // exactly the headroom
	} {
		if got := idleGCPercent(c.live); got != c.want {
			t.Errorf("idleGCPercent(%d) = %d, want %d", c.live, got, c.want)
		}
	}
	if liveHeap() == 0 {
		runtime.GC()
		if liveHeap() == 0 {
			t.Error("liveHeap reads 0 after a collection")
		}
	}
}
