package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath/drive"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// nullBind is a natpath Bind with no relays.
type nullBind struct{}

func (nullBind) SetRelays([]relay.Target)   {}
func (nullBind) Relays() []relay.RelayState { return nil }
func (nullBind) RelayEndpoint(netip.AddrPort, [32]byte) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("no relay")
}

// BenchmarkReconcile: one reconcile pass of an agent with N discovered
// peers, none of them answering (the scale test's fake device), with
// natpath choosing paths as under `meshspan-agent run` with kernel
// WireGuard. A tick pass changes nothing; in the others one peer's
// endpoint moves, taken by a full pass ("change") and by a change pass
// ("change-pass", as a discovery change is).
func BenchmarkReconcile(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, kind := range []string{"tick", "change", "change-pass"} {
			b.Run(strconv.Itoa(n)+"/"+kind, func(b *testing.B) {
				a, d := benchAgent(b, n)
				if r := os.Getenv("BENCH_MEMPROFILERATE"); r != "" {
					runtime.MemProfileRate, _ = strconv.Atoi(r) // newAgent turned it off
				}
				ctx := context.Background()
				a.reconcile(ctx)
				a.reconcile(ctx)
				b.ResetTimer()
				for i := range b.N {
					if kind != "tick" {
						d.affs = withAffiliate(d.affs, i%n, func(a *discovery.Affiliate) {
							a.Endpoints = []netip.AddrPort{netip.AddrPortFrom(a.Endpoints[0].Addr(), uint16(30000+i%1000))}
						})
					}
					if kind == "change-pass" {
						if full := a.pass(ctx, true); full {
							b.Fatal("a moved endpoint took a full pass")
						}
						continue
					}
					a.reconcile(ctx)
				}
			})
		}
	}
}

func benchAgent(b testing.TB, n int) (*agent, *listDisco) {
	sec, err := clusterkey.Generate()
	if err != nil {
		b.Fatal(err)
	}
	prefix := clusterkey.MeshPrefix(sec.ID)
	cfg := &config.Config{APIVersion: config.APIVersion, Node: config.Node{Name: "n0"},
		Cluster:   config.Cluster{ID: sec.ID, Secret: sec.Secret},
		Discovery: config.Discovery{Endpoints: []string{"http://127.0.0.1:1/"}}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	d := &listDisco{}
	for i := range n {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		a := prefix.Addr().As16()
		a[8], a[14], a[15] = 2, byte((i+1)>>8), byte(i+1)
		d.affs = append(d.affs, &discovery.Affiliate{ID: fmt.Sprintf("node-%04d", i), NodeName: fmt.Sprintf("node-%04d", i),
			PublicKey: k.PublicKey().String(), Address: netip.AddrFrom16(a),
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(100 + i/256), byte(i)}), 51820)}})
	}
	chooser := &drive.Chooser{Driver: drive.New(nullBind{}, natpath.Timing{Probe: cfg.Health.EndpointProbe.D(), DownAfter: cfg.Health.DownAfter.D()},
		3*relay.DefaultRegisterInterval), MTU: cfg.WireGuard.MTU}
	a, err := newAgent(Options{Config: cfg, StateDir: b.TempDir(), MemoryLimit: -1, NoHostPolicy: true, Discovery: d, Paths: chooser,
		HostAddrs:   func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil },
		MAC:         func() (net.HardwareAddr, error) { return randomMAC(), nil },
		UnderlayMTU: func([]netip.Addr) int { return 1500 }})
	if err != nil {
		b.Fatal(err)
	}
	a.dev = &lastDevice{}
	return a, d
}

// lastDevice keeps only the last configuration (the recording fake keeps
// every one, which would dominate a benchmark).
type lastDevice struct{ peers []wg.PeerConfig }

func (f *lastDevice) Name() string     { return "fake" }
func (f *lastDevice) Mode() wg.Mode    { return wg.ModeKernel }
func (f *lastDevice) ListenPort() int  { return 51820 }
func (f *lastDevice) UAPIError() error { return nil }
func (f *lastDevice) Close() error     { return nil }
func (f *lastDevice) Peers() ([]wg.PeerStats, error) {
	out := make([]wg.PeerStats, 0, len(f.peers))
	for _, p := range f.peers {
		out = append(out, wg.PeerStats{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs, Keepalive: p.Keepalive})
	}
	return out, nil
}
func (f *lastDevice) SyncPeers(want []wg.PeerConfig) error {
	f.peers = slices.Clone(want)
	return nil
}
func (f *lastDevice) UpdatePeers(set []wg.PeerConfig, remove []wgtypes.Key) error {
	f.peers = updatedPeers(f.peers, set, remove)
	return nil
}

// A pass reuses the last peer set, discovery view and status text only
// while their input is unchanged: a new affiliate slice with one endpoint
// moved shows in the next pass's candidates, and the unchanged peers keep
// theirs.
func TestReconcileCachesFollowChanges(t *testing.T) {
	a, d := benchAgent(t, 20)
	ctx := context.Background()
	a.reconcile(ctx)
	a.reconcile(ctx)
	first := a.snapshot()
	if len(first.Peers) != 20 {
		t.Fatalf("%d peers, want 20", len(first.Peers))
	}
	ep := netip.MustParseAddrPort("203.0.113.7:40000")
	d.affs = withAffiliate(d.affs, 3, func(a *discovery.Affiliate) { a.Endpoints = []netip.AddrPort{ep} })
	a.reconcile(ctx)
	second := a.snapshot()
	key := d.affs[3].PublicKey
	for i, p := range second.Peers {
		if p.PublicKey == key {
			if !slices.Equal(p.Candidates, []string{ep.String()}) {
				t.Errorf("moved peer's candidates %v, want [%s]", p.Candidates, ep)
			}
			continue
		}
		if !slices.Equal(p.Candidates, first.Peers[i].Candidates) || p.PublicKey != first.Peers[i].PublicKey {
			t.Errorf("peer %d changed from %+v to %+v", i, first.Peers[i], p)
		}
	}
	// The same slice again: nothing changes.
	a.reconcile(ctx)
	if third := a.snapshot(); !slices.EqualFunc(third.Peers, second.Peers, func(x, y *PeerStatus) bool {
		return x.PublicKey == y.PublicKey && slices.Equal(x.Candidates, y.Candidates) && slices.Equal(x.AllowedIPs, y.AllowedIPs)
	}) {
		t.Errorf("a pass over unchanged input changed the peers")
	}
}
