package relay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// FuzzServerFrame feeds arbitrary datagrams from arbitrary sources to a relay
// with two registered members. Whatever arrives, the relay must not panic,
// must forward only from a registered member's address to a registered
// member's address with the header rewritten and the payload untouched, and
// must answer only registrations, which only the members can sign.
func FuzzServerFrame(f *testing.F) {
	k, _ := DeriveKey([32]byte{7})
	privS, privA, privB := [32]byte{0, 1}, [32]byte{0, 2}, [32]byte{0, 3} // apart in bits that X25519 does not clamp
	now := time.Unix(1_800_000_000, 0)
	pubA, _ := publicKey(privA)
	pubB, _ := publicKey(privB)
	addrA := netip.MustParseAddrPort("192.0.2.1:40000")
	addrB := netip.MustParseAddrPort("203.0.113.5:51820")
	pubS, _ := publicKey(privS)
	pairA, _ := k.Pair(privA, pubS, RoleMember)

	data := make([]byte, DataOverhead+8)
	putDataHeader(data, typeSend, IDOf(pubB))
	data[DataOverhead] = 4
	f.Add(data, []byte(addrA.Addr().AsSlice()), uint16(addrA.Port()))
	f.Add(RegisterFrame(pairA, pubA, 1<<40), []byte{198, 51, 100, 9}, uint16(1))
	f.Add(RegisterFrame(k, pubA, 1<<40), []byte{198, 51, 100, 9}, uint16(1))
	f.Add([]byte{Marker, typeRegistered}, []byte{127, 0, 0, 1}, uint16(9))
	f.Add([]byte{Marker}, []byte{}, uint16(0))

	f.Fuzz(func(t *testing.T, frame, ip []byte, port uint16) {
		s := NewServer(k, privS, WithClock(func() time.Time { return now }))
		s.SetMembers([][32]byte{pubA, pubB})
		out := &fakeOut{}
		for _, m := range []struct {
			priv [32]byte
			pub  [32]byte
			at   netip.AddrPort
		}{{privA, pubA, addrA}, {privB, pubB, addrB}} {
			pair, _ := k.Pair(m.priv, pubS, RoleMember)
			s.Handle(RegisterFrame(pair, m.pub, 1<<40), m.at, out)
		}
		if len(out.sent) != 2 {
			t.Fatalf("members not registered: %d answers", len(out.sent))
		}
		out.sent = nil

		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			a = netip.IPv6Unspecified()
		}
		from := netip.AddrPortFrom(a.Unmap(), port)
		in := bytes.Clone(frame)
		s.Handle(frame, from, out)
		for _, m := range out.sent {
			switch {
			case len(m.frame) > 1 && m.frame[1] == typeDeliver:
				if from != addrA && from != addrB {
					t.Fatalf("forwarded for %s, which never registered", from)
				}
				if m.to != addrA && m.to != addrB {
					t.Fatalf("forwarded to %s, which never registered", m.to)
				}
				if !bytes.Equal(m.frame[DataOverhead:], in[DataOverhead:]) {
					t.Fatal("payload changed in transit")
				}
			case len(m.frame) > 1 && m.frame[1] == typeRegistered:
				if _, ok := registrant(in); !ok {
					t.Fatalf("answered a non-registration %x", in)
				}
			default:
				t.Fatalf("sent unexpected frame %x", m.frame)
			}
		}
		if s.Members() > 2 {
			t.Fatalf("%d members registered; only 2 keys may", s.Members())
		}
	})
}

