package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

func psk(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// meshedPair is a pair whose WireGuard devices are peers, each host's
// policy routing the other's underlay addresses into the mesh.
func meshedPair(t *testing.T) (*node, *node) {
	t.Helper()
	a, b := pair(t)
	k := psk(t)
	a.startWG(t, k, b)
	b.startWG(t, k, a)
	for _, n := range []*node{a, b} {
		n.manager(t)
	}
	sa, sb := a.state(), b.state()
	sa.Routed = hostPrefixes(b.under4, b.under6)
	sb.Routed = hostPrefixes(a.under4, a.under6)
	a.apply(t, sa)
	b.apply(t, sb)
	return a, b
}

// Member traffic addressed to a member's underlay address goes through the
// mesh: the TCP echo works, the marker crosses the mesh link, the underlay
// carries only WireGuard's UDP (exempt from the mark, or the tunnel could
// not exist), and SYNs are clamped to the mesh MTU.
func TestMemberTrafficGoesThroughTheMeshEncrypted(t *testing.T) {
	a, b := meshedPair(t)
	listenTCP(t, b.ns, 7000)

	under := e2e.StartCapture(t, a.ns, underIf, nil)
	mesh := e2e.StartCapture(t, a.ns, a.wgName, nil)
	marker := newMarker()
	for _, dst := range []netip.Addr{b.under4, b.under6} {
		if err := echo(a.ns, netip.AddrPortFrom(dst, 7000), marker, 5*time.Second); err != nil {
			t.Fatalf("echo to member %s through the mesh: %v", dst, err)
		}
	}
	under.Stop()
	mesh.Stop()
	under.Proves(t, "underlay")

	if under.Has(marker) {
		t.Fatal("the marker crossed the underlay in plaintext")
	}
	if n := under.Count(isWireGuardUDP); n == 0 {
		t.Fatal("no WireGuard UDP on the underlay: the capture saw nothing, or the traffic did not go through the tunnel")
	}
	if !mesh.Has(marker) {
		t.Fatal("the marker never crossed the mesh link")
	}
	mss4, mss6 := 0, 0
	for _, p := range mesh.Frames() {
		if mss := synMSS(p); mss != 0 {
			if p[0]>>4 == 4 {
				mss4 = mss
			} else {
				mss6 = mss
			}
		}
	}
	if mss4 != meshMTU-52 || mss6 != meshMTU-72 {
		t.Fatalf("SYN MSS through the mesh: ipv4 %d, ipv6 %d; want %d and %d (clamped to mesh MTU %d)", mss4, mss6, meshMTU-52, meshMTU-72, meshMTU)
	}
}

// With allow_down_peer_bypass false a down member's traffic is held in the
// mesh and never leaves in plaintext; with true it falls back to the
// underlay, which also proves the capture sees plaintext when there is some.
func TestDownPeerFailsClosedUnlessBypassAllowed(t *testing.T) {
	a, b := pair(t)
	a.startWG(t, psk(t), b) // b runs no WireGuard: the peer is down
	a.manager(t)
	marker := newMarker()
	sink := listenUDP(t, b.ns, 7001, marker)
	listenTCP(t, b.ns, 7002)

	warmNeighbours(t, a, b)
	s := a.state()
	s.Unreachable = hostPrefixes(b.under4, b.under6)
	a.apply(t, s)
	under := e2e.StartCapture(t, a.ns, underIf, nil)
	mesh := e2e.StartCapture(t, a.ns, a.wgName, nil)
	for _, dst := range []netip.Addr{b.under4, b.under6} {
		sendUDP(t, a.ns, netip.AddrPortFrom(dst, 7001), marker, 5)
		if err := echo(a.ns, netip.AddrPortFrom(dst, 7002), marker, 300*time.Millisecond); err == nil {
			t.Fatalf("TCP to down member %s connected with bypass off", dst)
		}
	}
	// Controls: the marker entered the mesh link (where WireGuard, with no
	// session, holds it), and the underlay capture is live (it sees a
	// datagram to a non-member).
	control := controlDatagram(t, a, b)
	if e2e.Poll(3*time.Second, 20*time.Millisecond, func() (bool, string) { return mesh.Has(marker) && under.Has(control), "" }) != nil {
		t.Fatalf("controls failed: marker on the mesh link %v, control on the underlay %v", mesh.Has(marker), under.Has(control))
	}
	under.Stop()
	under.Proves(t, "underlay")
	if under.Has(marker) {
		t.Fatal("fail closed broken: the marker left on the underlay in plaintext with bypass off")
	}
	if sink.count() != 0 {
		t.Fatal("the down member received plaintext with bypass off")
	}

	s.AllowDownPeerBypass = true
	a.apply(t, s)
	under = e2e.StartCapture(t, a.ns, underIf, nil)
	for _, dst := range []netip.Addr{b.under4, b.under6} {
		sendUDP(t, a.ns, netip.AddrPortFrom(dst, 7001), marker, 2)
		if err := echo(a.ns, netip.AddrPortFrom(dst, 7002), marker, 3*time.Second); err != nil {
			t.Fatalf("bypass on: TCP to down member %s over the underlay: %v", dst, err)
		}
	}
	if e2e.Poll(3*time.Second, 20*time.Millisecond, func() (bool, string) { return sink.count() >= 2 && under.Has(marker), "" }) != nil {
		t.Fatalf("bypass on: member got %d marker datagrams, capture saw marker: %v; want both (fallback to the underlay)", sink.count(), under.Has(marker))
	}
}

// Belt and braces: when the mesh link disappears (agent killed, TUN gone,
// table-180 routes gone with it) marked traffic would take the main table
// out of the underlay; the postrouting guard drops it instead.
func TestGuardDropsPlaintextWhenTheMeshLinkIsGone(t *testing.T) {
	a, b := pair(t)
	a.startWG(t, psk(t), b)
	a.manager(t)
	marker := newMarker()
	sink := listenUDP(t, b.ns, 7001, marker)
	warmNeighbours(t, a, b)
	s := a.state()
	s.Routed = hostPrefixes(b.under4, b.under6)
	a.apply(t, s)
	if err := a.dev.Close(); err != nil {
		t.Fatal(err)
	}
	err := a.m.Apply(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), a.wgName) {
		t.Fatalf("Apply without the mesh link: %v, want an error naming %s", err, a.wgName)
	}
	under := e2e.StartCapture(t, a.ns, underIf, nil)
	marker6 := newMarker()
	sink6 := listenUDP(t, b.ns, 7004, marker6)
	sendUDP(t, a.ns, netip.AddrPortFrom(b.under4, 7001), marker, 5)
	sendUDP(t, a.ns, netip.AddrPortFrom(b.under6, 7004), marker6, 5)
	// Control: unmarked traffic to a non-member still flows, so the capture
	// is live and the link is up.
	control := controlDatagram(t, a, b)
	if e2e.Poll(3*time.Second, 20*time.Millisecond, func() (bool, string) { return under.Has(control), "" }) != nil {
		t.Fatal("control datagram to a non-member did not cross the underlay: the capture proves nothing")
	}
	under.Stop()
	under.Proves(t, "underlay")
	if under.Has(marker) || sink.count() != 0 {
		t.Error("with the mesh link gone, IPv4 member traffic left in plaintext")
	}
	if under.Has(marker6) || sink6.count() != 0 {
		t.Error("with the mesh link gone, IPv6 member traffic left in plaintext")
	}
}

