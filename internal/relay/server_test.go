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

func TestServerRegistration(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := NewServer(k, WithClock(func() time.Time { return now }), WithTTL(30*time.Second))
	out := &fakeOut{}
	var pa, pb [32]byte
	pa[0], pb[0] = 1, 2
	addrA := netip.MustParseAddrPort("192.0.2.1:40000")
	addrB := netip.MustParseAddrPort("203.0.113.5:51820")

	reg := func(pub [32]byte, at time.Time) []byte {
		h, err := newHello(typeRegister, pub, at)
		if err != nil {
			t.Fatal(err)
		}
		return h.marshal(k)
	}
	fa := reg(pa, now)
	s.Handle(fa, addrA, out)
	s.Handle(reg(pb, now), addrB, out)
	if s.Members() != 2 || len(out.sent) != 2 {
		t.Fatalf("members %d, acks %d; want 2, 2", s.Members(), len(out.sent))
	}
	ack, err := parseReply(out.sent[0].frame, k)
	if err != nil || ack.Observed != addrA || out.sent[0].to != addrA {
		t.Fatalf("ack %+v to %s err %v; want observed %s", ack, out.sent[0].to, err, addrA)
	}

	// Replay of the same frame, from anywhere: refused.
	s.Handle(fa, netip.MustParseAddrPort("198.51.100.66:1"), out)
	if s.Dropped(DropReplay) != 1 {
		t.Errorf("replay not counted")
	}
	// Stale and future timestamps: refused.
	s.Handle(reg(pa, now.Add(-2*time.Minute)), addrA, out)
	s.Handle(reg(pa, now.Add(2*time.Minute)), addrA, out)
	if s.Dropped(DropStale) != 2 {
		t.Errorf("stale = %d, want 2", s.Dropped(DropStale))
	}
	// A tampered frame: refused.
	bad := reg(pa, now)
	bad[5] ^= 1
	s.Handle(bad, addrA, out)
	if s.Dropped(DropBadMAC) != 1 {
		t.Errorf("bad mac = %d, want 1", s.Dropped(DropBadMAC))
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
	s.Handle(reg(pa, now), addrA2, out)
	putDataHeader(f, typeSend, IDOf(pb))
	out.sent = nil
	s.Handle(f, addrA, out) // the old address is a stranger now
	if len(out.sent) != 0 || s.Dropped(DropStranger) != 1 {
		t.Errorf("old address still forwarded: %+v", out.sent)
	}

	// Registrations expire.
	now = now.Add(31 * time.Second)
	putDataHeader(f, typeSend, IDOf(pb))
	s.Handle(f, addrA2, out)
	if s.Dropped(DropStranger) != 2 || s.Members() != 0 {
		t.Errorf("expired member still forwarded: strangers %d members %d", s.Dropped(DropStranger), s.Members())
	}
}

func TestServerIDConflict(t *testing.T) {
	k := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	s := NewServer(k, WithClock(func() time.Time { return now }))
	out := &fakeOut{}
	var p1, p2 [32]byte
	p1[31], p2[31] = 1, 2 // same first 8 bytes: same relay ID
	h1, _ := newHello(typeRegister, p1, now)
	h2, _ := newHello(typeRegister, p2, now)
	s.Handle(h1.marshal(k), netip.MustParseAddrPort("192.0.2.1:1"), out)
	s.Handle(h2.marshal(k), netip.MustParseAddrPort("192.0.2.2:1"), out)
	if s.Dropped(DropIDConflict) != 1 || s.Members() != 1 {
		t.Errorf("conflict %d members %d", s.Dropped(DropIDConflict), s.Members())
	}
}

func TestServerIgnoresNonFrames(t *testing.T) {
	s := NewServer(testKey(t))
	out := &fakeOut{}
	for _, p := range [][]byte{{}, {1, 0, 0, 0, 5}, {Marker}, {Marker, 99, 1, 2}, {0x45, 0, 0}} {
		s.Handle(p, netip.MustParseAddrPort("192.0.2.1:1"), out)
	}
	if len(out.sent) != 0 || s.Dropped(DropMalformed) != 5 {
		t.Errorf("sent %d, malformed %d", len(out.sent), s.Dropped(DropMalformed))
	}
}
