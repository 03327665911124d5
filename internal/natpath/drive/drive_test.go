package drive

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// member is an in-process node: wireguard-go on a channel TUN, a relay
// Bind on loopback, and a driver.
type member struct {
	name string
	key  wgtypes.Key
	ip   netip.Addr
	tun  *tuntest.ChannelTUN
	dev  *wg.Device
	bind *relay.Bind
	drv  *Driver
}

var fast = natpath.Timing{Probe: 300 * time.Millisecond, DirectBudget: 900 * time.Millisecond, DownAfter: 2 * time.Second, RelayHold: time.Second}

func newMember(t *testing.T, k *relay.Key, name, ip string, srv *relay.Server) *member {
	t.Helper()
	key, _ := wgtypes.GeneratePrivateKey()
	return newMemberKey(t, k, key, name, ip, srv)
}

func newMemberKey(t *testing.T, k *relay.Key, key wgtypes.Key, name, ip string, srv *relay.Server) *member {
	t.Helper()
	b, err := relay.NewBind(conn.NewDefaultBind(), relay.BindConfig{Key: k, PrivateKey: key, Server: srv,
		RegisterInterval: 200 * time.Millisecond, ProbeInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, key: key, ip: netip.MustParseAddr(ip), tun: tuntest.NewChannelTUN(), bind: b}
	// Port 0: the kernel picks; read it back from the bound socket below.
	m.dev, err = wg.NewUserspace(m.tun.TUN(), wg.Options{Name: name, PrivateKey: key, Bind: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.dev.Close() })
	m.drv = New(b, fast, time.Second)
	return m
}

// step runs one reconcile pass of m towards peers, the way the agent does.
func (m *member) step(t *testing.T, now time.Time, peers []*member, direct map[*member][]netip.AddrPort, relays []RelayMember) map[wgtypes.Key]natpath.Status {
	t.Helper()
	stats, err := m.dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	obs := map[wgtypes.Key]Observation{}
	for _, s := range stats {
		obs[s.PublicKey] = Observation{Endpoint: s.Endpoint, LastHandshake: s.LastHandshake, RxBytes: s.RxBytes}
	}
	var ps []Peer
	for _, p := range peers {
		ps = append(ps, Peer{Key: p.key.PublicKey(), Name: p.name, Direct: direct[p]})
	}
	out := m.drv.Step(now, ps, relays, obs)
	var want []wg.PeerConfig
	for _, p := range peers {
		st := out[p.key.PublicKey()]
		want = append(want, wg.PeerConfig{PublicKey: p.key.PublicKey(), Endpoint: st.SetEndpoint,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.ip, 32)}, Keepalive: time.Second})
	}
	if err := m.dev.SyncPeers(want); err != nil {
		t.Fatal(err)
	}
	return out
}

func udp4(src, dst netip.Addr, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[2], p[3], p[8], p[9] = 0x45, byte(len(p)>>8), byte(len(p)), 64, 17
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	copy(p[28:], payload)
	return p
}

