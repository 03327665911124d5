package relay

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// listenPair builds two wireguard-go devices whose only path is a relay
// serving on a port of its own (ListenUDP).
func listenPair(t *testing.T) (a, b *node, s *Server, l *Listener) {
	t.Helper()
	k := testKey(t)
	s = testServer(t, k)
	l, err := s.ListenUDP(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	a, b = pairVia(t, k, s, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Port()))
	return a, b, s, l
}

func TestListenerCarriesWireGuardBetweenMembers(t *testing.T) {
	a, b, s, _ := listenPair(t)
	ping := tuntest.Ping(b.ip, a.ip)
	a.tun.Outbound <- ping
	expectPacket(t, b, ping)

	// A burst: wireguard-go sends what it has ready as one batch (one GSO
	// send), which the relay takes in and passes on as a whole.
	const burst = 64
	for i := range burst {
		a.tun.Outbound <- udpPacket(a.ip, b.ip, append(append([]byte{}, marker...), byte(i)))
	}
	for i := range burst {
		expectPacket(t, b, udpPacket(a.ip, b.ip, append(append([]byte{}, marker...), byte(i))))
	}
	p := udpPacket(b.ip, a.ip, marker)
	b.tun.Outbound <- p
	expectPacket(t, a, p)
	if s.Forwarded() < burst+2 {
		t.Errorf("relay forwarded %d packets, want at least %d", s.Forwarded(), burst+2)
	}
}

func TestListenerCloseWithoutTraffic(t *testing.T) {
	l, err := testServer(t, testKey(t)).ListenUDP(0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Port() == 0 {
		t.Error("listener reports port 0")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
