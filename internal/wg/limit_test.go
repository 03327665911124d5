package wg

import (
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
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

// consumingBind hands back a batch of four whose middle two entries it
// consumed itself (sizes 0), as the relay Bind does with control frames.
type consumingBind struct{ conn.Bind }

func (consumingBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	return []conn.ReceiveFunc{func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		copy(sizes, []int{148, 0, 0, 92})
		return 4, nil
	}}, 51820, nil
}

func TestBindCountsOnlyWhatReachesWireGuard(t *testing.T) {
	_, b := limit(nil, consumingBind{}, 8)
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	bufs, sizes, eps := make([][]byte, 4), make([]int, 4), make([]conn.Endpoint, 4)
	if n, _ := fns[0](bufs, sizes, eps); n != 4 {
		t.Fatalf("receive returned %d, want the batch of 4 unchanged", n)
	}
	if got := b.(*limitedBind).in.inflight.Load(); got != 2 {
		t.Errorf("in flight = %d after a batch with 2 consumed entries, want 2", got)
	}
}
