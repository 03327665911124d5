// Package nat tests NAT traversal in network namespaces: nodes behind
// nftables NAT routers (internal/netlab) run wireguard-go on real TUN
// devices with the relay Bind, and natpath (through natpath/drive) picks
// direct or relayed paths exactly as the agent does. Needs root.
package nat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath/drive"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

const wgPort = 51820

// marker is sent through the mesh; it must never appear on an underlay link.
var marker = []byte("MESHSPAN-NAT-PLAINTEXT-MARKER-5d1c")

var meshPrefix = netip.MustParsePrefix("fdc0:ffee:4e41::/64")

// timing is the agent's defaults scaled down so the suite runs in seconds.
var timing = natpath.Timing{Probe: time.Second, DirectBudget: 3 * time.Second, DownAfter: 3 * time.Second, RelayHold: 5 * time.Second}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// node is one mesh member running in its own namespace.
type node struct {
	name   string
	ns     *netlab.NS
	key    wgtypes.Key
	mesh   netip.Addr
	lan    netip.Addr // underlay address on its own link
	public netip.Addr // what discovery would observe (its NAT's WAN address, or lan)
	bind   *relay.Bind
	server *relay.Server // relays on its WireGuard port
	dev    *wg.Device
	// proxy, on kernel-style nodes (kernelStyle), carries relayed peers
	// for a device on a plain UDP socket; bind is nil there.
	proxy *relay.Proxy

	mu     sync.Mutex
	status map[wgtypes.Key]natpath.Status
	// history records path changes and stalls of the step loop, for
	// failure messages: on a busy host they tell what happened when.
	w        *world
	history  []string
	lastStep time.Time
	stop     context.CancelFunc
	done     chan struct{}
	closed   bool
}

// world is a lab: two NATed sites, a WAN with two relays and a stranger.
type world struct {
	t        testing.TB
	lab      *netlab.Lab
	lanA     *netlab.Switch
	lanB     *netlab.Switch
	wan      *netlab.Switch
	a, b     *node
	r1, r2   *node
	stranger *netlab.NS
	routers  []*netlab.NS
	key      *relay.Key
	psk      wgtypes.Key
	suffix   string
	secret   [32]byte
	// probeEvery is the Binds' ProbeInterval.
	probeEvery time.Duration
	// relayedAt is when waitPath last saw a and b turn relayed.
	relayedAt time.Time
}

// relayProcess runs a standalone relay (this test binary, see TestMain) in
// ns on port: a relay on another machine, with its own scheduler. a and b
// may register; it returns where and with which key.
func (w *world) relayProcess(ns *netlab.NS, addr netip.Addr, port uint16, mode string) (relay.Target, *netlab.Proc) {
	w.t.Helper()
	key, _ := wgtypes.GeneratePrivateKey()
	pa, pb := w.a.key.PublicKey(), w.b.key.PublicKey()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("NAT_RELAY_PORT=%d", port), "NAT_RELAY_SECRET="+hex.EncodeToString(w.secret[:]),
		"NAT_RELAY_MODE="+mode, "NAT_RELAY_KEY="+hex.EncodeToString(key[:]),
		"NAT_RELAY_MEMBERS="+hex.EncodeToString(pa[:])+","+hex.EncodeToString(pb[:]))
	p, err := ns.Start(cmd)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { p.Stop(3 * time.Second) })
	if err := e2e.Poll(10*time.Second, 20*time.Millisecond, func() (bool, string) {
		return bytes.Contains(p.Output(), []byte("relay ready")), string(p.Output())
	}); err != nil {
		w.t.Fatalf("relay process did not start: %v", err)
	}
	return relay.Target{Addr: netip.AddrPortFrom(addr, port), Key: key.PublicKey()}, p
}

// cpuTime is the user+system CPU time a process has used.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime, stime
	// are the 12th and 13th after ")".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var u, s int64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

