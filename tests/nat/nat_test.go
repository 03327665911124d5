package nat

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
)

// start runs a and b towards each other (and the relays as peers), with
// r1 and r2 relaying; relays answer whoever handshakes.
func (w *world) start() {
	relays := []*node{w.r1, w.r2}
	w.run(w.a, []*node{w.b, w.r1, w.r2}, relays)
	w.run(w.b, []*node{w.a, w.r1, w.r2}, relays)
	w.passive(w.r1, []*node{w.a, w.b, w.r2})
	w.passive(w.r2, []*node{w.a, w.b, w.r1})
}

func TestPortPreservingNATGoesDirect(t *testing.T) {
	w := newWorld(t, netlab.NATPreservePorts, true)
	w.start()
	w.waitPath(20*time.Second, natpath.ModeDirect, "")
	st := w.a.statusOf(w.b)
	if st.Endpoint != w.b.endpoint() {
		t.Errorf("a reaches b at %s, want b's NAT address with the port kept: %s", st.Endpoint, w.b.endpoint())
	}
	to := echo(t, w.b)
	before := w.r1.server.Forwarded() + w.r2.server.Forwarded()
	for range 20 {
		roundTrip(t, w.a, to, marker, 5*time.Second)
	}
	if fw := w.r1.server.Forwarded() + w.r2.server.Forwarded() - before; fw != 0 {
		t.Errorf("relays forwarded %d packets while a and b were direct", fw)
	}
	t.Logf("a->b: %s (%s); b->a: %s", st.Mode, st.Reason, w.b.statusOf(w.a).Reason)
}

func TestRandomPortNATIsRelayed(t *testing.T) {
	w := newWorld(t, netlab.NATFullyRandomPorts, true)
	w.start()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "r1")
	// The side whose direct trial ends first relays because no direct
	// handshake came; the other may still be trying when the first one's
	// relayed packets arrive, and then says so. Which side is first is a
	// race (both try each candidate for a probe window); one must say why.
	st, sb := w.a.statusOf(w.b), w.b.statusOf(w.a)
	const failed, followed = "no direct handshake", "the peer reached us through a relay"
	switch {
	case !relay.IsVirtual(st.Endpoint) || !relay.IsVirtual(sb.Endpoint):
		t.Errorf("relayed with a direct endpoint: a->b %+v, b->a %+v", st, sb)
	case !strings.Contains(st.Reason, failed) && !strings.Contains(sb.Reason, failed),
		!strings.Contains(st.Reason, failed) && !strings.Contains(st.Reason, followed),
		!strings.Contains(sb.Reason, failed) && !strings.Contains(sb.Reason, followed):
		t.Errorf("neither side says the direct path failed, or one gives another reason: a->b %q, b->a %q", st.Reason, sb.Reason)
	}
	to := echo(t, w.b)
	before := w.r1.server.Forwarded()
	for range 20 {
		roundTrip(t, w.a, to, marker, 5*time.Second)
	}
	if fw := w.r1.server.Forwarded() - before; fw < 40 {
		t.Errorf("r1 forwarded %d packets for 20 round trips, want >= 40", fw)
	}
	t.Logf("a->b: %s via %s (%s)", st.Mode, st.Via, st.Reason)
}

// TestRendezvousOpensWhatLoneProbesCannot: behind NAT gateways whose UDP
// mappings expire within a second, probes that a and b send a few seconds
// apart never meet: each arrives at a NAT that has forgotten the other's
// outbound packet. The same probes sent together from an agreed moment, a
// rendezvous, open both NATs and confirm the direct path both ways.
func TestRendezvousOpensWhatLoneProbesCannot(t *testing.T) {
	w := newWorldProbing(t, netlab.NATPreservePorts, true, time.Hour) // no periodic probes
	for _, r := range w.routers {
		if out, err := r.Exec(context.Background(), "sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout=1"); err != nil {
			t.Fatalf("%s: %v: %s", r.Name(), err, out)
		}
	}
	ka, kb := w.a.key.PublicKey(), w.b.key.PublicKey()
	confirmed := func() (bool, bool) {
		_, a := w.a.bind.Direct(kb)
		_, b := w.b.bind.Direct(ka)
		return a, b
	}
	// Lone probes, 3 s apart: a's, then b's (SetCandidates probes at once).
	w.a.bind.SetCandidates(kb, []netip.AddrPort{w.b.endpoint()})
	time.Sleep(3 * time.Second)
	w.b.bind.SetCandidates(ka, []netip.AddrPort{w.a.endpoint()})
	time.Sleep(2 * time.Second)
	if a, b := confirmed(); a || b {
		t.Fatalf("lone probes confirmed a direct path (a: %v, b: %v): the NATs are not strict enough for this test", a, b)
	}
	// A rendezvous: both punch from the same moment.
	at := time.Now().Add(300 * time.Millisecond)
	w.a.bind.Punch(kb, at)
	w.b.bind.Punch(ka, at)
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, b := confirmed()
		if a && b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the rendezvous: a confirmed %v, b confirmed %v", a, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d, _ := w.a.bind.Direct(kb); d.Addr != w.b.endpoint() {
		t.Errorf("a's direct path to b is %s, want b's NAT address %s", d.Addr, w.b.endpoint())
	}
}

