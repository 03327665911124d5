package wg

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// DefaultInFlight bounds the packets wireguard-go holds per direction.
// Every packet occupies a 64 KiB buffer there, and its queues hold
// thousands: under a full TCP stream the stock device grows to 150-350 MB.
// Holding back its readers (TUN for outbound, UDP for inbound) while this
// many packets are inside keeps it to tens of MB; 128 packets (~180 KB of
// 1420-byte payload) still cover the device's own pipeline latency at the
// speeds wireguard-go reaches (measured: tests/mesh BenchmarkThroughput).
const DefaultInFlight = 128

// stallReset: when nothing leaves the device for this long, the packets we
// think are inside are not (dropped, or keepalives and handshakes that never
// reach the TUN); the count is reset rather than stalling the reader.
const stallReset = 5 * time.Millisecond

// flow counts packets inside the device in one direction.
type flow struct {
	limit    int64
	inflight atomic.Int64

	mu      sync.Mutex
	waiting bool
	wake    chan struct{} // closed on progress while someone waits
}

func newFlow(limit int) *flow {
	return &flow{limit: int64(limit), wake: make(chan struct{})}
}

// admit blocks while the device holds limit packets or more.
func (f *flow) admit() {
	if f.inflight.Load() < f.limit {
		return
	}
	var timer *time.Timer
	for f.inflight.Load() >= f.limit {
		f.mu.Lock()
		f.waiting = true
		wake := f.wake
		f.mu.Unlock()
		if f.inflight.Load() < f.limit {
			break
		}
		if timer == nil {
			timer = time.NewTimer(stallReset)
			defer timer.Stop()
		} else {
			timer.Reset(stallReset)
		}
		select {
		case <-wake:
		case <-timer.C:
			f.inflight.Store(0)
		}
	}
}

func (f *flow) add(n int) {
	if n > 0 {
		f.inflight.Add(int64(n))
	}
}

func (f *flow) done(n int) {
	if v := f.inflight.Add(-int64(n)); v < 0 {
		f.inflight.CompareAndSwap(v, 0)
	}
	f.mu.Lock()
	if f.waiting {
		close(f.wake)
		f.wake = make(chan struct{})
		f.waiting = false
	}
	f.mu.Unlock()
}

// limitedTUN counts outbound packets in on Read and inbound ones out on Write.
type limitedTUN struct {
	tun.Device
	out, in *flow
}

func (t *limitedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.out.admit()
	n, err := t.Device.Read(bufs, sizes, offset)
	t.out.add(n)
	return n, err
}

func (t *limitedTUN) Write(bufs [][]byte, offset int) (int, error) {
	n, err := t.Device.Write(bufs, offset)
	t.in.done(len(bufs))
	return n, err
}

// limitedBind counts inbound packets in on receive and outbound ones out on Send.
type limitedBind struct {
	conn.Bind
	out, in *flow
}

func (b *limitedBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	for i, fn := range fns {
		fns[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			b.in.admit()
			n, err := fn(bufs, sizes, eps)
			b.in.add(handedOn(sizes[:n]))
			return n, err
		}
	}
	return fns, actual, err
}

func (b *limitedBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.Bind.Send(bufs, ep)
	b.out.done(len(bufs))
	return err
}

// handedOn counts the entries of a received batch that reach WireGuard:
// an inner Bind (the relay's) may consume some, leaving them empty, and
// WireGuard skips those, so they never leave through the TUN.
func handedOn(sizes []int) int {
	n := 0
	for _, s := range sizes {
		if s > 0 {
			n++
		}
	}
	return n
}

// limit wraps a TUN and Bind pair so that at most inFlight packets per
// direction are inside the device between them.
func limit(t tun.Device, b conn.Bind, inFlight int) (tun.Device, conn.Bind) {
	out, in := newFlow(inFlight), newFlow(inFlight)
	return &limitedTUN{Device: t, out: out, in: in}, &limitedBind{Bind: b, out: out, in: in}
}
