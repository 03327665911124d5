package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var marker = []byte("MESHSPAN-PLAINTEXT-MARKER-7f3a")

// testPrivate returns a fresh WireGuard private key.
func testPrivate(t testing.TB) [32]byte {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testServer returns a relay server with a fresh identity.
func testServer(t testing.TB, k *Key, opts ...ServerOption) *Server {
	return NewServer(k, testPrivate(t), opts...)
}

// admit adds keys to the server's peers (SetMembers replaces the set).
func admit(s *Server, keys ...[32]byte) {
	s.mu.RLock()
	all := append([][32]byte(nil), keys...)
	for k := range s.peers {
		all = append(all, k)
	}
	s.mu.RUnlock()
	s.SetMembers(all)
}

// at names the relay served by s at addr, for SetRelays.
func at(s *Server, addr netip.AddrPort) []Target {
	return []Target{{Addr: addr, Key: s.PublicKey()}}
}

func testKey(t testing.TB) *Key {
	t.Helper()
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		t.Fatal(err)
	}
	k, err := DeriveKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recorder is a Transport that keeps a copy of every frame the relay sends.
type recorder struct {
	out Transport
	mu  sync.Mutex
	all [][]byte
}

func (r *recorder) WriteTo(frame []byte, to netip.AddrPort) error {
	r.mu.Lock()
	r.all = append(r.all, bytes.Clone(frame))
	r.mu.Unlock()
	return r.out.WriteTo(frame, to)
}

func (r *recorder) frames() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slicesClone(r.all)
}

func slicesClone(in [][]byte) [][]byte { return append([][]byte(nil), in...) }

// startRelay runs a relay server on a loopback socket, recording what it sends.
func startRelay(t testing.TB, k *Key) (*Server, netip.AddrPort, *recorder) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := testServer(t, k)
	rec := &recorder{out: UDPTransport{Conn: c}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.Handle(buf[:n], unmap(from), rec)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s, c.LocalAddr().(*net.UDPAddr).AddrPort(), rec
}

type node struct {
	key  wgtypes.Key
	ip   netip.Addr
	tun  *tuntest.ChannelTUN
	dev  *device.Device
	bind *Bind
}

func newNode(t testing.TB, k *Key, ip string, server *Server) *node {
	t.Helper()
	return newNodeWithKey(t, k, testPrivate(t), ip, server)
}

func newNodeWithKey(t testing.TB, k *Key, priv wgtypes.Key, ip string, server *Server) *node {
	t.Helper()
	b, err := NewBind(conn.NewDefaultBind(), BindConfig{Key: k, PrivateKey: priv, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{key: priv, ip: netip.MustParseAddr(ip), tun: tuntest.NewChannelTUN(), bind: b}
	n.dev = device.NewDevice(n.tun.TUN(), b, device.NewLogger(logLevel(), ip+": "))
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(priv[:]))); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.dev.Close)
	return n
}

func (n *node) addPeer(t testing.TB, peer *node, endpoint netip.AddrPort) {
	t.Helper()
	pub := peer.key.PublicKey()
	cfg := fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", hex.EncodeToString(pub[:]), peer.ip)
	if endpoint.IsValid() {
		cfg += "endpoint=" + endpoint.String() + "\n"
	}
	if err := n.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

func (n *node) port(t testing.TB) uint16 {
	t.Helper()
	s, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	var p uint16
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "listen_port="); ok {
			fmt.Sscan(v, &p)
		}
	}
	return p
}

func waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// udpPacket builds an IPv4/UDP packet carrying payload (checksums left zero:
// wireguard-go does not check them and the channel TUN delivers as is).
func udpPacket(src, dst netip.Addr, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	p[2], p[3] = byte(len(p)>>8), byte(len(p))
	p[8], p[9] = 64, 17
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	p[20], p[21], p[22], p[23] = 0x30, 0x39, 0x30, 0x39
	p[24], p[25] = byte((8+len(payload))>>8), byte(8+len(payload))
	copy(p[28:], payload)
	return p
}

func expectPacket(t testing.TB, n *node, want []byte) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case got := <-n.tun.Inbound:
			if bytes.Equal(got, want) {
				return
			}
		case <-deadline:
			t.Fatalf("%s: packet did not arrive", n.ip)
		}
	}
}

