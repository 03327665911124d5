package relay

import (
	"net/netip"
	"testing"
	"time"
)

// sendTo sends n data frames from from to the member whose key is dst and
// counts where the relay sent them.
func sendTo(s *Server, dst [32]byte, from netip.AddrPort, n int) map[netip.AddrPort]int {
	out := &fakeOut{}
	for i := range n {
		f := make([]byte, DataOverhead+8)
		putDataHeader(f, typeSend, IDOf(dst))
		f[DataOverhead] = 4
		f[DataOverhead+4] = byte(i)
		s.Handle(f, from, out)
	}
	got := map[netip.AddrPort]int{}
	for _, m := range out.sent {
		got[m.to]++
	}
	return got
}

// A member holding the cluster secret (and its own WireGuard key) registers
// another member's key: the relay must not send it anything meant for that
// member.
func TestRegistrationBoundToKey(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := testServer(t, k, WithClock(func() time.Time { return now }))
	out := &fakeOut{}
	a, b, e := newTestMember(t, k, s), newTestMember(t, k, s), newTestMember(t, k, s)
	admit(s, a.pub, b.pub, e.pub)
	addrA := netip.MustParseAddrPort("192.0.2.1:40000")
	addrB := netip.MustParseAddrPort("203.0.113.5:51820")
	addrE := netip.MustParseAddrPort("198.51.100.66:4444")
	captured := a.reg()
	s.Handle(captured, addrA, out)
	s.Handle(b.reg(), addrB, out)
	s.Handle(e.reg(), addrE, out)

	// The attacker registers A's key signed with everything it has: the
	// cluster key, its own pair key with the relay, a pair key of its own
	// making; and it replays A's registration from its own address.
	now = now.Add(time.Second)
	s.Handle(RegisterFrame(k, a.pub, 1<<62), addrE, out)
	s.Handle(RegisterFrame(e.pair, a.pub, 1<<62), addrE, out)
	forged, err := k.Pair(testPrivate(t), s.PublicKey(), RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle(RegisterFrame(forged, a.pub, 1<<62), addrE, out)
	s.Handle(captured, addrE, out)

	if got := sendTo(s, a.pub, addrB, 50); got[addrE] != 0 || got[addrA] != 50 {
		t.Fatalf("of 50 frames for A, %d went to the attacker and %d to A; want 0 and 50", got[addrE], got[addrA])
	}
	if s.Dropped(DropBadMAC) != 3 || s.Dropped(DropReplay) != 1 {
		t.Errorf("dropped bad_mac %d replay %d; want 3 and 1", s.Dropped(DropBadMAC), s.Dropped(DropReplay))
	}
}

// A flood of valid registrations must not lock a member out: 80,000 from 256
// ports in 18 s, as the attack did, then the member's re-registration is
// answered.
func TestRegistrationFlood(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := testServer(t, k, WithClock(func() time.Time { return now }))
	out := &fakeOut{}
	a, e := newTestMember(t, k, s), newTestMember(t, k, s)
	admit(s, a.pub, e.pub)
	addrA := netip.MustParseAddrPort("192.0.2.1:40000")
	captured := a.reg()
	s.Handle(captured, addrA, out)

	const flood = 80_000
	start := time.Now()
	for i := range flood {
		if i%4500 == 0 {
			now = now.Add(time.Second)
		}
		from := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.66"), uint16(20000+i%256))
		s.Handle(e.reg(), from, &fakeOut{})
		if i%16 == 0 {
			s.Handle(captured, from, &fakeOut{}) // and replays of A's
		}
	}
	took := time.Since(start)
	out.sent = nil
	s.Handle(a.reg(), addrA, out)
	if len(out.sent) != 1 || out.sent[0].to != addrA {
		t.Fatalf("after %d registrations from an attacker, A's re-registration got %d answers; want 1", flood, len(out.sent))
	}
	t.Logf("%d registrations handled in %s (%.1f µs each)", flood, took, float64(took.Microseconds())/flood)
}

// A member whose clock is off the relay's moves (NAT rebinding) and
// re-registers: the relay must follow at once, whatever the skew.
func TestRegistrationClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{-20 * time.Second, 20 * time.Second, -5 * time.Minute, 24 * time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			k := testKey(t)
			relayNow := time.Unix(1_800_000_000, 0)
			s := testServer(t, k, WithClock(func() time.Time { return relayNow }))
			out := &fakeOut{}
			a, b := newTestMember(t, k, s), newTestMember(t, k, s)
			admit(s, a.pub, b.pub)
			var counter registrationCounter // as a member's Bind issues them
			reg := func() []byte { return RegisterFrame(a.pair, a.pub, counter.next(relayNow.Add(skew))) }
			addrA := netip.MustParseAddrPort("192.0.2.1:40000")
			addrA2 := netip.MustParseAddrPort("192.0.2.1:40001")
			addrB := netip.MustParseAddrPort("203.0.113.5:51820")
			s.Handle(b.reg(), addrB, out)
			s.Handle(reg(), addrA, out)
			relayNow = relayNow.Add(2 * time.Second)
			out.sent = nil
			s.Handle(reg(), addrA2, out)
			if len(out.sent) != 1 {
				t.Fatalf("re-registration from the new address got %d answers; want 1", len(out.sent))
			}
			if got := sendTo(s, a.pub, addrB, 1); got[addrA2] != 1 {
				t.Fatalf("frame for A went to %v; want %s", got, addrA2)
			}
		})
	}
}

// A member restarts with its clock set back: its counters restart below the
// relay's memory of it. It is refused while its old registration lives and
// taken once that expires, one TTL at most.
func TestRegistrationAfterClockSetBack(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := testServer(t, k, WithClock(func() time.Time { return now }), WithTTL(30*time.Second))
	a := newTestMember(t, k, s)
	admit(s, a.pub)
	addrA := netip.MustParseAddrPort("192.0.2.1:40000")
	var before, after registrationCounter
	s.Handle(RegisterFrame(a.pair, a.pub, before.next(now)), addrA, &fakeOut{})
	out := &fakeOut{}
	for i := range 40 {
		now = now.Add(time.Second)
		s.Handle(RegisterFrame(a.pair, a.pub, after.next(now.Add(-time.Hour))), addrA, out)
		if len(out.sent) > 0 {
			if i < 29 {
				t.Fatalf("taken after %d s, before the old registration expired", i+1)
			}
			return
		}
	}
	t.Fatal("never taken again")
}