// LAN bypass CIDRs stay off the mesh even for member addresses.
func TestLANBypassStaysOffTheMesh(t *testing.T) {
	a, b := pair(t)
	a.startWG(t, psk(t), b) // peer down: anything routed into the mesh would vanish
	a.manager(t)
	marker := newMarker()
	sink := listenUDP(t, b.ns, 7001, marker)
	s := a.state()
	s.Routed = append(hostPrefixes(b.under4, b.under6), netip.MustParsePrefix("198.51.100.0/24"))
	s.LANBypass = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")}
	a.apply(t, s)
	if got := s.Marked(); len(got) != 1 || got[0].String() != "198.51.100.0/24" {
		t.Fatalf("marked %v, want only 198.51.100.0/24", got)
	}
	under := e2e.StartCapture(t, a.ns, underIf, nil)
	for _, dst := range []netip.Addr{b.under4, b.under6} {
		sendUDP(t, a.ns, netip.AddrPortFrom(dst, 7001), marker, 2)
	}
	if e2e.Poll(3*time.Second, 20*time.Millisecond, func() (bool, string) { return sink.count() >= 4, "" }) != nil {
		t.Fatalf("member on the bypassed LAN got %d of 4 datagrams directly", sink.count())
	}
	if under.Stop(); !under.Has(marker) {
		t.Fatal("bypassed traffic did not cross the underlay directly")
	}
}