func registered(b *Bind) bool {
	rs := b.Relays()
	for _, r := range rs {
		if r.Registered.IsZero() {
			return false
		}
	}
	return len(rs) > 0
}

// relayedPair builds two wireguard-go devices whose only path is the relay.
func relayedPair(t testing.TB) (a, b *node, s *Server, relay netip.AddrPort, rec *recorder) {
	k := testKey(t)
	s, relay, rec = startRelay(t, k)
	a, b = pairVia(t, k, s, relay)
	return a, b, s, relay, rec
}

// pairVia builds two wireguard-go devices that reach each other through
// the relay at relay only.
func pairVia(t testing.TB, k *Key, s *Server, relay netip.AddrPort) (a, b *node) {
	a = newNode(t, k, "10.99.0.1", nil)
	b = newNode(t, k, "10.99.0.2", nil)
	admit(s, a.key.PublicKey(), b.key.PublicKey())
	for _, n := range []*node{a, b} {
		n.bind.SetRelays(at(s, relay))
	}
	waitFor(t, "both nodes registered with the relay", 5*time.Second, func() bool { return registered(a.bind) && registered(b.bind) })
	va, err := a.bind.RelayEndpoint(relay, b.key.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.bind.RelayEndpoint(relay, a.key.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	a.addPeer(t, b, va)
	b.addPeer(t, a, vb)
	return a, b
}

func TestRelayCarriesWireGuardBetweenMembers(t *testing.T) {
	a, b, s, relay, rec := relayedPair(t)

	ping := tuntest.Ping(b.ip, a.ip)
	a.tun.Outbound <- ping
	expectPacket(t, b, ping)

	for i := range 20 {
		p := udpPacket(b.ip, a.ip, append(append([]byte{}, marker...), byte(i)))
		b.tun.Outbound <- p
		expectPacket(t, a, p)
		p = udpPacket(a.ip, b.ip, append(append([]byte{}, marker...), byte(i)))
		a.tun.Outbound <- p
		expectPacket(t, b, p)
	}

	if s.Forwarded() < 40 {
		t.Errorf("relay forwarded %d packets, want at least 40", s.Forwarded())
	}
	frames := rec.frames()
	delivers := 0
	for _, f := range frames {
		if bytes.Contains(f, marker) {
			t.Fatalf("relay sent a frame containing the plaintext marker: %x", f)
		}
		if f[1] == typeDeliver {
			delivers++
			if !IsWireGuard(f[DataOverhead:]) {
				t.Errorf("relayed payload is not a WireGuard message: %x", f[:16])
			}
		}
	}
	if delivers < 40 {
		t.Errorf("recorded %d relayed frames, want at least 40", delivers)
	}
	// Both devices still see the peer at its virtual endpoint: nothing
	// went direct.
	for _, n := range []*node{a, b} {
		cfg, _ := n.dev.IpcGet()
		if !strings.Contains(cfg, "endpoint=[100::") {
			t.Errorf("%s: peer endpoint is not the relayed one:\n%s", n.ip, cfg)
		}
	}
	_ = relay
}

func TestRelayDropsStrangers(t *testing.T) {
	a, b, s, relay, _ := relayedPair(t)
	ping := tuntest.Ping(b.ip, a.ip)
	a.tun.Outbound <- ping
	expectPacket(t, b, ping)

	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	dst := IDOf(b.key.PublicKey())

	// Data from an unregistered address, addressed to a member.
	frame := make([]byte, DataOverhead+len(marker)+4)
	putDataHeader(frame, typeSend, dst)
	copy(frame[DataOverhead+4:], marker)
	frame[DataOverhead] = 4 // looks like WireGuard transport data
	for range 5 {
		if _, err := stranger.WriteToUDPAddrPort(frame, relay); err != nil {
			t.Fatal(err)
		}
	}
	// A registration of a member's key signed with another cluster's key.
	other, err := testKey(t).Pair(testPrivate(t), s.PublicKey(), RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	stranger.WriteToUDPAddrPort(RegisterFrame(other, b.key.PublicKey(), uint64(time.Now().UnixNano())), relay)

	waitFor(t, "stranger frames counted", 5*time.Second, func() bool {
		return s.Dropped(DropStranger) >= 5 && s.Dropped(DropBadMAC) >= 1
	})
	select {
	case p := <-b.tun.Inbound:
		if bytes.Contains(p, marker) {
			t.Fatal("a stranger's packet reached a member")
		}
	default:
	}
	// The stranger got no answer: it learns nothing, not even that a relay runs.
	stranger.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := stranger.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
		t.Fatalf("relay answered a stranger with %d bytes", n)
	}
	if s.Members() != 2 {
		t.Errorf("relay has %d members, want 2", s.Members())
	}
}

func TestDirectProbeConfirmsPath(t *testing.T) {
	k := testKey(t)
	a := newNode(t, k, "10.99.0.1", nil)
	b := newNode(t, k, "10.99.0.2", nil)
	ap := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.port(t))
	bp := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.port(t))
	a.bind.SetCandidates(b.key.PublicKey(), []netip.AddrPort{bp})
	waitFor(t, "direct path confirmed", 5*time.Second, func() bool {
		_, ok := a.bind.Direct(b.key.PublicKey())
		return ok
	})
	d, _ := a.bind.Direct(b.key.PublicKey())
	if d.Addr != bp || d.Observed != ap {
		t.Errorf("direct state = %+v, want addr %s observed %s", d, bp, ap)
	}

	// A node of another cluster gets no answer.
	c := newNode(t, testKey(t), "10.99.0.3", nil)
	c.bind.SetCandidates(b.key.PublicKey(), []netip.AddrPort{bp})
	waitFor(t, "b counted the stranger's probe", 5*time.Second, func() bool { return b.bind.Strangers() > 0 })
	if _, ok := c.bind.Direct(b.key.PublicKey()); ok {
		t.Error("a stranger's probe was answered")
	}
}