// TestUDPBlockedOneWayIsRelayed: behind port-preserving NATs, but the WAN
// drops UDP from a's NAT to b's. Probes and handshakes need both ways, so
// a and b settle on a relay and stay there: b's probes reach a, but no
// answer ever comes back, and nothing tempts either side off the relay.
func TestUDPBlockedOneWayIsRelayed(t *testing.T) {
	w := newWorld(t, netlab.NATPreservePorts, true)
	natb := w.routers[1]
	for _, cmd := range [][]string{
		{"add", "table", "inet", "oneway"},
		{"add", "chain", "inet", "oneway", "pre", "{ type filter hook prerouting priority -300; }"},
		{"add", "rule", "inet", "oneway", "pre", "ip", "saddr", "203.0.113.1", "meta", "l4proto", "udp", "counter", "drop"},
	} {
		if out, err := natb.Exec(context.Background(), "nft", cmd...); err != nil {
			t.Fatalf("nft %v: %v: %s", cmd, err, out)
		}
	}
	w.start()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "r1")
	to := echo(t, w.b)
	for range 10 {
		roundTrip(t, w.a, to, marker, 5*time.Second)
	}
	// Stable: still relayed after several probe intervals.
	since := w.a.statusOf(w.b).Since
	time.Sleep(3 * w.probeEvery)
	for _, st := range []natpath.Status{w.a.statusOf(w.b), w.b.statusOf(w.a)} {
		if st.Mode != natpath.ModeRelayed || st.Via != "r1" {
			t.Fatalf("after %s: %+v, want still relayed via r1", 3*w.probeEvery, st)
		}
	}
	if st := w.a.statusOf(w.b); !st.Since.Equal(since) {
		t.Errorf("a's path to b changed mode meanwhile (since %s, now since %s: %s)", since, st.Since, st.Reason)
	}
	out, err := natb.Exec(context.Background(), "nft", "list", "chain", "inet", "oneway", "pre")
	if err != nil || !strings.Contains(string(out), "packets") || strings.Contains(string(out), "packets 0 ") {
		t.Errorf("the one-way block dropped nothing, so the test proves nothing: %s %v", out, err)
	}
}

// TestKernelStyleNodeRelayed: a node as it runs with kernel WireGuard (a
// plain UDP socket and the loopback proxy) behind random-port NAT talks to
// a userspace node through a relay, both ways.
func TestKernelStyleNodeRelayed(t *testing.T) {
	w := newWorld(t, netlab.NATFullyRandomPorts, true)
	w.kernelStyle(w.b)
	w.start()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "r1")
	if ep := w.b.statusOf(w.a).Endpoint; !ep.Addr().IsLoopback() {
		t.Errorf("b reaches a at %s, want its loopback proxy", ep)
	}
	before := w.r1.server.Forwarded()
	to := echo(t, w.b)
	for range 20 {
		roundTrip(t, w.a, to, marker, 5*time.Second)
	}
	back := echo(t, w.a)
	for range 20 {
		roundTrip(t, w.b, back, marker, 5*time.Second)
	}
	if fw := w.r1.server.Forwarded() - before; fw < 80 {
		t.Errorf("r1 forwarded %d packets for 40 round trips, want >= 80", fw)
	}
}