// The host firewall: default block with ordered rules; WireGuard's port,
// established traffic, loopback, the mesh link and IPv6 neighbour discovery
// stay open.
func TestHostFirewall(t *testing.T) {
	a, b := pair(t)
	k := psk(t)
	a.startWG(t, k, b)
	b.startWG(t, k, a)
	b.manager(t)
	for _, p := range []int{8080, 8081, 9090} {
		listenTCP(t, b.ns, p)
	}
	s := b.state()
	s.Firewall = config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{
		{Protocol: "tcp", Port: "8080", Action: "accept"},
		{Protocol: "tcp", Port: "9000-9100", Sources: []string{"203.0.113.0/24", "2001:db8:ffff::/48"}, Action: "accept"},
		{Protocol: "tcp", Port: "8081", Sources: []string{"192.0.2.0/24"}, Action: "block"},
		{Protocol: "tcp", Port: "8081", Action: "accept"},
	}}
	b.apply(t, s)

	const blocked = 400 * time.Millisecond
	for _, tc := range []struct {
		dst  netip.Addr
		port uint16
		open bool
	}{
		{b.under4, 8080, true},
		{b.under6, 8080, true}, // needs neighbour discovery through the firewall
		{b.under4, 9090, false},
		{b.under6, 9090, false},
		{b.under4, 8081, false}, // the earlier block rule wins over the later accept
		{b.under6, 8081, true},  // the block rule names only IPv4 sources
		{b.mesh, 9090, true},    // from the mesh link: an authenticated member
	} {
		timeout := blocked
		if tc.open {
			timeout = 5 * time.Second
		}
		err := echo(a.ns, netip.AddrPortFrom(tc.dst, tc.port), []byte("hello"), timeout)
		switch {
		case tc.open && err != nil:
			t.Errorf("[%s]:%d should be open: %v", tc.dst, tc.port, err)
		case !tc.open && err == nil:
			t.Errorf("[%s]:%d should be blocked but connected", tc.dst, tc.port)
		case !tc.open && !isTimeout(err):
			t.Errorf("[%s]:%d: %v; want a timeout (dropped), not a refusal", tc.dst, tc.port, err)
		}
	}

	// Default accept opens the rest, atomically replacing the table.
	s.Firewall.DefaultAction = "accept"
	b.apply(t, s)
	if err := echo(a.ns, netip.AddrPortFrom(b.under4, 9090), []byte("hello"), 5*time.Second); err != nil {
		t.Fatalf("after defaultAction accept, port 9090: %v", err)
	}
}

// controlDatagram gives b a second, non-member address and sends a fresh
// marker there from a, unmarked and so in plaintext; it returns the marker.
func controlDatagram(t *testing.T, a, b *node) []byte {
	t.Helper()
	control := newMarker()
	if err := b.ns.AddAddr(underIf, netip.MustParsePrefix("192.0.2.99/24")); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatal(err)
	}
	sendUDP(t, a.ns, netip.MustParseAddrPort("192.0.2.99:7003"), control, 3)
	return control
}

// warmNeighbours resolves b's underlay addresses (ARP, ND) from a before
// any policy is in, so a leak would leave at once and in order with the
// control datagram instead of waiting in a neighbour queue.
func warmNeighbours(t *testing.T, a, b *node) {
	t.Helper()
	listenTCP(t, b.ns, 7010)
	for _, dst := range []netip.Addr{b.under4, b.under6} {
		if err := echo(a.ns, netip.AddrPortFrom(dst, 7010), []byte("warm"), 3*time.Second); err != nil {
			t.Fatalf("underlay to %s before any policy: %v", dst, err)
		}
	}
}

// A local DF packet over the mesh MTU to a member is rerouted into the mesh
// and refused there; the kernel's own "fragmentation needed" / "packet too
// big" would then cache the mesh MTU as the path MTU to the member's
// underlay address, which WireGuard's UDP to that member also uses. The
// policy drops that self-addressed error, so no such entry appears and
// full-size tunnel packets keep flowing.
func TestOwnPMTUErrorsDoNotPoisonWireGuard(t *testing.T) {
	a, b := meshedPair(t)
	for _, p := range []struct {
		dst     netip.Addr
		payload int // one byte over the mesh MTU: 20/40 IP + 8 ICMP
	}{{b.under4, meshMTU - 28 + 1}, {b.under6, meshMTU - 48 + 1}} {
		if out, err := pingDF(a.ns, p.dst.String(), p.payload, 1); err == nil {
			t.Fatalf("DF ping of %d bytes to %s passed the %d-byte mesh:\n%s", p.payload, p.dst, meshMTU, out)
		}
		out, err := a.ns.Exec(context.Background(), "ip", "route", "get", p.dst.String())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "mtu") {
			t.Errorf("a path MTU is cached for member %s after a local oversize packet:\n%s", p.dst, out)
		}
	}
	listenTCP(t, b.ns, 7000)
	big := make([]byte, 256<<10)
	copy(big, newMarker())
	if err := echo(a.ns, netip.AddrPortFrom(b.under4, 7000), big, 5*time.Second); err != nil {
		t.Fatalf("bulk TCP through the mesh afterwards: %v", err)
	}
}