func TestRelayOnWireGuardPort(t *testing.T) {
	// r relays on its own WireGuard port and is a WireGuard peer of a at the
	// same time; a and b reach each other only through r.
	k := testKey(t)
	rkey := testPrivate(t)
	srv := NewServer(k, rkey)
	r := newNodeWithKey(t, k, rkey, "10.99.0.9", srv)
	a := newNode(t, k, "10.99.0.1", nil)
	b := newNode(t, k, "10.99.0.2", nil)
	admit(srv, a.key.PublicKey(), b.key.PublicKey())
	rp := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.port(t))
	for _, n := range []*node{a, b} {
		n.bind.SetRelays(at(srv, rp))
	}
	waitFor(t, "registered", 5*time.Second, func() bool { return registered(a.bind) && registered(b.bind) })
	va, _ := a.bind.RelayEndpoint(rp, b.key.PublicKey())
	vb, _ := b.bind.RelayEndpoint(rp, a.key.PublicKey())
	a.addPeer(t, b, va)
	b.addPeer(t, a, vb)
	a.addPeer(t, r, rp)
	r.addPeer(t, a, netip.AddrPort{})

	p := udpPacket(a.ip, b.ip, marker)
	a.tun.Outbound <- p
	expectPacket(t, b, p)
	p = udpPacket(a.ip, r.ip, marker)
	a.tun.Outbound <- p
	expectPacket(t, r, p)
	if srv.Forwarded() == 0 {
		t.Error("relay on the WireGuard port forwarded nothing")
	}
}

func TestVirtualEndpointRoundTrip(t *testing.T) {
	k := testKey(t)
	b, _ := NewBind(conn.NewDefaultBind(), BindConfig{Key: k})
	relay := netip.MustParseAddrPort("198.51.100.7:51820")
	b.SetRelays([]Target{{Addr: relay, Key: testPrivate(t)}})
	var peer [32]byte
	copy(peer[:], "0123456789abcdef0123456789abcdef")
	v, err := b.RelayEndpoint(relay, peer)
	if err != nil {
		t.Fatal(err)
	}
	if !IsVirtual(v) {
		t.Fatalf("%s is not virtual", v)
	}
	ep, err := b.ParseEndpoint(v.String())
	if err != nil {
		t.Fatal(err)
	}
	re, ok := ep.(*Endpoint)
	if !ok || re.Relay != relay || re.Peer != IDOf(peer) || re.DstToString() != v.String() {
		t.Fatalf("parsed %#v from %s", ep, v)
	}
	if _, err := b.ParseEndpoint("[100::1]:99"); err == nil || !strings.Contains(err.Error(), "slot 99") {
		t.Errorf("unknown slot: err = %v", err)
	}
	if _, err := b.RelayEndpoint(netip.MustParseAddrPort("203.0.113.1:1"), peer); err == nil {
		t.Error("RelayEndpoint accepted a relay that is not configured")
	}
}