// FuzzParseFrames: the parsers take any bytes without panicking, and what
// they accept round-trips.
func FuzzParseFrames(f *testing.F) {
	k, _ := DeriveKey([32]byte{7})
	h, _ := newHello(typePing, [32]byte{1}, time.Unix(1_800_000_000, 0))
	f.Add(h.marshal(k))
	f.Add(reply{Kind: typePong, Nonce: h.Nonce, Observed: netip.MustParseAddrPort("[2001:db8::1]:5")}.marshal(k))
	f.Add(reply{Kind: typeRegistered, Observed: netip.MustParseAddrPort("192.0.2.1:5")}.marshal(k))
	f.Add(RegisterFrame(k, [32]byte{2}, 99))
	f.Add([]byte{Marker, typePong})
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseHello(b, k); err == nil {
			if !bytes.Equal(h.marshal(k)[:pingLen-macLen-nonceLen-8], b[:pingLen-macLen-nonceLen-8]) {
				t.Fatalf("hello %x does not round-trip", b)
			}
		}
		if r, err := parseReply(b, k); err == nil {
			if r.Kind != typeRegistered && r.Kind != typePong {
				// Any kind other than Pong parses with the Registered
				// layout; the callers dispatch on the type byte first.
				return
			}
			if got := r.marshal(k); len(got) != len(b) {
				t.Fatalf("reply %x re-marshals to %d bytes", b, len(got))
			}
		}
		if r, err := parseRegistration(b, k); err == nil {
			if !bytes.Equal(r.marshal(k), b) {
				t.Fatalf("registration %x does not round-trip", b)
			}
		}
		if len(b) >= addrLen {
			_ = getAddr(b)
		}
	})
}

// FuzzBindReceive feeds arbitrary datagrams from a relay's address or a
// stranger's to a member's Bind (which also relays). WireGuard messages pass
// untouched; anything else is consumed, except a Deliver frame from a
// configured relay, which becomes its payload from that relay's virtual
// endpoint.
func FuzzBindReceive(f *testing.F) {
	k, _ := DeriveKey([32]byte{7})
	relayAddr := netip.MustParseAddrPort("203.0.113.21:51820")
	deliver := make([]byte, DataOverhead+8)
	putDataHeader(deliver, typeDeliver, ID{1})
	deliver[DataOverhead] = 4
	f.Add(deliver, true)
	f.Add(deliver, false)
	f.Add([]byte{4, 0, 0, 0, 1, 2, 3}, false)
	f.Add(reply{Kind: typeRegistered, Observed: relayAddr}.marshal(k), true)
	f.Add(RegisterFrame(k, [32]byte{1}, 5), false)
	f.Add([]byte{Marker, typePing}, true)
	f.Fuzz(func(t *testing.T, frame []byte, fromRelay bool) {
		b, err := NewBind(conn.NewDefaultBind(), BindConfig{Key: k, PrivateKey: [32]byte{0, 1}, Server: NewServer(k, [32]byte{0, 2})})
		if err != nil {
			t.Fatal(err)
		}
		b.SetRelays([]Target{{Addr: relayAddr, Key: [32]byte{0, 3}}}) // not open: nothing is sent
		from := netip.MustParseAddrPort("198.51.100.66:4444")
		if fromRelay {
			from = relayAddr
		}
		buf := make([]byte, len(frame)+16)
		copy(buf, frame)
		recv := b.receive(func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			sizes[0] = copy(bufs[0], frame)
			eps[0] = &conn.StdNetEndpoint{AddrPort: from}
			return 1, nil
		})
		sizes, eps := []int{0}, []conn.Endpoint{nil}
		n, err := recv([][]byte{buf}, sizes, eps)
		if n != 1 || err != nil {
			t.Fatalf("receive = %d, %v", n, err)
		}
		switch {
		case len(frame) == 0:
		case IsWireGuard(frame):
			if sizes[0] != len(frame) || !bytes.Equal(buf[:sizes[0]], frame) {
				t.Fatal("a WireGuard message was changed")
			}
		case sizes[0] != 0:
			ep, ok := eps[0].(*Endpoint)
			if !fromRelay || frame[1] != typeDeliver || !ok || ep.Relay != relayAddr || !bytes.Equal(buf[:sizes[0]], frame[DataOverhead:]) {
				t.Fatalf("frame %x from %s passed to WireGuard as %x from %v", frame, from, buf[:sizes[0]], eps[0])
			}
		}
	})
}