// newWorld builds the lab. gateway adds a stateful input filter to both NAT
// routers, as real NAT gateways have (see gatewayFirewall).
func newWorld(t testing.TB, mode netlab.NATMode, gateway bool) *world {
	t.Helper()
	return newWorldProbing(t, mode, gateway, 2*time.Second)
}

// newWorldProbing is newWorld with the nodes' Binds probing direct
// candidates every probeEvery.
func newWorldProbing(t testing.TB, mode netlab.NATMode, gateway bool, probeEvery time.Duration) *world {
	t.Helper()
	lab := netlab.NewT(t)
	w := &world{t: t, lab: lab, probeEvery: probeEvery}
	var secret [32]byte
	rand.Read(secret[:])
	var err error
	if w.key, err = relay.DeriveKey(secret); err != nil {
		t.Fatal(err)
	}
	w.psk = wgtypes.Key(secret)
	w.secret = secret
	var sfx [2]byte
	rand.Read(sfx[:])
	w.suffix = hex.EncodeToString(sfx[:])

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	w.lanA, err = lab.Switch("lana")
	must(err)
	w.lanB, err = lab.Switch("lanb")
	must(err)
	w.wan, err = lab.Switch("wan")
	must(err)
	ra, err := lab.NATRouter("nata", w.lanA, w.wan, pfx("192.0.2.1/24"), pfx("203.0.113.1/24"), mode)
	must(err)
	rb, err := lab.NATRouter("natb", w.lanB, w.wan, pfx("198.51.100.1/24"), pfx("203.0.113.2/24"), mode)
	must(err)
	w.routers = []*netlab.NS{ra, rb}
	if gateway {
		must(gatewayFirewall(ra))
		must(gatewayFirewall(rb))
	}

	w.a = w.host("a", w.lanA, "192.0.2.10", "192.0.2.1", "203.0.113.1", false)
	w.b = w.host("b", w.lanB, "198.51.100.10", "198.51.100.1", "203.0.113.2", false)
	w.r1 = w.host("r1", w.wan, "203.0.113.21", "", "203.0.113.21", true)
	w.r2 = w.host("r2", w.wan, "203.0.113.22", "", "203.0.113.22", true)
	for _, r := range []*node{w.r1, w.r2} { // as the agent does: its peers may register
		r.server.SetMembers([][32]byte{w.a.key.PublicKey(), w.b.key.PublicKey(), w.r1.key.PublicKey(), w.r2.key.PublicKey()})
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("path history:\n%s\n%s\n%s", w.a.History(), w.b.History(), w.relayCounts())
		}
	})
	w.stranger, err = lab.Host("strgr")
	must(err)
	must(w.wan.Attach(w.stranger, "eth0", pfx("203.0.113.66/24")))
	return w
}

func (w *world) host(name string, sw *netlab.Switch, addr, gw, public string, relaying bool) *node {
	t := w.t
	t.Helper()
	ns, err := w.lab.Host(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(ns, "eth0", netip.PrefixFrom(ip(addr), 24)); err != nil {
		t.Fatal(err)
	}
	if gw != "" {
		if err := ns.DefaultRoute(ip(gw)); err != nil {
			t.Fatal(err)
		}
	}
	key, _ := wgtypes.GeneratePrivateKey()
	var srv *relay.Server
	if relaying {
		srv = relay.NewServer(w.key, key)
	}
	n := &node{w: w, name: name, ns: ns, key: key, lan: ip(addr), public: ip(public), server: srv, status: map[wgtypes.Key]natpath.Status{}}
	n.mesh = meshPrefix.Addr().Next()
	for range len(name) + int(name[len(name)-1]) {
		n.mesh = n.mesh.Next() // distinct per name, deterministic
	}
	n.bind, err = relay.NewBind(conn.NewDefaultBind(), relay.BindConfig{Key: w.key, PrivateKey: key, Server: srv,
		RegisterInterval: time.Second, ProbeInterval: w.probeEvery})
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() (err error) {
		n.dev, err = wg.Open(wg.Options{Name: "ms" + w.suffix + name, Mode: wg.ModeUserspace, MTU: 1420, ListenPort: wgPort,
			PrivateKey: key, Address: netip.PrefixFrom(n.mesh, 64), Bind: n.bind, Logger: slog.New(handshakeLog{n})})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.kill() })
	return n
}