func logLevel() int {
	if testing.Verbose() {
		return device.LogLevelVerbose
	}
	return device.LogLevelError
}

func TestRelaySlotsStayUniqueAcrossChurn(t *testing.T) {
	b, _ := NewBind(conn.NewDefaultBind(), BindConfig{Key: testKey(t)})
	keep := netip.MustParseAddrPort("198.51.100.1:51820")
	rkey := testPrivate(t) // a stand-in public key: any 32 bytes but low-order ones will do
	var peer [32]byte
	for i := range 70000 { // more additions than there are slots
		churn := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(i%60000+1))
		b.SetRelays([]Target{{Addr: keep, Key: rkey}, {Addr: churn, Key: rkey}})
	}
	v1, _ := b.RelayEndpoint(keep, peer)
	ep, err := b.ParseEndpoint(v1.String())
	if err != nil || ep.(*Endpoint).Relay != keep {
		t.Fatalf("after slot wrap-around the kept relay's endpoint resolves to %v (%v)", ep, err)
	}
}

// TestPingViaRelayAnswersFromTheQuietEnd: a probe through the relay is
// answered by the peer's Bind through the same relay, without WireGuard
// sending anything; a probe through a relay the peer cannot be reached on,
// or one naming another key, gets no answer.
func TestPingViaRelayAnswersFromTheQuietEnd(t *testing.T) {
	a, b, s, relay, _ := relayedPair(t)
	pb := b.key.PublicKey()
	if got := a.bind.Answered(relay, pb); !got.IsZero() {
		t.Fatalf("answered before any probe: %v", got)
	}
	before := s.Forwarded()
	start := time.Now()
	a.bind.PingVia(relay, pb)
	waitFor(t, "an answer through the relay", 5*time.Second, func() bool { return !a.bind.Answered(relay, pb).IsZero() })
	if got := a.bind.Answered(relay, pb); got.Before(start) {
		t.Errorf("answered at %v, before the probe was sent at %v", got, start)
	}
	if fw := s.Forwarded() - before; fw < 2 {
		t.Errorf("relay forwarded %d frames for a probe and its answer, want 2", fw)
	}
	// b never learnt anything about a from it: its WireGuard saw nothing.
	if st, _ := b.dev.IpcGet(); strings.Contains(st, "rx_bytes=") && !strings.Contains(st, "rx_bytes=0") {
		t.Errorf("the probe reached WireGuard:\n%s", st)
	}

	// A ping through the relay that names another key than the registered
	// sender's is dropped, not answered.
	strangersBefore := b.bind.Strangers()
	h, _ := newHello(typePing, testPrivate(t), time.Now())
	frame := viaFrame(IDOf(pb), h.marshal(a.bind.cfg.Key))
	if err := a.bind.sendTo(frame, relay); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forged probe counted as a stranger", 5*time.Second, func() bool { return b.bind.Strangers() > strangersBefore })

	// Through a relay the peer is not registered with: no answer.
	s2, relay2, _ := startRelay(t, a.bind.cfg.Key)
	admit(s2, a.key.PublicKey())
	a.bind.SetRelays(append(at(s, relay), at(s2, relay2)...))
	waitFor(t, "a registered with the second relay", 5*time.Second, func() bool { return registered(a.bind) })
	a.bind.PingVia(relay2, pb)
	waitFor(t, "the second relay dropping the probe", 5*time.Second, func() bool { return s2.Dropped(DropUnknownPeer) > 0 })
	if got := a.bind.Answered(relay2, pb); !got.IsZero() {
		t.Errorf("answered through a relay the peer never registered with, at %v", got)
	}
}
