package wg

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

type node struct {
	dev  *Device
	tun  *tuntest.ChannelTUN
	key  wgtypes.Key
	addr netip.Addr
}

// pair starts two wireguard-go devices joined by a channel Bind: real
// WireGuard crypto and our back end, no kernel.
func pair(t *testing.T) [2]node {
	t.Helper()
	binds := bindtest.NewChannelBinds()
	var n [2]node
	for i := range n {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		n[i].tun = tuntest.NewChannelTUN()
		n[i].key = k
		n[i].addr = netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
		d, err := NewUserspace(n[i].tun.TUN(), Options{Name: "wgtest", ListenPort: 0, PrivateKey: k, Bind: binds[i]})
		if err != nil {
			t.Fatal(err)
		}
		n[i].dev = d
		t.Cleanup(func() { d.Close() })
	}
	return n
}

func TestUserspacePingAndStats(t *testing.T) {
	n := pair(t)
	psk, _ := wgtypes.GenerateKey()
	for _, i := range []int{1, 0} { // responder first, or its first initiation is refused
		o := n[1-i]
		// Only device 0 keeps alive (and so initiates): simultaneous
		// initiations void each other until the 5 s retry.
		ka := 25 * time.Second
		if i == 1 {
			ka = 0
		}
		err := n[i].dev.SyncPeers([]PeerConfig{{
			PublicKey:    o.key.PublicKey(),
			PresharedKey: psk,
			// bindtest: port 1 reaches device 1, port 2 reaches device 0.
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(i+1)),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(o.addr, 32)},
			Keepalive:  ka,
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	ping := tuntest.Ping(n[1].addr, n[0].addr)
	n[0].tun.Outbound <- ping
	select {
	case got := <-n[1].tun.Inbound:
		if !bytes.Equal(got, ping) {
			t.Fatalf("received %x, want the ping %x", got, ping)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ping did not arrive through the tunnel within 5 s")
	}

	stats, err := n[0].dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 {
		t.Fatalf("device 0 has %d peers, want 1", len(stats))
	}
	s := stats[0]
	if s.PublicKey != n[1].key.PublicKey() || s.TxBytes == 0 || s.RxBytes == 0 || s.LastHandshake.IsZero() || !s.Endpoint.IsValid() {
		t.Errorf("stats %+v: want peer 1, tx and rx > 0, a handshake and an endpoint", s)
	}
	if s.Keepalive != 25*time.Second || len(s.AllowedIPs) != 1 || s.AllowedIPs[0] != netip.PrefixFrom(n[1].addr, 32) {
		t.Errorf("stats %+v: keepalive or AllowedIPs not as configured", s)
	}
}

func TestSyncPeersMinimalChanges(t *testing.T) {
	n := pair(t)
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	ep := netip.MustParseAddrPort("127.0.0.1:1")
	want := []PeerConfig{
		{PublicKey: k1.PublicKey(), Endpoint: ep, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::1/128"), netip.MustParsePrefix("10.1.0.0/16")}, Keepalive: 5 * time.Second},
		{PublicKey: k2.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/128")}, Keepalive: 5 * time.Second},
	}
	d := n[0].dev
	if err := d.SyncPeers(want); err != nil {
		t.Fatal(err)
	}
	cur, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != 2 {
		t.Fatalf("device has %d peers, want 2", len(cur))
	}
	// Same desired state, AllowedIPs in another order, no endpoint: nothing to do.
	again := []PeerConfig{want[0], want[1]}
	again[0].AllowedIPs = []netip.Prefix{want[0].AllowedIPs[1], want[0].AllowedIPs[0]}
	again[0].Endpoint = netip.AddrPort{}
	if cfg := diffPeers(cur, again); len(cfg.Peers) != 0 {
		t.Fatalf("diff of an unchanged set = %+v, want empty", cfg.Peers)
	}
	// Drop k2, change k1's AllowedIPs: one update, one removal.
	next := []PeerConfig{want[0]}
	next[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("fd00::1/128")}
	next[0].Endpoint = netip.AddrPort{}
	cfg := diffPeers(cur, next)
	if len(cfg.Peers) != 2 || !cfg.Peers[0].UpdateOnly || !cfg.Peers[0].ReplaceAllowedIPs || cfg.Peers[0].Endpoint != nil || !cfg.Peers[1].Remove {
		t.Fatalf("diff = %+v; want an update of k1 (AllowedIPs only) and removal of k2", cfg.Peers)
	}
	if err := d.SyncPeers(next); err != nil {
		t.Fatal(err)
	}
	cur, _ = d.Peers()
	if len(cur) != 1 || cur[0].Endpoint != ep || len(cur[0].AllowedIPs) != 1 {
		t.Fatalf("after sync: %+v; want k1 alone, endpoint %v kept, one AllowedIP", cur, ep)
	}
}

// UpdatePeers adds, changes and removes the peers it is given and leaves
// the others as they are (an endpoint WireGuard roamed to included).
func TestUpdatePeers(t *testing.T) {
	n := pair(t)
	var keys [3]wgtypes.Key
	for i := range keys {
		k, _ := wgtypes.GeneratePrivateKey()
		keys[i] = k.PublicKey()
	}
	ep := netip.MustParseAddrPort("127.0.0.1:1")
	d := n[0].dev
	if err := d.SyncPeers([]PeerConfig{
		{PublicKey: keys[0], Endpoint: ep, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::1/128")}, Keepalive: 5 * time.Second},
		{PublicKey: keys[1], AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/128")}},
	}); err != nil {
		t.Fatal(err)
	}
	moved := netip.MustParseAddrPort("127.0.0.1:2")
	if err := d.UpdatePeers([]PeerConfig{
		{PublicKey: keys[1], Endpoint: moved, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/128"), netip.MustParsePrefix("10.2.0.0/16")}, Keepalive: 5 * time.Second},
		{PublicKey: keys[2], AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::3/128")}},
	}, []wgtypes.Key{keys[0]}); err != nil {
		t.Fatal(err)
	}
	cur, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[wgtypes.Key]PeerStats{}
	for _, s := range cur {
		byKey[s.PublicKey] = s
	}
	if _, ok := byKey[keys[0]]; ok || len(cur) != 2 {
		t.Fatalf("peers %+v: want the first removed, two left", cur)
	}
	if s := byKey[keys[1]]; s.Endpoint != moved || len(s.AllowedIPs) != 2 || s.Keepalive != 5*time.Second {
		t.Errorf("changed peer %+v: want endpoint %v, two AllowedIPs, keepalive 5s", s, moved)
	}
	if s, ok := byKey[keys[2]]; !ok || len(s.AllowedIPs) != 1 {
		t.Errorf("new peer %+v: want it added with one AllowedIP", s)
	}
	// No endpoint given: the peer keeps the one it has.
	if err := d.UpdatePeers([]PeerConfig{{PublicKey: keys[1], AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/128")}}}, nil); err != nil {
		t.Fatal(err)
	}
	cur, _ = d.Peers()
	for _, s := range cur {
		if s.PublicKey == keys[1] && (s.Endpoint != moved || len(s.AllowedIPs) != 1 || s.Keepalive != 0) {
			t.Errorf("after an update without endpoint: %+v; want endpoint %v kept, one AllowedIP, no keepalive", s, moved)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "kernel", "userspace"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("fast"); err == nil {
		t.Error("ParseMode accepted \"fast\"")
	}
}

// SendKeepalive makes the device send one keepalive at once, even though
// its persistent keepalive timer is far from firing, and leaves the
// interval as configured.
func TestSendKeepalive(t *testing.T) {
	n := pair(t)
	const long = 60 * time.Second // neither timer fires during the test
	cfgs := [2]PeerConfig{}
	for _, i := range []int{1, 0} {
		o := n[1-i]
		cfgs[i] = PeerConfig{
			PublicKey:  o.key.PublicKey(),
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(i+1)),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(o.addr, 32)},
			Keepalive:  long,
		}
		if i == 1 {
			cfgs[i].Keepalive = 0 // device 0 initiates alone
		}
		if err := n[i].dev.SyncPeers([]PeerConfig{cfgs[i]}); err != nil {
			t.Fatal(err)
		}
	}
	stats := func(i int) PeerStats {
		t.Helper()
		s, err := n[i].dev.Peers()
		if err != nil || len(s) != 1 {
			t.Fatalf("device %d peers: %v %v", i, s, err)
		}
		return s[0]
	}
	// Wait for the session (device 0's first keepalive starts it).
	deadline := time.Now().Add(10 * time.Second)
	for stats(1).LastHandshake.IsZero() || stats(1).RxBytes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no handshake within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cfgs[1].Keepalive = long
	if err := n[1].dev.SyncPeers([]PeerConfig{cfgs[1]}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the keepalive that turning it on sends
	before := stats(0).RxBytes

	// An unchanged config sends nothing.
	if err := n[1].dev.SyncPeers([]PeerConfig{cfgs[1]}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := stats(0).RxBytes; got != before {
		t.Fatalf("device 0 received %d bytes after an unchanged sync; want none", got-before)
	}
	nudge := cfgs[1]
	nudge.SendKeepalive = true
	if err := n[1].dev.SyncPeers([]PeerConfig{nudge}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(2 * time.Second)
	for stats(0).RxBytes-before < 32 {
		if time.Now().After(deadline) {
			t.Fatalf("device 0 received %d bytes within 2 s of SendKeepalive; want a keepalive (32)", stats(0).RxBytes-before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ka := stats(1).Keepalive; ka != long {
		t.Errorf("persistent keepalive after SendKeepalive = %v, want %v", ka, long)
	}
	// In kernel mode the same two entries go over netlink, in this order.
	cur := []PeerStats{stats(1)}
	cfg := diffPeers(cur, []PeerConfig{nudge})
	if len(cfg.Peers) != 2 || *cfg.Peers[0].PersistentKeepaliveInterval != 0 || *cfg.Peers[1].PersistentKeepaliveInterval != long ||
		!cfg.Peers[0].UpdateOnly || !cfg.Peers[1].UpdateOnly || cfg.Peers[0].PublicKey != nudge.PublicKey || cfg.Peers[1].PublicKey != nudge.PublicKey {
		t.Errorf("diff for SendKeepalive = %+v; want the peer's keepalive set to 0, then to %v", cfg.Peers, long)
	}
}