func testKey(t *testing.T) *relay.Key {
	var s [32]byte
	rand.Read(s[:])
	k, err := relay.DeriveKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// run steps both members until cond holds or the deadline passes.
func run(t *testing.T, a, b *member, direct map[*member][]netip.AddrPort, relays []RelayMember, what string, cond func(sa, sb natpath.Status) bool) (natpath.Status, natpath.Status) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := time.Now()
		sa := a.step(t, now, []*member{b}, direct, relays)[b.key.PublicKey()]
		sb := b.step(t, now, []*member{a}, direct, relays)[a.key.PublicKey()]
		if testing.Verbose() {
			t.Logf("%s a=%s/%s %q b=%s/%s %q", time.Since(deadline.Add(-10*time.Second)).Round(time.Millisecond), sa.Mode, sa.Endpoint, sa.Reason, sb.Mode, sb.Endpoint, sb.Reason)
		}
		if cond(sa, sb) {
			return sa, sb
		}
		if now.After(deadline) {
			t.Fatalf("timed out waiting for %s: a %+v, b %+v", what, sa, sb)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(t *testing.T, from, to *member) {
	t.Helper()
	msg := []byte("drive-test-" + from.name)
	p := udp4(from.ip, to.ip, msg)
	deadline := time.After(5 * time.Second)
	from.tun.Outbound <- p
	for {
		select {
		case got := <-to.tun.Inbound:
			if bytes.Equal(got, p) {
				return
			}
		case <-deadline:
			t.Fatalf("%s -> %s: nothing arrived", from.name, to.name)
		}
	}
}

func TestRelayedWhenDirectFailsThenDirectWhenItWorks(t *testing.T) {
	k := testKey(t)
	// r relays on its WireGuard port; it is a member but not a's or b's peer here.
	rkey, _ := wgtypes.GeneratePrivateKey()
	srv := relay.NewServer(k, rkey)
	r := newMemberKey(t, k, rkey, "r", "10.0.0.9", srv)
	a := newMember(t, k, "a", "10.0.0.1", nil)
	b := newMember(t, k, "b", "10.0.0.2", nil)
	srv.SetMembers([][32]byte{a.key.PublicKey(), b.key.PublicKey()})
	rAddr := listenPortOf(t, r)
	relays := []RelayMember{{Key: r.key.PublicKey(), Name: "r", Addr: rAddr}}

	// Direct candidates that lead nowhere (a closed loopback port).
	dead := closedPort(t)
	direct := map[*member][]netip.AddrPort{a: {dead}, b: {dead}}
	sa, sb := run(t, a, b, direct, relays, "relayed both ways", func(sa, sb natpath.Status) bool {
		return sa.Mode == natpath.ModeRelayed && sb.Mode == natpath.ModeRelayed
	})
	if sa.Via != "r" || sb.Via != "r" {
		t.Errorf("via %q / %q, want r", sa.Via, sb.Via)
	}
	ping(t, a, b)
	ping(t, b, a)

	// Now the real addresses become known: probes find them and the pair
	// goes direct without dropping the relayed path first.
	direct = map[*member][]netip.AddrPort{a: {dead, listenPortOf(t, a)}, b: {dead, listenPortOf(t, b)}}
	sa, sb = run(t, a, b, direct, relays, "direct both ways", func(sa, sb natpath.Status) bool {
		return sa.Mode == natpath.ModeDirect && sb.Mode == natpath.ModeDirect
	})
	if relay.IsVirtual(sa.Endpoint) || relay.IsVirtual(sb.Endpoint) {
		t.Errorf("direct status with a relayed endpoint: %+v %+v", sa, sb)
	}
	ping(t, a, b)
	ping(t, b, a)
}

func TestNoPathWithoutRelay(t *testing.T) {
	k := testKey(t)
	a := newMember(t, k, "a", "10.0.0.1", nil)
	b := newMember(t, k, "b", "10.0.0.2", nil)
	dead := closedPort(t)
	direct := map[*member][]netip.AddrPort{a: {dead}, b: {dead}}
	sa, _ := run(t, a, b, direct, nil, "no path", func(sa, sb natpath.Status) bool { return sa.Mode == natpath.ModeNoPath })
	if want := "no relay member is available"; !bytes.Contains([]byte(sa.Reason), []byte(want)) {
		t.Errorf("reason %q does not say %q", sa.Reason, want)
	}
}

func closedPort(t *testing.T) netip.AddrPort {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return a
}

// listenPortOf is m's WireGuard address on loopback (the port the kernel picked).
func listenPortOf(t *testing.T, m *member) netip.AddrPort {
	t.Helper()
	if m.bind.Port() == 0 {
		t.Fatalf("%s: bind not open", m.name)
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), m.bind.Port())
}

// TestRelayGoneOnlyOnSustainedStaleness: a relay whose registration answer
// is read late (a busy host) stays usable; one that stopped answering is
// gone once its registration has been stale for a further probe window.
func TestRelayGoneOnlyOnSustainedStaleness(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	timing := natpath.Timing{Probe: 4 * time.Second, DownAfter: 9 * time.Second}
	const fresh = 30 * time.Second
	rAddr := netip.MustParseAddrPort("203.0.113.21:51820")
	peer, rk := key(t), key(t)
	relays := []RelayMember{{Key: rk, Name: "r1", Addr: rAddr}}
	peers := []Peer{{Key: peer, Name: "b"}} // no direct candidate: relayed at once
	// The peer is heard through the relay at every look.
	relayed := netip.AddrPortFrom(netip.MustParseAddr("100::1"), rAddr.Port()) // fakeBind's
	var rx int64
	usable := func(d *Driver, now time.Time) bool {
		rx += 100
		obs := map[wgtypes.Key]Observation{peer: {Endpoint: relayed, RxBytes: rx}}
		st := d.Step(now, peers, relays, obs)[peer]
		return st.Mode == natpath.ModeRelayed && st.Via == "r1"
	}

	fb := &fakeBind{registered: sec(0)}
	d := New(fb, timing, fresh)
	if !usable(d, sec(0)) {
		t.Fatal("a freshly registered relay is not used")
	}
	// Looks every second; the answer due at +30 s is read only at +33 s.
	for s := 1.0; s <= 32; s++ {
		if !usable(d, sec(s)) {
			t.Fatalf("relay dropped at +%vs while its registration answer was only late", s)
		}
	}
	fb.registered = sec(33)
	if !usable(d, sec(33)) {
		t.Fatal("relay dropped after its late registration answer")
	}

	// The relay stops answering after +33 s: gone once stale (+63 s) for a
	// further probe window on three looks, and not before.
	var gone float64
	for s := 34.0; s <= 80 && gone == 0; s++ {
		if !usable(d, sec(s)) {
			gone = s
		}
	}
	if want := 33 + (fresh + timing.Probe).Seconds(); gone != want {
		t.Errorf("relay gone at +%vs, want +%vs (fresh %s + probe %s after the last answer)", gone, want, fresh, timing.Probe)
	}
}

// pingBind is a fakeBind that probes relayed paths: the peer answers every
// probe through the relay 100 ms later while answering is true.
type pingBind struct {
	*fakeBind
	now       *time.Time
	answering bool
	pings     []time.Time
	answered  time.Time
}

func (p *pingBind) PingVia(r netip.AddrPort, peer [32]byte) {
	p.pings = append(p.pings, *p.now)
	if p.answering {
		p.answered = p.now.Add(100 * time.Millisecond)
	}
}

func (p *pingBind) Answered(r netip.AddrPort, peer [32]byte) time.Time {
	if p.answered.After(*p.now) {
		return time.Time{} // not arrived yet
	}
	return p.answered
}

// TestQuietRelayedPeerIsProbedThroughTheRelay: the peer's WireGuard falls
// silent on an idle relayed link (our keepalives keep restarting its
// keepalive timer). The driver probes it through the relay once a probe
// window, and its answers keep the relay; once they stop, the relay is
// failed over within DownAfter + Probe (+ a look) of the last answer.
func TestQuietRelayedPeerIsProbedThroughTheRelay(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	timing := natpath.Timing{Probe: 4 * time.Second, DownAfter: 9 * time.Second}
	r1 := netip.MustParseAddrPort("203.0.113.21:51820")
	r2 := netip.MustParseAddrPort("203.0.113.22:51820")
	peer := key(t)
	relays := []RelayMember{{Key: key(t), Name: "r1", Addr: r1}, {Key: key(t), Name: "r2", Addr: r2}}
	peers := []Peer{{Key: peer, Name: "b"}} // no direct candidate: relayed at once
	now := sec(0)
	fb := &pingBind{fakeBind: &fakeBind{registered: now}, now: &now, answering: true}
	d := New(fb, timing, time.Hour)
	step := func(s float64) natpath.Status {
		now = sec(s)
		// WireGuard heard the peer (a handshake) through the relay at +6 s only.
		obs := map[wgtypes.Key]Observation{peer: {Endpoint: netip.AddrPortFrom(netip.MustParseAddr("100::1"), r1.Port()), LastHandshake: sec(6), RxBytes: 148}}
		if s < 6 {
			obs = nil
		}
		return d.Step(now, peers, relays, obs)[peer]
	}
	for s := 0.0; s <= 120; s++ {
		if st := step(s); st.Mode != natpath.ModeRelayed || st.Via != "r1" {
			t.Fatalf("+%vs: %+v, want relayed via r1 while the peer answers through it", s, st)
		}
	}
	if n := len(fb.pings); n < 120/4-4 || n > 120/4+1 {
		t.Errorf("%d probes through the relay in 120 s, want one per probe window (4 s)", n)
	}
	last := fb.answered
	fb.answering = false
	var moved float64
	for s := 121.0; s <= 200 && moved == 0; s++ {
		if st := step(s); st.Via != "r1" {
			moved = s
		}
	}
	lo, hi := last.Sub(t0)+timing.DownAfter+timing.Probe, last.Sub(t0)+timing.DownAfter+timing.Probe+2*time.Second
	if got := time.Duration(moved * float64(time.Second)); got < lo || got > hi {
		t.Errorf("relay failed over at +%vs, want within [%s, %s] (the last answer at %s, DownAfter %s, probe %s)", moved, lo, hi, last.Sub(t0), timing.DownAfter, timing.Probe)
	}
}
