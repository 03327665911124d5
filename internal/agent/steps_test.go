package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

var (
	ap   = netip.MustParseAddrPort
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func testKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// listDisco is a discovery client holding fixed affiliates and recording
// what the agent publishes.
type listDisco struct {
	affs     []*discovery.Affiliate
	observed netip.Addr
	sets     int
	self     discovery.Affiliate
	peerEps  map[string][]netip.AddrPort
}

func (d *listDisco) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (d *listDisco) SetLocal(a discovery.Affiliate, o map[string][]netip.AddrPort) {
	d.sets, d.self, d.peerEps = d.sets+1, a, o
}
func (d *listDisco) Affiliates() []*discovery.Affiliate { return d.affs }
func (d *listDisco) ObservedAddress() netip.Addr        { return d.observed }
func (d *listDisco) Changes() <-chan struct{}           { return nil }

// withAffiliate is affs with its i-th affiliate replaced by a copy that f
// changed: a client's affiliates are never changed in place.
func withAffiliate(affs []*discovery.Affiliate, i int, f func(*discovery.Affiliate)) []*discovery.Affiliate {
	c := slices.Clone(affs)
	a := *c[i]
	f(&a)
	c[i] = &a
	return c
}

func TestObserveDevice(t *testing.T) {
	k := testKey(t)
	hs := time.Unix(1700000000, 0)
	v := observeDevice([]wg.PeerStats{{PublicKey: k, Endpoint: ap("192.0.2.1:51820"), LastHandshake: hs, RxBytes: 3, TxBytes: 4}})
	if got := v.obs[k]; got.Endpoint != ap("192.0.2.1:51820") || !got.LastHandshake.Equal(hs) || got.RxBytes != 3 || got.TxBytes != 4 {
		t.Errorf("observation %+v does not carry the device's statistics", got)
	}
	if v.byKey[k].RxBytes != 3 || len(v.stats) != 1 {
		t.Errorf("byKey %+v, stats %d: want the one peer", v.byKey, len(v.stats))
	}
}

func TestReadDiscovery(t *testing.T) {
	if v := new(discoveryCache).read(nil); v.traversal == nil || v.affiliates != nil || v.observedSelf.IsValid() {
		t.Errorf("no client: %+v, want nothing and a non-nil traversal map", v)
	}
	relaying, quiet := testKey(t), testKey(t)
	d := &listDisco{observed: addr("203.0.113.9"), affs: []*discovery.Affiliate{
		{ID: "a", NodeName: "n-a", PublicKey: relaying.String(), Address: addr("fd00::a"), Traversal: discovery.Traversal{RelayPort: 3478}},
		{ID: "b", NodeName: "n-b", PublicKey: quiet.String(), Address: addr("fd00::b")},
		{ID: "c", NodeName: "bad-key", PublicKey: "not a key", Traversal: discovery.Traversal{RelayPort: 1}},
	}}
	v := new(discoveryCache).read(d)
	if v.observedSelf != addr("203.0.113.9") {
		t.Errorf("observedSelf = %v", v.observedSelf)
	}
	if len(v.affiliates) != 3 || v.affiliates[0].ID != "a" || v.affiliates[1].NodeName != "n-b" || v.affiliates[0].Address != addr("fd00::a") {
		t.Errorf("affiliates = %+v; want all three in order (mesh.Build filters them)", v.affiliates)
	}
	if want := map[wgtypes.Key]discovery.Traversal{relaying: {RelayPort: 3478}}; !reflect.DeepEqual(v.traversal, want) {
		t.Errorf("traversal = %v, want only the relaying member's by key", v.traversal)
	}
}

func TestPeerSpecsTakesLiveEndpoints(t *testing.T) {
	sec, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	prefix := clusterkey.MeshPrefix(sec.ID)
	k := testKey(t)
	peerAddr := prefix.Addr().Next()
	in := peerSpecInput{
		self: testKey(t), prefix: prefix,
		static: []config.StaticPeer{{Name: "s1", PublicKey: k.String(), Address: peerAddr.String(), Endpoints: []string{"192.0.2.1:51820"}}},
		live:   map[wgtypes.Key]netip.AddrPort{k: ap("198.51.100.7:40000")},
	}
	set := peerSpecs(in)
	if len(set.Peers) != 1 {
		t.Fatalf("peers = %+v, want the static peer", set.Peers)
	}
	p := set.Peers[0]
	if p.Name != "s1" || !slices.Contains(p.AllowedIPs, netip.PrefixFrom(peerAddr, 128)) {
		t.Errorf("peer %+v: want s1 with its mesh /128", p)
	}
	if !slices.Contains(p.Endpoints, ap("192.0.2.1:51820")) || !slices.Contains(p.Endpoints, ap("198.51.100.7:40000")) {
		t.Errorf("candidates %v: want the configured endpoint and the one WireGuard saw", p.Endpoints)
	}
}

func TestPeerStatusStep(t *testing.T) {
	k := testKey(t)
	peers := []mesh.Peer{{PublicKey: k, Name: "p", Endpoints: []netip.AddrPort{ap("192.0.2.1:51820")}}}
	now := time.Unix(1700000000, 0)
	tracker := func() *mesh.Tracker {
		return mesh.NewTracker(mesh.Health{DownAfter: 8 * time.Second, EndpointProbe: 4 * time.Second}, testKey(t))
	}

	// Without a path chooser the tracker alone decides.
	out := peerStatus{tracker: tracker()}.step(peerStatusInput{now: now, peers: peers})
	if out.paths != nil || !out.traversal.IsZero() {
		t.Errorf("no chooser: paths %v, traversal %+v; want none", out.paths, out.traversal)
	}
	if v := out.verdicts[k]; v.State != mesh.StateUnknown || v.SetEndpoint != ap("192.0.2.1:51820") {
		t.Errorf("verdict %+v: want unknown with the first candidate set", v)
	}

	// A chooser that traverses hears static peers' relay ports, and what
	// it publishes comes out.
	rec := &traversalRecorder{}
	static := []config.StaticPeer{{PublicKey: k.String(), RelayPort: 3478}}
	out = peerStatus{tracker: tracker(), paths: rec}.step(peerStatusInput{
		now: now, peers: peers, remote: map[wgtypes.Key]discovery.Traversal{}, static: static,
	})
	if got := rec.relayPort(k); got != 3478 {
		t.Errorf("traverser saw relay port %d, want 3478 from the static peer", got)
	}
	if out.paths[k].Path != "direct" {
		t.Errorf("paths = %v, want the chooser's", out.paths)
	}
}

func TestWithStaticRelaysKeepsAnnounced(t *testing.T) {
	k := testKey(t)
	remote := map[wgtypes.Key]discovery.Traversal{k: {RelayPort: 4000}}
	got := withStaticRelays(remote, []config.StaticPeer{{PublicKey: k.String(), RelayPort: 3478}, {PublicKey: "bad", RelayPort: 1}})
	if len(got) != 1 || got[k].RelayPort != 4000 {
		t.Errorf("got %v: what the peer announces must win over its static config", got)
	}
}

func TestWireguardPeers(t *testing.T) {
	a, b := testKey(t), testKey(t)
	psk := testKey(t)
	peers := []mesh.Peer{
		{PublicKey: a, AllowedIPs: []netip.Prefix{pfx("fd00::a/128")}},
		{PublicKey: b, AllowedIPs: []netip.Prefix{pfx("fd00::b/128"), pfx("10.0.0.0/24")}},
	}
	verdicts := map[wgtypes.Key]mesh.Status{
		a: {SetEndpoint: ap("192.0.2.1:51820"), Keepalive: true},
		b: {SetEndpoint: ap("192.0.2.2:51820")},
	}
	in := wireguardInput{peers: peers, verdicts: verdicts, psk: psk, keepalive: 5 * time.Second}
	got := wireguardPeers(in, slog.New(slog.DiscardHandler)).want
	want := []wg.PeerConfig{
		{PublicKey: a, PresharedKey: psk, Endpoint: ap("192.0.2.1:51820"), AllowedIPs: peers[0].AllowedIPs, Keepalive: mesh.WireGuardKeepalive(5 * time.Second)},
		{PublicKey: b, PresharedKey: psk, Endpoint: ap("192.0.2.2:51820"), AllowedIPs: peers[1].AllowedIPs},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tracker's endpoints:\n got %+v\nwant %+v", got, want)
	}

	// A path chooser's endpoint wins unless it is advisory; an advisory
	// choice leaves the tracker's.
	in.paths = map[wgtypes.Key]PathChoice{
		a: {SetEndpoint: ap("[100::1]:3478"), Path: "relayed"},
		b: {SetEndpoint: ap("[100::2]:3478"), Advisory: true},
	}
	got = wireguardPeers(in, slog.New(slog.DiscardHandler)).want
	if got[0].Endpoint != ap("[100::1]:3478") || got[1].Endpoint != ap("192.0.2.2:51820") {
		t.Errorf("with paths: endpoints %v, %v; want the chooser's for a, the tracker's for b", got[0].Endpoint, got[1].Endpoint)
	}
	// A chooser that leaves a peer out unsets its endpoint: the device keeps
	// the one it has.
	in.paths = map[wgtypes.Key]PathChoice{}
	if got = wireguardPeers(in, slog.New(slog.DiscardHandler)).want; got[0].Endpoint.IsValid() {
		t.Errorf("peer without a choice got endpoint %v, want none set", got[0].Endpoint)
	}
}

// A peer turning quiet is re-created once (WireGuard's own handshake
// retries stop only then), without keepalive; a quiet peer the path
// chooser sets an endpoint for is tried, not kept quiet.
func TestWireguardPeersQuiet(t *testing.T) {
	a, b := testKey(t), testKey(t)
	peers := []mesh.Peer{{PublicKey: a}, {PublicKey: b}}
	in := wireguardInput{peers: peers, keepalive: 5 * time.Second, verdicts: map[wgtypes.Key]mesh.Status{
		a: {Keepalive: true}, b: {Keepalive: true},
	}}
	log := slog.New(slog.DiscardHandler)
	out := wireguardPeers(in, log)
	if len(out.reset) != 0 || out.quiet[a] || out.quiet[b] {
		t.Fatalf("first pass: reset %v quiet %v; want none", out.reset, out.quiet)
	}
	in.verdicts[b] = mesh.Status{Keepalive: true, SendKeepalive: true}
	if out = wireguardPeers(in, log); !out.want[1].SendKeepalive || out.want[0].SendKeepalive {
		t.Errorf("keepalive asked for b only: got a=%v b=%v", out.want[0].SendKeepalive, out.want[1].SendKeepalive)
	}
	in.quiet = out.quiet
	in.verdicts[a] = mesh.Status{Quiet: true}
	out = wireguardPeers(in, log)
	if !slices.Equal(out.reset, []wgtypes.Key{a}) || !out.quiet[a] {
		t.Fatalf("a turned quiet: reset %v quiet %v; want a reset once", out.reset, out.quiet)
	}
	if out.want[0].Keepalive != 0 {
		t.Errorf("quiet peer keeps keepalive %v", out.want[0].Keepalive)
	}
	in.quiet = out.quiet
	if out = wireguardPeers(in, log); len(out.reset) != 0 {
		t.Errorf("a still quiet: reset again %v", out.reset)
	}
	in.paths = map[wgtypes.Key]PathChoice{a: {SetEndpoint: ap("192.0.2.9:3478"), Path: "relayed"}}
	if out = wireguardPeers(in, log); out.quiet[a] || out.want[0].Keepalive == 0 || out.want[0].Endpoint != ap("192.0.2.9:3478") {
		t.Errorf("chooser's endpoint for a quiet peer: %+v quiet=%v; want tried with keepalive", out.want[0], out.quiet[a])
	}
}

func TestPeerEndpoints(t *testing.T) {
	up, down, relayed, gone := testKey(t), testKey(t), testKey(t), testKey(t)
	peers := []mesh.Peer{
		{PublicKey: up, AffiliateID: "aff-up"},
		{PublicKey: down, AffiliateID: "aff-down"},
		{PublicKey: relayed, AffiliateID: "aff-relayed"},
	}
	verdicts := map[wgtypes.Key]mesh.Status{up: {State: mesh.StateUp}, down: {State: mesh.StateDown}, relayed: {State: mesh.StateUp}}
	byKey := map[wgtypes.Key]wg.PeerStats{
		up:      {PublicKey: up, Endpoint: ap("198.51.100.1:40000")},
		down:    {PublicKey: down, Endpoint: ap("198.51.100.2:40000")},
		relayed: {PublicKey: relayed, Endpoint: ap("[100::5]:3478")},
	}
	prev := map[wgtypes.Key]netip.AddrPort{down: ap("198.51.100.20:1"), relayed: ap("198.51.100.30:1"), gone: ap("198.51.100.40:1")}
	out := peerEndpoints(endpointsInput{peers: peers, verdicts: verdicts, byKey: byKey, prev: prev})
	wantLive := map[wgtypes.Key]netip.AddrPort{up: ap("198.51.100.1:40000"), down: ap("198.51.100.20:1"), relayed: ap("198.51.100.30:1")}
	if !reflect.DeepEqual(out.live, wantLive) {
		t.Errorf("live = %v\nwant %v (up: learned; down, relayed: kept; gone: dropped)", out.live, wantLive)
	}
	if want := map[string][]netip.AddrPort{"aff-up": {ap("198.51.100.1:40000")}}; !reflect.DeepEqual(out.observed, want) {
		t.Errorf("observed = %v, want only the up peer's", out.observed)
	}
}

func TestHostPolicyMeshPrefix(t *testing.T) {
	k := testKey(t)
	in := hostPolicyInput{
		base: netpolicy.State{MTU: 1420}, iface: "meshspan0", listenPort: 51820, prefix: pfx("fd00:1::/64"),
		peers: []mesh.Peer{{PublicKey: k, AllowedIPs: []netip.Prefix{pfx("fd00:1::5/128"), pfx("fd00::/16"), pfx("10.0.0.0/8")}}},
		// A contested range inside the mesh prefix is on the link already.
		contested: []netip.Prefix{pfx("fd00:1::9/128")},
		verdicts:  map[wgtypes.Key]mesh.Status{k: {State: mesh.StateUp}},
	}
	s := hostPolicy(in)
	if s.Interface != "meshspan0" || s.ListenPort != 51820 || s.MTU != 1420 {
		t.Errorf("header %+v", s)
	}
	// A range wider than the mesh prefix is routed; one inside it is not.
	if want := []netip.Prefix{pfx("fd00::/16"), pfx("10.0.0.0/8")}; !reflect.DeepEqual(s.Routed, want) || s.Unreachable != nil {
		t.Errorf("Routed %v Unreachable %v; want %v and none", s.Routed, s.Unreachable, want)
	}
}

// failingPolicy fails every Apply with the same error.
type failingPolicy struct{ applies int }

func (p *failingPolicy) Apply(context.Context, netpolicy.State) error {
	p.applies++
	return errors.New("nft: table busy")
}
func (p *failingPolicy) Close() error { return nil }

func TestApplyPolicyLogsOnce(t *testing.T) {
	var log strings.Builder
	p := &failingPolicy{}
	a := &agent{policy: p, log: slog.New(slog.NewTextHandler(&log, nil))}
	for range 3 {
		if err := a.applyPolicy(context.Background(), netpolicy.State{}); err == nil {
			t.Fatal("applyPolicy hid the error from status")
		}
	}
	if n := strings.Count(log.String(), "table busy"); p.applies != 3 || n != 1 {
		t.Errorf("3 failing passes: %d applies, %d log lines; want 3 and 1", p.applies, n)
	}
}

func TestLocalAffiliateAndPublisher(t *testing.T) {
	id := Identity{Address: addr("fd00:1::1"), AffiliateID: "self"}
	var err error
	if id.PrivateKey, err = wgtypes.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	in := affiliateInput{
		id: id, nodeName: "n1", hostname: "h1", version: "1.2.3",
		addrs:  []netip.Addr{addr("192.0.2.10"), addr("fd00:1::1")},
		prefix: pfx("fd00:1::/64"),
		nets:   []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.2.0.0/16")}, exclude: []netip.Prefix{pfx("10.2.0.0/16")},
		endpoints: []netip.AddrPort{ap("192.0.2.10:51820")}, traversal: discovery.Traversal{RelayPort: 3478},
	}
	self := localAffiliate(in)
	if self.ID != "self" || self.NodeName != "n1" || self.Hostname != "h1" || self.OperatingSystem != "meshspan (1.2.3)" ||
		self.PublicKey != id.PublicKey().String() || self.Address != id.Address || self.Traversal.RelayPort != 3478 {
		t.Errorf("affiliate header %+v", self)
	}
	if want := []netip.Prefix{pfx("10.1.0.0/16")}; !reflect.DeepEqual(self.Networks, want) {
		t.Errorf("Networks = %v, want %v (excluded left out)", self.Networks, want)
	}
	for _, p := range self.Addresses {
		if pfx("fd00:1::/64").Contains(p) {
			t.Errorf("Addresses %v announce a mesh address", self.Addresses)
		}
	}

	d := &listDisco{}
	var pub publisher
	obs := map[string][]netip.AddrPort{"p": {ap("198.51.100.1:1")}}
	if !pub.publish(d, self, obs) || pub.publish(d, self, map[string][]netip.AddrPort{"p": {ap("198.51.100.1:1")}}) {
		t.Error("publisher: want the first call published and an equal second one not")
	}
	if !pub.publish(d, self, map[string][]netip.AddrPort{}) {
		t.Error("publisher: a change of observed endpoints was not published")
	}
	self.Endpoints = nil
	if !pub.publish(d, self, map[string][]netip.AddrPort{}) || d.sets != 3 || d.self.Endpoints != nil {
		t.Errorf("publisher: a change of the affiliate was not published (%d calls)", d.sets)
	}
}

func TestReport(t *testing.T) {
	k := testKey(t)
	hs := time.Unix(1700000000, 0)
	id := Identity{Address: addr("fd00:1::1"), AffiliateID: "self"}
	st, _ := report(reportInput{
		id: id, node: "n1", dev: newFakeDevice(), endpoints: []netip.AddrPort{ap("192.0.2.10:51820")}, discovery: true,
		observedSelf: addr("203.0.113.1"),
		peers:        []mesh.Peer{{PublicKey: k, Name: "p", Address: addr("fd00:1::2"), AllowedIPs: []netip.Prefix{pfx("fd00:1::2/128")}, Endpoints: []netip.AddrPort{ap("192.0.2.2:51820")}}},
		verdicts:     map[wgtypes.Key]mesh.Status{k: {State: mesh.StateUp, EndpointChanges: 2}},
		byKey:        map[wgtypes.Key]wg.PeerStats{k: {PublicKey: k, Endpoint: ap("192.0.2.2:51820"), LastHandshake: hs, RxBytes: 7}},
		paths:        map[wgtypes.Key]PathChoice{k: {Path: "relayed", Via: "n4", Reason: "why"}},
		now:          hs,
	})
	if st.Node != "n1" || st.Interface != "meshspan-fake" || st.Mode != "userspace" || st.ListenPort != 51820 ||
		st.ObservedAddress != "203.0.113.1" || !st.Discovery || st.Warnings == nil || !st.UpdatedAt.Equal(hs) {
		t.Errorf("status header %+v", st)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("peers %+v", st.Peers)
	}
	p := st.Peers[0]
	if p.State != "up" || p.Endpoint != "192.0.2.2:51820" || p.RxBytes != 7 || p.EndpointChanges != 2 ||
		p.Path != "relayed" || p.Via != "n4" || p.PathReason != "why" || p.LastHandshake != timeString(hs) {
		t.Errorf("peer line %+v", p)
	}
}

// The whole pass against the recording fake: the static peer is programmed
// with the cluster's PSK and its AllowedIPs, shows as up once the device
// reports a handshake, and its endpoint is then kept as a candidate.
func TestReconcileProgramsDevice(t *testing.T) {
	sec, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	peerKey := testKey(t)
	prefix := clusterkey.MeshPrefix(sec.ID)
	peerAddr := prefix.Addr().Next()
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: "n1"},
		Cluster:    config.Cluster{ID: sec.ID, Secret: sec.Secret},
		StaticPeers: []config.StaticPeer{{Name: "n2", PublicKey: peerKey.String(), Address: peerAddr.String(),
			Endpoints: []string{"192.0.2.2:51820"}, Networks: []string{"10.2.0.0/24"}}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := newAgent(Options{Config: cfg, StateDir: t.TempDir(), MemoryLimit: -1, NoHostPolicy: true,
		HostAddrs:   func() ([]netip.Addr, error) { return []netip.Addr{addr("192.0.2.1")}, nil },
		MAC:         func() (net.HardwareAddr, error) { return randomMAC(), nil },
		UnderlayMTU: func([]netip.Addr) int { return 1500 }})
	if err != nil {
		t.Fatal(err)
	}
	dev := newFakeDevice()
	a.dev = dev
	psk, err := clusterkey.PresharedKey(sec.Secret)
	if err != nil {
		t.Fatal(err)
	}

	a.reconcile(context.Background())
	got := dev.lastSync()
	if len(got) != 1 {
		t.Fatalf("programmed %+v, want the one static peer", got)
	}
	if got[0].PublicKey != peerKey || got[0].PresharedKey != psk || got[0].Endpoint != ap("192.0.2.2:51820") ||
		!reflect.DeepEqual(got[0].AllowedIPs, []netip.Prefix{pfx("10.2.0.0/24"), netip.PrefixFrom(peerAddr, 128)}) {
		t.Errorf("programmed %+v", got[0])
	}
	if s := a.snapshot(); len(s.Peers) != 1 || s.Peers[0].State != "unknown" || s.Endpoints[0] != "192.0.2.1:51820" {
		t.Errorf("status after the first pass: %+v", s)
	}

	// The peer answers from its NAT's public side.
	dev.setStats(wg.PeerStats{PublicKey: peerKey, Endpoint: ap("198.51.100.2:40000"), LastHandshake: time.Now(), RxBytes: 148})
	a.reconcile(context.Background())
	if s := a.snapshot(); s.Peers[0].State != "up" || s.Peers[0].Endpoint != "198.51.100.2:40000" {
		t.Errorf("status after a handshake: %+v", s.Peers[0])
	}
	if a.live[peerKey] != ap("198.51.100.2:40000") {
		t.Errorf("live = %v, want the endpoint WireGuard used", a.live)
	}
	a.reconcile(context.Background())
	if s := a.snapshot(); !slices.Contains(s.Peers[0].Candidates, "198.51.100.2:40000") {
		t.Errorf("candidates %v: the endpoint seen is not kept", s.Peers[0].Candidates)
	}
}
