package relay

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// pingSink is a peer's candidate address that records the probes it gets.
type pingSink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	at   []time.Time
}

func newPingSink(t *testing.T) *pingSink {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &pingSink{conn: c}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if n == pingLen && buf[0] == Marker && buf[1] == typePing {
				s.mu.Lock()
				s.at = append(s.at, time.Now())
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *pingSink) addr() netip.AddrPort { return unmap(s.conn.LocalAddr().(*net.UDPAddr).AddrPort()) }

func (s *pingSink) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.at...)
}

// openBind opens a Bind that knows sink as peer's candidate; its first
// maintenance pass probes it once.
func openBind(t *testing.T, peer [32]byte, sink *pingSink) *Bind {
	b, err := NewBind(conn.NewDefaultBind(), BindConfig{Key: testKey(t), PrivateKey: testPrivate(t)})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCandidates(peer, []netip.AddrPort{sink.addr()}) // not open: no probe yet
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	waitFor(t, "the first probe", 5*time.Second, func() bool { return len(sink.times()) >= 1 })
	return b
}

// TestPunchBurst: a punch sends a burst of probes to the peer's candidates
// from the meeting time, once; an overlapping punch adds nothing.
func TestPunchBurst(t *testing.T) {
	sink := newPingSink(t)
	peer := [32]byte{'q'}
	b := openBind(t, peer, sink)
	const n0 = 1

	at := time.Now().Add(300 * time.Millisecond)
	b.Punch(peer, at)
	b.Punch(peer, at.Add(500*time.Millisecond)) // inside the first burst: dropped
	waitFor(t, "the burst", 10*time.Second, func() bool { return len(sink.times()) >= n0+punchProbes })
	got := sink.times()
	if got[n0].Before(at.Add(-20 * time.Millisecond)) {
		t.Errorf("the burst started %s before the meeting time", at.Sub(got[n0]))
	}
	if b.Punches() != 1 {
		t.Errorf("Punches() = %d, want 1: the overlapping punch should be dropped", b.Punches())
	}
	time.Sleep(3 * punchInterval) // room for a second burst, had there been one
	if n := len(sink.times()); n != n0+punchProbes {
		t.Errorf("got %d probes, want %d (one at Open, one burst)", n, n0+punchProbes)
	}
}

// TestPunchStopsOnClose: a punch scheduled ahead does not outlive the Bind,
// and one for a peer without candidates sends nothing.
func TestPunchStopsOnClose(t *testing.T) {
	sink := newPingSink(t)
	peer := [32]byte{'q'}
	b := openBind(t, peer, sink)
	const n0 = 1
	b.Punch([32]byte{'x'}, time.Now()) // no candidates: nothing to send
	b.Punch(peer, time.Now().Add(time.Second))
	done := make(chan struct{})
	go func() { b.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a scheduled punch")
	}
	time.Sleep(1500 * time.Millisecond)
	if n := len(sink.times()); n != n0 {
		t.Errorf("got %d probes after Close, want only the one at Open", n)
	}
	b.Punch(peer, time.Now()) // closed: ignored
}

// TestProbeBudget: however many peers and candidates members publish, the
// Bind sends at most ProbeBurst probes at once and ProbeRate per second
// after (issue 15: 100 affiliates x 64 endpoints made ~1,200 packets/s).
func TestProbeBudget(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	got := make(chan int, 1)
	go func() {
		n := 0
		buf := make([]byte, 2048)
		for {
			sink.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
			if _, _, err := sink.ReadFromUDP(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	key, _ := DeriveKey([32]byte{9})
	b, err := NewBind(conn.NewDefaultBind(), BindConfig{Key: key, PublicKey: [32]byte{1}, ProbeRate: 10, ProbeBurst: 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	to := netip.MustParseAddrPort(sink.LocalAddr().String())
	start := time.Now()
	for i := range 100 {
		var cands []netip.AddrPort
		for range 8 {
			cands = append(cands, to)
		}
		b.SetCandidates([32]byte{byte(i), 2}, cands)
	}
	n := <-got
	limit := 20 + int(10*time.Since(start).Seconds()) + 1
	t.Logf("100 peers x 8 candidates: %d probes sent in %s (budget %d)", n, time.Since(start).Round(time.Millisecond), limit)
	if n > limit || n < 20 {
		t.Errorf("%d probes sent; want between the burst (20) and %d", n, limit)
	}
}
