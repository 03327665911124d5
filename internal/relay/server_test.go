package relay

import (
	"net/netip"
	"testing"
	"time"
)

type sent struct {
	frame []byte
	to    netip.AddrPort
}

type fakeOut struct{ sent []sent }

func (f *fakeOut) WriteTo(frame []byte, to netip.AddrPort) error {
	f.sent = append(f.sent, sent{append([]byte(nil), frame...), to})
	return nil
}

// testMember is a member as a relay server sees it: a key pair and the pair
// key it registers with.
type testMember struct {
	pub  [32]byte
	pair *Key
	n    uint64 // last counter used
}

func newTestMember(t testing.TB, k *Key, s *Server) *testMember {
	t.Helper()
	priv := testPrivate(t)
	return newTestMemberKey(t, k, s, priv)
}

func newTestMemberKey(t testing.TB, k *Key, s *Server, priv [32]byte) *testMember {
	t.Helper()
	pub, err := publicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := k.Pair(priv, s.PublicKey(), RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	return &testMember{pub: pub, pair: pair, n: 1_000}
}

// reg returns the member's next registration.
func (m *testMember) reg() []byte {
	m.n++
	return RegisterFrame(m.pair, m.pub, m.n)
}

func TestServerRegistration(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := testServer(t, k, WithClock(func() time.Time { return now }), WithTTL(30*time.Second))
	out := &fakeOut{}
	a, b := newTestMember(t, k, s), newTestMember(t, k, s)
	pa, pb := a.pub, b.pub
	admit(s, pa, pb)
	addrA := netip.MustParseAddrPort("192.0.2.1:40000")
	addrB := netip.MustParseAddrPort("203.0.113.5:51820")

	fa := a.reg()
	s.Handle(fa, addrA, out)
	s.Handle(b.reg(), addrB, out)
	if s.Members() != 2 || len(out.sent) != 2 {
		t.Fatalf("members %d, acks %d; want 2, 2", s.Members(), len(out.sent))
	}
	ack, err := parseReply(out.sent[0].frame, a.pair)
	if err != nil || ack.Observed != addrA || out.sent[0].to != addrA {
		t.Fatalf("ack %+v to %s err %v; want observed %s", ack, out.sent[0].to, err, addrA)
	}
	if _, err := parseReply(out.sent[0].frame, k); err == nil {
		t.Error("the answer verifies with the cluster key: any member could forge it")
	}

	// Replay of the same frame, from anywhere: refused.
	s.Handle(fa, netip.MustParseAddrPort("198.51.100.66:1"), out)
	s.Handle(fa, addrA, out)
	if s.Dropped(DropReplay) != 2 {
		t.Errorf("replays counted %d, want 2", s.Dropped(DropReplay))
	}
	// A tampered frame: refused.
	bad := a.reg()
	bad[40] ^= 1
	s.Handle(bad, addrA, out)
	if s.Dropped(DropBadMAC) != 1 {
		t.Errorf("bad mac = %d, want 1", s.Dropped(DropBadMAC))
	}
	// A key that is not one of the relay's peers, however well signed: refused.
	s.Handle(newTestMember(t, k, s).reg(), netip.MustParseAddrPort("198.51.100.7:9"), out)
	if s.Dropped(DropNotMember) != 1 {
		t.Errorf("not member = %d, want 1", s.Dropped(DropNotMember))
	}

	// Forwarding swaps the header and keeps the payload byte for byte.
	out.sent = nil
	payload := []byte{4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef}
	f := make([]byte, DataOverhead+len(payload))
	putDataHeader(f, typeSend, IDOf(pb))
	copy(f[DataOverhead:], payload)
	s.Handle(f, addrA, out)
	if len(out.sent) != 1 || out.sent[0].to != addrB {
		t.Fatalf("forwarded %+v, want one frame to %s", out.sent, addrB)
	}
	got := out.sent[0].frame
	if got[1] != typeDeliver || ID(got[2:10]) != IDOf(pa) || string(got[DataOverhead:]) != string(payload) {
		t.Errorf("delivered frame %x", got)
	}
	// To an unknown member: dropped.
	putDataHeader(f, typeSend, ID{9})
	s.Handle(f, addrA, out)
	if s.Dropped(DropUnknownPeer) != 1 {
		t.Errorf("unknown peer not counted")
	}

	// A roams: re-registering from a new address moves it.
	addrA2 := netip.MustParseAddrPort("192.0.2.1:40001")
	now = now.Add(5 * time.Second)
	s.Handle(a.reg(), addrA2, out)
	putDataHeader(f, typeSend, IDOf(pb))
	out.sent = nil
	s.Handle(f, addrA, out) // the old address is a stranger now
	if len(out.sent) != 0 || s.Dropped(DropStranger) != 1 {
		t.Errorf("old address still forwarded: %+v", out.sent)
	}
	// B may not take A's live address (a spoofed source would cut A off).
	s.Handle(b.reg(), addrA2, out)
	if s.Dropped(DropAddrInUse) != 1 {
		t.Errorf("addr in use = %d, want 1", s.Dropped(DropAddrInUse))
	}

	// A leaves the relay's peers: its registration goes at once.
	s.SetMembers([][32]byte{pb})
	putDataHeader(f, typeSend, IDOf(pb))
	s.Handle(f, addrA2, out)
	if s.Dropped(DropStranger) != 2 || s.Members() != 1 {
		t.Errorf("removed member still forwarded: strangers %d members %d", s.Dropped(DropStranger), s.Members())
	}

	// Registrations expire.
	now = now.Add(31 * time.Second)
	putDataHeader(f, typeSend, IDOf(pa))
	s.Handle(f, addrB, out)
	if s.Dropped(DropStranger) != 3 || s.Members() != 0 {
		t.Errorf("expired member still forwarded: strangers %d members %d", s.Dropped(DropStranger), s.Members())
	}
}

func TestServerIDConflict(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := testServer(t, k, WithClock(func() time.Time { return now }))
	out := &fakeOut{}
	// Two keys with the same first 8 bytes (the same relay ID) cannot be
	// made on purpose; put one in the peer set by hand.
	m1 := newTestMember(t, k, s)
	admit(s, m1.pub)
	s.Handle(m1.reg(), netip.MustParseAddrPort("192.0.2.1:1"), out)
	m2 := newTestMember(t, k, s)
	s.mu.Lock()
	s.peers[m2.pub] = &member{key: m2.pub, id: IDOf(m1.pub)}
	s.mu.Unlock()
	s.Handle(m2.reg(), netip.MustParseAddrPort("192.0.2.2:1"), out)
	if s.Dropped(DropIDConflict) != 1 || s.Members() != 1 {
		t.Errorf("conflict %d members %d", s.Dropped(DropIDConflict), s.Members())
	}
}

func TestServerIgnoresNonFrames(t *testing.T) {
	s := testServer(t, testKey(t))
	out := &fakeOut{}
	v1 := make([]byte, registerLen) // a v1 registration (type 1, cluster key only)
	v1[0], v1[1] = Marker, 1
	for _, p := range [][]byte{{}, {1, 0, 0, 0, 5}, {Marker}, {Marker, 99, 1, 2}, {0x45, 0, 0}, v1} {
		s.Handle(p, netip.MustParseAddrPort("192.0.2.1:1"), out)
	}
	if len(out.sent) != 0 || s.Dropped(DropMalformed) != 6 {
		t.Errorf("sent %d, malformed %d", len(out.sent), s.Dropped(DropMalformed))
	}
}