// kill stops the node: its device, sockets and driver go away.
func (n *node) kill() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	stop := n.stop
	n.mu.Unlock()
	if stop != nil {
		stop()
		<-n.done
	}
	_ = n.ns.Do(func() error { return n.dev.Close() })
}

func (n *node) endpoint() netip.AddrPort { return netip.AddrPortFrom(n.public, wgPort) }

// candidates of peer p as this node would learn them from discovery: the
// advertised LAN address, the discovery-observed public address paired
// with the listen port, and the endpoints relays observed for it.
func candidates(p *node) []netip.AddrPort {
	out := []netip.AddrPort{netip.AddrPortFrom(p.lan, wgPort)}
	if p.public != p.lan {
		out = append(out, p.endpoint())
	}
	if p.bind == nil {
		return out // a proxy's uplink mapping is not the WireGuard socket's
	}
	for _, r := range p.bind.Relays() {
		if r.Observed.IsValid() && !containsAP(out, r.Observed) {
			out = append(out, r.Observed)
		}
	}
	return out
}

// pathBind is what n's driver works with: the relay Bind, or the proxy.
func (n *node) pathBind() drive.Bind {
	if n.proxy != nil {
		return nsProxy{n.ns, n.proxy}
	}
	return n.bind
}

// kernelStyle turns n into a node as it runs with kernel WireGuard: the
// device on a plain UDP socket (what the kernel module has), relayed peers
// reached through a relay.Proxy on loopback. wireguard-go with the standard
// Bind stands in for the module, which this kernel lacks: both only know
// endpoints and send to them.
func (w *world) kernelStyle(n *node) {
	w.t.Helper()
	if err := n.ns.Do(func() error { return n.dev.Close() }); err != nil {
		w.t.Fatal(err)
	}
	n.bind = nil
	err := n.ns.Do(func() (err error) {
		n.dev, err = wg.Open(wg.Options{Name: "ms" + w.suffix + n.name, Mode: wg.ModeUserspace, MTU: 1420, ListenPort: wgPort,
			PrivateKey: n.key, Address: netip.PrefixFrom(n.mesh, 64), Bind: conn.NewDefaultBind()})
		if err != nil {
			return err
		}
		n.proxy, err = relay.NewProxy(w.key, n.key, netip.AddrPortFrom(ip("127.0.0.1"), wgPort), ":0", time.Second)
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { n.proxy.Close() })
}

// proxySockets opens n's proxy sockets for every peer through every relay
// inside n's namespace before anything is relayed. The proxy used to open
// the socket for a peer whose relayed packet arrived first on its own
// goroutine, which in this test process runs outside n's namespace: the
// socket landed in the host's, where n's device never reached it, and the
// path via that relay stayed dead (a's relayed handshakes reached b's proxy
// before b's driver had asked for the socket). It now delivers only to
// sockets asked for; asking up front lets the first relayed packets count.
func (w *world) proxySockets(n *node, peers, relays []*node) {
	w.t.Helper()
	var targets []relay.Target
	for _, r := range relays {
		targets = append(targets, relay.Target{Addr: r.endpoint(), Key: r.key.PublicKey()})
	}
	n.proxy.SetRelays(targets)
	pb := n.pathBind()
	for _, r := range targets {
		for _, p := range peers {
			if _, err := pb.RelayEndpoint(r.Addr, p.key.PublicKey()); err != nil {
				w.t.Fatal(err)
			}
		}
	}
}

// nsProxy opens the proxy's per-peer loopback sockets inside the node's
// namespace: the agent runs wholly in one, the test process does not.
type nsProxy struct {
	ns *netlab.NS
	*relay.Proxy
}

func (p nsProxy) RelayEndpoint(r netip.AddrPort, peer [32]byte) (ep netip.AddrPort, err error) {
	err = p.ns.Do(func() (err error) {
		ep, err = p.Proxy.RelayEndpoint(r, peer)
		return err
	})
	return ep, err
}

func containsAP(l []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range l {
		if x == a {
			return true
		}
	}
	return false
}

// run starts n's reconcile loop towards peers (as the agent would) using
// relays; public nodes configure NATed peers without an endpoint and wait.
func (w *world) run(n *node, peers []*node, relays []*node) {
	if n.proxy != nil {
		w.proxySockets(n, peers, relays)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.mu.Lock()
	n.stop, n.done = cancel, make(chan struct{})
	n.mu.Unlock()
	drv := drive.New(n.pathBind(), timing, 3*time.Second)
	var members []drive.RelayMember
	for _, r := range relays {
		members = append(members, drive.RelayMember{Key: r.key.PublicKey(), Name: r.name, Addr: r.endpoint()})
	}
	go func() {
		defer close(n.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			n.step(w, drv, peers, members)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (n *node) step(w *world, drv *drive.Driver, peers []*node, members []drive.RelayMember) {
	// The time of a look is taken before the device is read, as the agent
	// does: what the device shows is then at least as fresh as now.
	now := time.Now()
	stats, err := n.dev.Peers()
	if err != nil {
		return
	}
	obs := map[wgtypes.Key]drive.Observation{}
	for _, s := range stats {
		obs[s.PublicKey] = drive.Observation{Endpoint: s.Endpoint, LastHandshake: s.LastHandshake, RxBytes: s.RxBytes}
	}
	var ps []drive.Peer
	for _, p := range peers {
		ps = append(ps, drive.Peer{Key: p.key.PublicKey(), Name: p.name, Direct: candidates(p)})
	}
	out := drv.Step(now, ps, members, obs)
	var want []wg.PeerConfig
	for _, p := range peers {
		st := out[p.key.PublicKey()]
		want = append(want, wg.PeerConfig{PublicKey: p.key.PublicKey(), PresharedKey: w.psk, Endpoint: st.SetEndpoint,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.mesh, 128)}, Keepalive: time.Second})
	}
	_ = n.dev.SyncPeers(want)
	n.mu.Lock()
	if gap := now.Sub(n.lastStep); !n.lastStep.IsZero() && gap > time.Second {
		n.note(now, fmt.Sprintf("step loop stalled %s", gap.Round(10*time.Millisecond)))
	}
	n.lastStep = now
	for _, p := range peers {
		st, prev := out[p.key.PublicKey()], n.status[p.key.PublicKey()]
		if st.Mode != prev.Mode || st.Via != prev.Via || st.SetEndpoint.IsValid() {
			n.note(now, fmt.Sprintf("->%s: %s via %q set %v (%s)", p.name, st.Mode, st.Via, st.SetEndpoint, st.Reason))
		}
	}
	n.status = out
	n.mu.Unlock()
}

// note appends to the history, bounded; n.mu is held.
func (n *node) note(now time.Time, what string) {
	if len(n.history) >= 400 {
		n.history = n.history[200:]
	}
	n.history = append(n.history, now.Format("15:04:05.000")+" "+what)
}

// History is n's path changes, stalls and WireGuard handshake events, one
// a line; handshake lines name peers as wireguard-go does, hence the legend.
func (n *node) History() string {
	var legend []string
	for _, p := range []*node{n.w.a, n.w.b, n.w.r1, n.w.r2} {
		if p != nil && p != n {
			k := p.key.PublicKey().String()
			legend = append(legend, fmt.Sprintf("peer(%s…%s)=%s", k[:4], k[39:43], p.name))
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.name + " (" + strings.Join(legend, " ") + "):\n  " + strings.Join(n.history, "\n  ")
}

// relayCounts says what each relay forwarded and dropped, and what a's and
// b's devices show of each other, for failure messages.
func (w *world) relayCounts() string {
	var out []string
	for _, r := range []*node{w.r1, w.r2} {
		line := fmt.Sprintf("%s forwarded %d", r.name, r.server.Forwarded())
		for _, why := range []string{relay.DropStranger, relay.DropUnknownPeer, relay.DropReplay, relay.DropAddrInUse, relay.DropIDConflict, relay.DropBadMAC, relay.DropNotMember} {
			if d := r.server.Dropped(why); d > 0 {
				line += fmt.Sprintf(", dropped %d %s", d, why)
			}
		}
		out = append(out, line)
	}
	for _, n := range []*node{w.a, w.b} {
		stats, _ := n.dev.Peers()
		for _, s := range stats {
			for _, p := range []*node{w.a, w.b} {
				if p != n && s.PublicKey == p.key.PublicKey() {
					out = append(out, fmt.Sprintf("%s's device for %s: endpoint %s, last handshake %s, rx %d, tx %d",
						n.name, p.name, s.Endpoint, s.LastHandshake.Format("15:04:05.000"), s.RxBytes, s.TxBytes))
				}
			}
		}
	}
	return strings.Join(out, "\n")
}

// handshakeLog records wireguard-go's handshake events in a node's history:
// with the path changes they tell whether a relay carried nothing or the
// handshakes through it failed (two initiations crossing each other).
type handshakeLog struct{ n *node }

func (h handshakeLog) Enabled(context.Context, slog.Level) bool { return true }
func (h handshakeLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h handshakeLog) WithGroup(string) slog.Handler            { return h }

func (h handshakeLog) Handle(_ context.Context, r slog.Record) error {
	keepalive := strings.Contains(r.Message, "keepalive")
	if !keepalive && !strings.Contains(r.Message, "andshake") && !strings.Contains(r.Message, "invalid") || strings.HasPrefix(r.Message, "Routine:") {
		return nil
	}
	if keepalive { // only between a and b: the relays' are noise here
		other := h.n.w.a
		if other == h.n {
			other = h.n.w.b
		}
		if other == nil || h.n != h.n.w.a && h.n != h.n.w.b {
			return nil
		}
		k := other.key.PublicKey().String()
		if !strings.Contains(r.Message, k[:4]+"…"+k[39:43]) {
			return nil
		}
	}
	h.n.mu.Lock()
	h.n.note(r.Time, "wg: "+r.Message)
	h.n.mu.Unlock()
	return nil
}

// passive configures peers on a public node that does not chase NATed
// endpoints: it answers whoever handshakes (WireGuard roams to them).
func (w *world) passive(n *node, peers []*node) {
	var want []wg.PeerConfig
	for _, p := range peers {
		want = append(want, wg.PeerConfig{PublicKey: p.key.PublicKey(), PresharedKey: w.psk,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.mesh, 128)}})
	}
	if err := n.dev.SyncPeers(want); err != nil {
		w.t.Fatal(err)
	}
}

func (n *node) statusOf(p *node) natpath.Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status[p.key.PublicKey()]
}

// waitPath waits until a and b each see the other in mode (and via, if set).
func (w *world) waitPath(d time.Duration, mode natpath.Mode, via string) {
	w.t.Helper()
	var sa, sb natpath.Status
	if err := e2e.Poll(d, 50*time.Millisecond, func() (bool, string) {
		sa, sb = w.a.statusOf(w.b), w.b.statusOf(w.a)
		return sa.Mode == mode && sb.Mode == mode && (via == "" || sa.Via == via && sb.Via == via), ""
	}); err != nil {
		for _, r := range w.routers {
			out, _ := r.Exec(context.Background(), "conntrack", "-L", "-p", "udp")
			w.t.Logf("conntrack on %s:\n%s", r.Name(), out)
		}
		w.t.Fatalf("after %s: a->b %s via %q (%s), b->a %s via %q (%s); want %s via %q\n%s\n%s",
			d, sa.Mode, sa.Via, sa.Reason, sb.Mode, sb.Via, sb.Reason, mode, via, w.a.History(), w.b.History())
	}
	if mode == natpath.ModeRelayed {
		w.relayedAt = time.Now()
	}
}

// echo runs a UDP echo server on n's mesh address; returns its address.
func echo(t testing.TB, n *node) netip.AddrPort {
	t.Helper()
	var c *net.UDPConn
	if err := n.ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: n.mesh.AsSlice(), Port: 7007})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
	return netip.AddrPortFrom(n.mesh, 7007)
}

