package policy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// A node behind a masquerading router joins the mesh through discovery:
// it initiates, keepalive holds the mapping, and the public node talks to
// it through the address the NAT shows. Traffic to the private node's own
// (unroutable) underlay address goes through the mesh too, encrypted.
func TestNATedNodeJoinsTheMesh(t *testing.T) {
	lab, secrets, wan := agentLab(t)
	lan, err := lab.Switch("lan")
	if err != nil {
		t.Fatal(err)
	}
	disc, err := lab.Host("disc")
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.Attach(disc, underIf, netip.MustParsePrefix("203.0.113.2/24")); err != nil {
		t.Fatal(err)
	}
	rtr, err := lab.NATRouter("rtr", lan, wan, netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("203.0.113.1/24"), netlab.NATPreservePorts)
	if err != nil {
		t.Fatal(err)
	}
	pub := newAgentNode(t, lab, wan, secrets, "pub", netip.MustParseAddr("203.0.113.10"))
	priv := newAgentNode(t, lab, lan, secrets, "priv", netip.MustParseAddr("198.51.100.2"))
	// pub's default gateway is elsewhere on the internet (absent here): like
	// any public host it has no route into the private LAN behind the NAT.
	for _, r := range []struct {
		n  *netlab.NS
		gw string
	}{{priv.NS, "198.51.100.1"}, {pub.NS, "203.0.113.254"}} {
		if err := r.n.DefaultRoute(netip.MustParseAddr(r.gw)); err != nil {
			t.Fatal(err)
		}
	}
	url := startDiscovery(t, disc, netip.MustParseAddr("203.0.113.2"))
	for _, n := range []*agentNode{pub, priv} {
		n.discoveries = []string{url}
		n.start(t, n.config())
	}
	waitUp(t, 30*time.Second, pub, priv)

	if ep := pub.peerStatus(t, "priv").Endpoint; !strings.HasPrefix(ep, "203.0.113.1:") {
		t.Errorf("pub reaches priv via %q, want the NAT's public address 203.0.113.1", ep)
	}
	listenTCP(t, priv.NS, 7000)
	listenTCP(t, pub.NS, 7000)
	wire := e2e.StartCapture(t, rtr, netlab.NATWanIf, nil)
	marker := newMarker()
	for _, c := range []struct {
		from *agentNode
		dst  string
	}{
		{pub, priv.ID.Address},  // mesh address
		{pub, priv.ip.String()}, // private underlay address, routed into the mesh
		{priv, pub.ID.Address},  // and back
		{priv, pub.ip.String()},
	} {
		if err := echo(c.from.NS, netip.AddrPortFrom(netip.MustParseAddr(c.dst), 7000), marker, 5*time.Second); err != nil {
			t.Errorf("%s -> %s:7000 through the mesh: %v", c.from.Name, c.dst, err)
		}
	}
	wire.Stop()
	wire.Proves(t, "NAT wire")
	if wire.Has(marker) {
		t.Fatal("member traffic crossed the NAT in plaintext")
	}
	if wire.Count(isWireGuardUDP) == 0 {
		t.Fatal("no WireGuard UDP crossed the NAT: the capture proves nothing")
	}
}