func TestRelayKilledFailsOverThenNoPath(t *testing.T) {
	w := newWorld(t, netlab.NATFullyRandomPorts, true)
	w.start()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "r1")
	to := echo(t, w.b)
	roundTrip(t, w.a, to, marker, 5*time.Second)

	killed := time.Now()
	w.r1.kill()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "r2")
	roundTrip(t, w.a, to, marker, 10*time.Second)
	t.Logf("failover r1 -> r2 and traffic flowing after %s: %s", time.Since(killed).Round(100*time.Millisecond), w.a.statusOf(w.b).Reason)

	w.r2.kill()
	w.waitPath(30*time.Second, natpath.ModeNoPath, "")
	st := w.a.statusOf(w.b)
	if !strings.Contains(st.Reason, "no relay member is available") && !strings.Contains(st.Reason, "carried no handshake") {
		t.Errorf("no-path reason %q does not say why", st.Reason)
	}
	t.Logf("with both relays gone: %s", st.Reason)
}

func TestStrangerCannotUseRelay(t *testing.T) {
	w := newWorld(t, netlab.NATFullyRandomPorts, true)
	w.start()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "r1")
	srv := w.r1.server
	strangers, badMAC := srv.Dropped(relay.DropStranger), srv.Dropped(relay.DropBadMAC)

	var c *net.UDPConn
	if err := w.stranger.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r1 := w.r1.endpoint()
	// Data addressed to b by its relay ID, from an address that never registered.
	frame := append([]byte{relay.Marker, 3}, func() []byte { id := relay.IDOf(w.b.key.PublicKey()); return id[:] }()...)
	frame = append(frame, append([]byte{4, 0, 0, 0}, marker...)...)
	for range 10 {
		c.WriteToUDPAddrPort(frame, r1)
	}
	// A registration made with a key from another cluster.
	other, _ := relay.DeriveKey([32]byte{1})
	otherPair, err := other.Pair(w.b.key, w.r1.key.PublicKey(), relay.RoleMember) // even with b's own key
	if err != nil {
		t.Fatal(err)
	}
	reg := relay.RegisterFrame(otherPair, w.b.key.PublicKey(), uint64(time.Now().UnixNano()))
	c.WriteToUDPAddrPort(reg, r1)

	deadline := time.Now().Add(5 * time.Second)
	for srv.Dropped(relay.DropStranger)-strangers < 10 || srv.Dropped(relay.DropBadMAC)-badMAC < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stranger drops %d, bad MAC %d; want >= 10 and >= 1",
				srv.Dropped(relay.DropStranger)-strangers, srv.Dropped(relay.DropBadMAC)-badMAC)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if k, _, err := c.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Errorf("the relay answered a stranger (%d bytes)", k)
	}
	// The members' path is unharmed and b's registration still stands.
	roundTrip(t, w.a, echo(t, w.b), marker, 5*time.Second)
	if st := w.a.statusOf(w.b); st.Via != "r1" {
		t.Errorf("a->b now %+v", st)
	}
}