// roundTrip sends payload from n to the echo server at to through the mesh
// and returns the round-trip time. Retries within d, since the first
// packets may wait for a handshake.
func roundTrip(t testing.TB, n *node, to netip.AddrPort, payload []byte, d time.Duration) time.Duration {
	t.Helper()
	var c *net.UDPConn
	if err := n.ns.Do(func() (err error) {
		c, err = net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	start := time.Now()
	deadline := start.Add(d)
	// Relayed status means the relay was chosen, not that a handshake went
	// through it yet: without a session, WireGuard resends an unanswered
	// handshake (the last one went to a direct candidate) only after
	// REKEY_TIMEOUT. Both ends chose the relay at the same moment, so their
	// resends are due together, and two initiations that cross can cancel
	// each other (each end takes the other's and drops its own state; seen
	// in the handshake log under load): the next resend, REKEY_TIMEOUT and up to
	// 1/3 s of jitter later, completes it. Right after a relay was chosen,
	// d counts from then.
	if rel := n.w.relayedAt.Add(2*natpath.HandshakeRetry + time.Second + d); rel.After(deadline) {
		deadline = rel
	}
	for time.Now().Before(deadline) {
		sent := time.Now()
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		k, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:k], payload) {
			return time.Since(sent)
		}
	}
	t.Fatalf("%s -> %s: no echo within %s (from %s)\n%s\n%s", n.name, to, deadline.Sub(start).Round(time.Millisecond), start.Format("15:04:05.000"), n.w.a.History(), n.w.b.History())
	return 0
}