// The configured MTU is applied to the mesh link and the policy routes;
// full-size TCP segments and DF-set ICMP at the mesh MTU cross without loss
// or fragmentation, and one byte more is refused locally, not fragmented.
func TestMeshMTU(t *testing.T) {
	lab, secrets, sw := agentLab(t)
	const mtu = 1400 // not the default, so a setting that is not applied shows
	n1 := newAgentNode(t, lab, sw, secrets, "n1", netip.MustParseAddr("192.0.2.11"))
	n2 := newAgentNode(t, lab, sw, secrets, "n2", netip.MustParseAddr("192.0.2.12"))
	for _, p := range [][2]*agentNode{{n1, n2}, {n2, n1}} {
		cfg := p[0].config()
		cfg.WireGuard.MTU = mtu
		// The peer's underlay address is one of its networks, as KubeSpan
		// routes members' addresses: IPv4 to it goes through the mesh.
		cfg.StaticPeers = []config.StaticPeer{p[1].staticPeer(p[1].ip.String() + "/32")}
		p[0].start(t, cfg)
	}
	waitUp(t, 20*time.Second, n1, n2)

	for _, n := range []*agentNode{n1, n2} {
		// 1400 fits the 1500-byte underlay with WireGuard's 80 bytes.
		if s, err := n.Status(); err != nil || slices.ContainsFunc(s.Warnings, isMTUWarning) {
			t.Errorf("%s: status %v (%v) warns about the MTU; mesh %d fits underlay 1500", n.Name, s.Warnings, err, mtu)
		}
		l, err := n.NS.Netlink().LinkByName(config.DefaultInterface)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().MTU != mtu {
			t.Errorf("%s: mesh link MTU %d, want %d", n.Name, l.Attrs().MTU, mtu)
		}
		out, err := n.NS.Exec(context.Background(), "ip", "route", "show", "table", fmt.Sprint(config.DefaultRouteTable))
		if err != nil || !strings.Contains(string(out), fmt.Sprintf("mtu %d", mtu)) {
			t.Errorf("%s: table %d routes lack mtu %d (%v):\n%s", n.Name, config.DefaultRouteTable, mtu, err, out)
		}
	}

	wire := e2e.StartCapture(t, n2.NS, underIf, nil)
	// DF-set ICMP filling the MTU exactly: IPv6 (40 + 8 header bytes) to the
	// mesh address, IPv4 (20 + 8) to the underlay address routed into the mesh.
	for _, p := range []struct {
		dst     string
		payload int
	}{{n2.ID.Address, mtu - 48}, {n2.ip.String(), mtu - 28}} {
		if out, err := pingDF(n1.NS, p.dst, p.payload, 3); err != nil {
			t.Errorf("DF ping of %d bytes to %s at MTU %d: %v\n%s", p.payload, p.dst, mtu, err, out)
		}
		if out, err := pingDF(n1.NS, p.dst, p.payload+1, 1); err == nil {
			t.Errorf("DF ping one byte over the MTU to %s passed; want it refused:\n%s", p.dst, out)
		}
	}
	// Large TCP segments: 8 MiB through the mesh, checked end to end.
	if err := transfer(n1.NS, n2.NS, netip.MustParseAddr(n2.ID.Address), 8<<20); err != nil {
		t.Fatal(err)
	}
	frames, gso := wire.Stop(), wire.GSO()
	frags, wgMax := 0, 0
	for i, f := range frames {
		pkt := e2e.IPPacket(f)
		if isFragment(pkt) {
			frags++
		}
		if !isWireGuardUDP(f) {
			continue
		}
		size := len(pkt) // as it goes on the wire: a GSO frame is cut into segments
		if gso[i] > 0 {
			size = 20 + 8 + gso[i]
		}
		wgMax = max(wgMax, size)
	}
	if frags != 0 {
		t.Errorf("%d fragmented packets on the underlay; the mesh MTU should leave room for WireGuard", frags)
	}
	// Full-size segments: mesh MTU + 32 (WireGuard) + 8 (UDP) + 20 (IPv4).
	if want := mtu + 60; wgMax != want {
		t.Errorf("largest WireGuard packet on the underlay is %d bytes, want %d (mesh MTU %d + 60: full-size segments, nothing larger)", wgMax, want, mtu)
	}
}

// A mesh MTU above the underlay's minus WireGuard's 80 bytes is a warning
// in status, measured on the link that carries the tunnel to the peer.
func TestMeshMTUAboveUnderlayWarns(t *testing.T) {
	lab, secrets, sw := agentLab(t)
	n1 := newAgentNode(t, lab, sw, secrets, "n1", netip.MustParseAddr("192.0.2.11"))
	n2 := newAgentNode(t, lab, sw, secrets, "n2", netip.MustParseAddr("192.0.2.12"))
	for _, n := range []*agentNode{n1, n2} {
		l, err := n.NS.Netlink().LinkByName(underIf)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.NS.Netlink().LinkSetMTU(l, 1400); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range [][2]*agentNode{{n1, n2}, {n2, n1}} {
		cfg := p[0].config()
		cfg.WireGuard.MTU = 1420
		cfg.StaticPeers = []config.StaticPeer{p[1].staticPeer()}
		p[0].start(t, cfg)
	}
	want := "mesh MTU 1420 is above the underlay MTU 1400"
	var last []string
	if e2e.Poll(20*time.Second, 20*time.Millisecond, func() (bool, string) {
		s, err := n1.Status()
		if err != nil {
			return false, ""
		}
		last = s.Warnings
		return slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, want) && strings.Contains(w, "1320") }), ""
	}) != nil {
		t.Fatalf("n1 status warnings %q; want one saying %q and naming 1320 as the fix", last, want)
	}
}

func isMTUWarning(w string) bool { return strings.Contains(w, "mesh MTU") }

func pingDF(ns *netlab.NS, dst string, size, count int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ns.Exec(ctx, "ping", "-M", "do", "-s", fmt.Sprint(size), "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", dst)
}

// isFragment tells an IPv4 fragment (MF or an offset) or an IPv6 packet
// with a fragment header.
func isFragment(pkt []byte) bool {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return pkt[6] == unix.IPPROTO_FRAGMENT
	}
	return false
}

// transfer sends size random bytes from one namespace to dst:5201 in
// another and checks the receiver hashed exactly them.
func transfer(from, to *netlab.NS, dst netip.Addr, size int) error {
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	addr := netip.AddrPortFrom(dst, 5201).String()
	var l net.Listener
	if err := to.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		return err
	}
	defer l.Close()
	got := make(chan [32]byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		io.Copy(h, c)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	var c net.Conn
	if err := from.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(c, bytes.NewReader(payload))
	c.Close()
	if err != nil {
		return fmt.Errorf("send to %s: %w", addr, err)
	}
	select {
	case sum := <-got:
		if sum != want {
			return fmt.Errorf("transfer to %s: content differs", addr)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("transfer to %s did not finish in 30 s", addr)
	}
}