// TestNoPlaintextOnAnyUnderlayLink captures every underlay link (both LANs
// and the WAN) while marked traffic crosses the mesh, direct and relayed.
func TestNoPlaintextOnAnyUnderlayLink(t *testing.T) {
	for _, tc := range []struct {
		mode netlab.NATMode
		path natpath.Mode
	}{{netlab.NATPreservePorts, natpath.ModeDirect}, {netlab.NATFullyRandomPorts, natpath.ModeRelayed}} {
		t.Run(string(tc.path), func(t *testing.T) {
			w := newWorld(t, tc.mode, true)
			caps := []*capture{w.capture(w.lanA, "lanA"), w.capture(w.lanB, "lanB"), w.capture(w.wan, "wan")}
			w.start()
			w.waitPath(30*time.Second, tc.path, "")
			to := echo(t, w.b)
			for range 50 {
				roundTrip(t, w.a, to, marker, 5*time.Second)
			}
			// Positive control: the same marker sent in clear over the
			// underlay (a to r1, and b to r1: together they cross every
			// link) must show up in every capture, or the capture proves
			// nothing. Re-sent, bounded, until every capture holds it.
			ctlMarker := append([]byte("control:"), marker...)
			var senders []*net.UDPConn
			for _, n := range []*node{w.a, w.b} {
				var c *net.UDPConn
				if err := n.ns.Do(func() (err error) { c, err = net.ListenUDP("udp4", nil); return err }); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				senders = append(senders, c)
			}
			deadline := time.Now().Add(15 * time.Second)
			for _, cp := range caps {
				for time.Now().Before(deadline) {
					if cp.Has(ctlMarker) {
						break
					}
					for _, c := range senders {
						c.WriteToUDPAddrPort(ctlMarker, netip.AddrPortFrom(w.r1.lan, 9))
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			for _, cp := range caps {
				frames, st := cp.stop()
				var n, ctl int
				for _, f := range frames {
					n += bytes.Count(f, marker)
					ctl += bytes.Count(f, ctlMarker)
				}
				data := wireGuardData(udpPayloads(frames))
				t.Logf("%s: %d WireGuard data packets, marker only in the %d control packet copies; capture: %d captured, %d received by filter, %d dropped by kernel, %d not kept",
					cp.name, data, ctl, st.Captured, st.Received, st.Dropped, st.Received-st.Captured-st.Dropped)
				if n != ctl {
					t.Errorf("%s: plaintext marker captured %d times outside the control packet", cp.name, n-ctl)
				}
				if ctl == 0 {
					t.Errorf("%s: the plaintext control packet was not captured: the capture cannot see markers", cp.name)
				}
				// "Never present" means something only if the capture saw
				// the traffic: 50 round trips put at least 100 WireGuard
				// data packets on every link (-i any sees most twice). A
				// capture on a busy host may miss some, but only those
				// the kernel reports dropping, and not most of them.
				if st.Dropped > st.Received/2 {
					t.Errorf("%s: the capture dropped %d of %d packets: it proves nothing", cp.name, st.Dropped, st.Received)
				}
				if data+st.Dropped < 100 {
					t.Errorf("%s: %d WireGuard data packets captured (and %d packets dropped), want >= 100: the capture missed the mesh traffic", cp.name, data, st.Dropped)
				}
			}
		})
	}
}

// TestBareRouterPortPreservingIsRelayed: NAT routers that do not filter
// unsolicited inbound packets (netlab's bare masquerade) record the first
// punch that reaches them as an inbound flow, and their masquerade then
// remaps the local node's port towards that peer, so simultaneous
// initiation cannot meet. The relay covers it, and the status says why.
//
// Whether the punches cross (each reaching the other router before that
// router's own left) is a race of a millisecond when a and b start together;
// when they do not cross, the port is remapped on one side only, the probes
// find the remapped port, and a and b rightly go direct (seen under load:
// "a->b direct, want relayed"). The crossing is made certain: each router
// holds a flow between the two routers' WireGuard ports, as a punch that
// arrived first leaves, for as long as the test runs.
func TestBareRouterPortPreservingIsRelayed(t *testing.T) {
	w := newWorld(t, netlab.NATPreservePorts, false)
	wanA, wanB := netip.AddrPortFrom(ip("203.0.113.1"), wgPort), netip.AddrPortFrom(ip("203.0.113.2"), wgPort)
	routerFlow(t, w.routers[0], wanA, wanB)
	routerFlow(t, w.routers[1], wanB, wanA)
	w.start()
	w.waitPath(30*time.Second, natpath.ModeRelayed, "")
	roundTrip(t, w.a, echo(t, w.b), marker, 5*time.Second)
	t.Logf("a->b: %s", w.a.statusOf(w.b).Reason)
	// The premise held: each router sent its node's packets for the other
	// node from another port than the WireGuard port.
	for i, n := range []*node{w.a, w.b} {
		r, peer := w.routers[i], []netip.AddrPort{wanB, wanA}[i]
		out, err := r.Exec(context.Background(), "conntrack", "-L", "-p", "udp", "-s", n.lan.String(), "-d", peer.Addr().String())
		kept := fmt.Sprintf("src=%s dst=%s sport=51820 dport=51820", peer.Addr(), n.public)
		if err != nil || !strings.Contains(string(out), "sport=51820 dport=51820") || strings.Contains(string(out), kept) {
			t.Errorf("%s did not remap %s's port towards the other site, so the test proves nothing: %s %v", r.Name(), n.name, out, err)
		}
	}
}

// routerFlow keeps a UDP flow from the router's own address from to the
// address to open until the test ends: one packet every 500 ms.
func routerFlow(t *testing.T, r *netlab.NS, from, to netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	if err := r.Do(func() (err error) {
		c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(from), net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The first packet before returning: the flow must hold the port
	// before the nodes start, whenever this goroutine gets to run.
	if _, err := c.Write([]byte("router flow")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped; c.Close() })
	go func() {
		defer close(stopped)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			c.Write([]byte("router flow"))
		}
	}()
}