// capture records the UDP on every port of a switch (all interfaces of
// its namespace: the bridge device itself does not see frames forwarded
// between ports).
type capture struct {
	name string
	*e2e.Capture
}

func (w *world) capture(sw *netlab.Switch, name string) *capture {
	w.t.Helper()
	return &capture{name: name, Capture: e2e.StartCapture(w.t, sw.NS(), "", e2e.UDP)}
}

// stop ends the capture and returns the frames captured and the kernel's
// count of what it received and dropped.
func (c *capture) stop() ([][]byte, e2e.CaptureStats) {
	frames := c.Stop()
	return frames, c.Stats()
}

// throughput sends size bytes over TCP from n to p through the mesh and
// returns bits per second.
func throughput(t testing.TB, n, p *node, size int) float64 {
	t.Helper()
	var l net.Listener
	if err := p.ns.Do(func() (err error) {
		l, err = net.Listen("tcp6", netip.AddrPortFrom(p.mesh, 5201).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	var c net.Conn
	if err := n.ns.Do(func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp6", netip.AddrPortFrom(p.mesh, 5201).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	start := time.Now()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("throughput %s -> %s: %v", n.name, p.name, err)
		}
	}
	c.Close()
	k := <-got
	el := time.Since(start)
	if k < int64(size) {
		t.Fatalf("throughput: received %d of %d bytes", k, size)
	}
	return float64(k*8) / el.Seconds()
}

func (n *node) String() string { return fmt.Sprintf("%s(%s)", n.name, n.lan) }
