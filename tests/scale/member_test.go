package scale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath/drive"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// member is one node: the real agent loop (agent.Run) with its real
// discovery client, peer computation, health tracker and natpath chooser;
// only the WireGuard device (a recording fake), the host's addresses and
// natpath's relay transport (none) are replaced.
type member struct {
	i     int
	id    agent.Identity
	dev   *fakeDevice
	paths *watchPaths
	disco *publishClock
	// host is the address the host reports (HostAddrs); changing it
	// changes the endpoint the agent publishes, as a new address does.
	host atomic.Value // netip.Addr
	done chan error
}

// hostAddr is member i's underlay address in generation gen: IPv6
// documentation space, so a thousand members get distinct addresses (two
// members claiming one address would both lose it).
func hostAddr(i, gen int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(gen), byte(i >> 8), byte(i)})
}

const listenPort = 51820

func (m *member) endpoint(gen int) netip.AddrPort {
	return netip.AddrPortFrom(hostAddr(m.i, gen), listenPort)
}

// clientLog receives the discovery clients' warnings and errors (to
// stderr with SCALE_CLIENT_LOG=1, for a run that does not converge).
var clientLog = func() *slog.Logger {
	if os.Getenv("SCALE_CLIENT_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}()

// newMember prepares member i's state directory, identity and discovery
// client; start runs it.
func newMember(i int, dir, svcAddr, clusterID, secret string, all *allKnown) (*member, error) {
	m := &member{i: i, done: make(chan error, 1)}
	m.host.Store(hostAddr(i, 0))
	mac := net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
	var err error
	if m.id, err = agent.LoadIdentity(dir, clusterID, func() (net.HardwareAddr, error) { return mac, nil }); err != nil {
		return nil, err
	}
	// Each member connects from its own loopback address, as members behind
	// their own public addresses do, so the service's per-address limits
	// (rate, connections, watches) stay at their defaults.
	src := net.IPv4(127, 1+byte(i/250), byte(i%250), 1)
	c, err := discovery.NewClient(discovery.ClientOptions{
		Endpoints: []string{"http://" + svcAddr}, ClusterID: clusterID, ClusterSecret: secret,
		AffiliateID: m.id.AffiliateID, ClientVersion: "meshspan-scale", Logger: clientLog,
		Dialer: func(ctx context.Context, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return d.DialContext(ctx, "tcp", a)
		},
	})
	if err != nil {
		return nil, err
	}
	m.disco = newPublishClock(c, all.peers)
	m.dev = &fakeDevice{all: all}
	m.paths = &watchPaths{Chooser: &drive.Chooser{
		Driver: drive.New(noRelays{}, natpath.Timing{Probe: config.DefaultEndpointProbe, DownAfter: config.DefaultDownAfter}, 3*relay.DefaultRegisterInterval),
		MTU:    config.DefaultMTU,
	}, dev: m.dev}
	return m, nil
}

// memberTick is the members' reconcile tick at n members. One machine
// runs the ticks of n nodes, which in a cluster each node runs on its own
// CPU: at 1 s, a thousand members' ticks alone would take 1.6 of this
// machine's 2 cores and leave none for what is measured (discovery and
// the passes a change starts, which no tick delays). Above 200 members
// the tick is stretched so that the members tick 200 times a second in
// all; what one tick costs a node is reported per pass.
func memberTick(n int) time.Duration {
	return max(agent.DefaultTick, time.Duration(n)*agent.DefaultTick/200)
}

// start runs the member's agent, ticking every tick, until ctx ends.
func (m *member) start(ctx context.Context, dir, svcAddr, clusterID, secret string, tick time.Duration) error {
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: fmt.Sprintf("node-%04d", m.i)},
		Cluster:    config.Cluster{ID: clusterID, Secret: secret},
		Discovery:  config.Discovery{Endpoints: []string{"http://" + svcAddr}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	opts := agent.Options{
		Config: cfg, StateDir: dir, Socket: filepath.Join(dir, "agent.sock"),
		NoHostPolicy: true, MemoryLimit: -1, SharedProcess: true, Tick: tick,
		Discovery: m.disco, Paths: m.paths,
		OpenDevice:  func(wg.Options) (agent.Device, error) { return m.dev, nil },
		HostAddrs:   func() ([]netip.Addr, error) { return []netip.Addr{m.host.Load().(netip.Addr)}, nil },
		MAC:         func() (net.HardwareAddr, error) { return nil, errors.New("identity exists; MAC not needed") },
		UnderlayMTU: func([]netip.Addr) int { return 1500 },
	}
	go m.disco.forward(ctx)
	go func() { m.done <- agent.Run(ctx, opts) }()
	return nil
}

// publishClock is the agent's discovery client; it notes when the agent
// published a watched endpoint (the start of a change's propagation), and
// when the client first held another member's watched endpoint: its
// change notifications pass through forward on their way to the agent.
type publishClock struct {
	*discovery.Client
	changes chan struct{}
	mu      sync.Mutex
	watch   netip.AddrPort
	at      time.Time
	sets    int // SetLocal calls
	// the other member's endpoint watched for, and when the client had it
	heldKey string
	heldEP  netip.AddrPort
	heldAt  time.Time
	// others is how many affiliates the cluster's others are, and
	// allAt when the client first held them all
	others int
	allAt  time.Time
}

func newPublishClock(c *discovery.Client, others int) *publishClock {
	return &publishClock{Client: c, changes: make(chan struct{}, 1), others: others}
}

func (p *publishClock) Changes() <-chan struct{} { return p.changes }

// forward passes the client's change notifications on to the agent until
// ctx ends, noting when the watched endpoint arrived. The agent reads the
// same view (Affiliates is built once per change), so looking costs the
// member nothing it would not spend anyway.
func (p *publishClock) forward(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Client.Changes():
		}
		p.mu.Lock()
		key, ep, waiting, all := p.heldKey, p.heldEP, p.heldAt.IsZero(), !p.allAt.IsZero()
		p.mu.Unlock()
		if !all && len(p.Client.Affiliates()) == p.others {
			p.mu.Lock()
			p.allAt = time.Now()
			p.mu.Unlock()
		}
		if key != "" && waiting && clientHas(p.Client, key, ep) {
			p.mu.Lock()
			p.heldAt = time.Now()
			p.mu.Unlock()
		}
		select {
		case p.changes <- struct{}{}:
		default:
		}
	}
}

// expectHeld starts watching for member key's endpoint ep.
func (p *publishClock) expectHeld(key string, ep netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.heldKey, p.heldEP, p.heldAt = key, ep, time.Time{}
}

// heldAll is when the client first held every other member (zero: not
// yet).
func (p *publishClock) heldAll() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allAt
}

func (p *publishClock) held() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldAt
}

func (p *publishClock) SetLocal(self discovery.Affiliate, observed map[string][]netip.AddrPort) {
	p.mu.Lock()
	p.sets++
	if p.watch.IsValid() && p.at.IsZero() && slices.Contains(self.Endpoints, p.watch) {
		p.at = time.Now()
	}
	p.mu.Unlock()
	p.Client.SetLocal(self, observed)
}

func (p *publishClock) expect(ep netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watch, p.at = ep, time.Time{}
}

func (p *publishClock) published() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.at
}

// watchPaths is natpath's chooser as `meshspan-agent run` uses it with
// kernel WireGuard; it also sees the peer set every pass computes (each
// peer with its candidate endpoints), which the device then gets.
type watchPaths struct {
	*drive.Chooser
	dev *fakeDevice
}

func (w *watchPaths) Choose(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]natpath.Choice {
	w.dev.sawPeers(peers)
	return w.Chooser.Choose(now, peers, obs)
}

func (w *watchPaths) ChooseSome(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]natpath.Choice {
	w.dev.sawSome(peers)
	return w.Chooser.ChooseSome(now, peers, obs)
}

// noRelays is natpath's relay transport with no relay in the cluster.
type noRelays struct{}

func (noRelays) SetRelays([]relay.Target)   {}
func (noRelays) Relays() []relay.RelayState { return nil }
func (noRelays) RelayEndpoint(netip.AddrPort, [32]byte) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("no relay")
}

// fakeDevice is the WireGuard device: it keeps the last configuration and
// reports its peers as configured and silent (no peer answers: the
// endpoints are documentation addresses nothing is sent to). With the
// peers a pass decided (sawPeers for a full pass, sawSome for a change
// pass, just before the device is configured in the same pass) it records
// how many peers the device was configured for with a candidate endpoint,
// and when a watched endpoint of a watched peer was first among the
// candidates of a configuration.
type fakeDevice struct {
	mu      sync.Mutex
	peers   []wg.PeerConfig
	stats   []wg.PeerStats // of peers; nil: to be built
	passes  int
	changes int // of passes, change passes
	// from the pass's peers, applied at the configuration that follows
	pending      map[wgtypes.Key]bool // has a candidate
	pendingWatch bool
	fresh        bool                 // pending not applied yet
	full         bool                 // pending is a full pass's peer set
	candidate    map[wgtypes.Key]bool // of the configured peers
	known        int                  // peers with a candidate in the configuration
	wasKnown     int                  // known as of the last configuration applied
	at           map[wgtypes.Key]int  // peers' places in peers; nil: to be built
	watchKey     wgtypes.Key
	watchEP      netip.AddrPort
	reached      time.Time
	// all counts the members that know all others; knowsAllAt is when
	// this one last came to (zero while it does not).
	all        *allKnown
	knowsAllAt time.Time
}

// allKnown counts the members whose devices are configured for every
// other member. The devices keep it as they are configured, so the
// harness reads one number instead of locking a thousand devices: at
// N = 1,000 such a sweep, each lock waiting behind thousands of runnable
// goroutines, took up to 20 s and was counted as convergence time.
type allKnown struct {
	peers    int // each member's: n-1
	complete atomic.Int64
}

func (d *fakeDevice) Name() string     { return "scale0" }
func (d *fakeDevice) Mode() wg.Mode    { return wg.ModeKernel }
func (d *fakeDevice) ListenPort() int  { return listenPort }
func (d *fakeDevice) UAPIError() error { return nil }
func (d *fakeDevice) Close() error     { return nil }

// Peers returns the statistics built after the last configuration that
// changed something, the same slice until the next (its reader only
// reads it). A kernel device builds them anew on every read; here that
// would be the harness's own cost: a thousand converging members probe
// their devices four times a second (see agent's convergeTick), and at a
// thousand peers each that was 600 MB/s of garbage in this one process.
func (d *fakeDevice) Peers() ([]wg.PeerStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stats == nil {
		d.stats = make([]wg.PeerStats, 0, len(d.peers))
		for _, p := range d.peers {
			d.stats = append(d.stats, wg.PeerStats{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs, Keepalive: p.Keepalive})
		}
	}
	return d.stats, nil
}

func (d *fakeDevice) SyncPeers(want []wg.PeerConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.EqualFunc(d.peers, want, samePeerConfig) {
		d.peers = append(d.peers[:0], want...) // SyncPeers keeps none of want (agent.Device)
		d.stats, d.at = nil, nil
	}
	if d.fresh && d.full {
		d.candidate, d.pending = d.pending, d.candidate
		d.known = 0
		for _, c := range d.candidate {
			if c {
				d.known++
			}
		}
	}
	d.applied()
	return nil
}

// UpdatePeers is a change pass's configuration: removals first, then the
// peers of set replaced or added. (A full pass removes the peers it resets
// with it before its SyncPeers.) Its work is the change's, not the
// device's size: the harness's own cost is not what is measured.
func (d *fakeDevice) UpdatePeers(set []wg.PeerConfig, remove []wgtypes.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(remove) > 0 {
		gone := make(map[wgtypes.Key]bool, len(remove))
		for _, k := range remove {
			gone[k] = true
			d.setCandidate(k, false, false)
		}
		d.peers = slices.DeleteFunc(d.peers, func(pc wg.PeerConfig) bool { return gone[pc.PublicKey] })
		d.at = nil
	}
	if d.at == nil {
		d.at = make(map[wgtypes.Key]int, len(d.peers)+len(set))
		for i, pc := range d.peers {
			d.at[pc.PublicKey] = i
		}
	}
	for _, w := range set {
		if i, ok := d.at[w.PublicKey]; ok {
			if !w.Endpoint.IsValid() {
				w.Endpoint = d.peers[i].Endpoint
			}
			d.peers[i] = w
		} else {
			d.at[w.PublicKey] = len(d.peers)
			d.peers = append(d.peers, w)
		}
	}
	d.stats = nil
	if !d.full {
		if d.fresh {
			for k, c := range d.pending {
				d.setCandidate(k, c, true)
			}
		}
		d.applied()
	}
	return nil
}

// setCandidate records whether k is configured with a candidate (present:
// configured at all), keeping known.
func (d *fakeDevice) setCandidate(k wgtypes.Key, c, present bool) {
	if d.candidate == nil {
		d.candidate = map[wgtypes.Key]bool{}
	}
	if d.candidate[k] {
		d.known--
	}
	if !present {
		delete(d.candidate, k)
		return
	}
	d.candidate[k] = c
	if c {
		d.known++
	}
}

// applied takes what a configuration just made known.
func (d *fakeDevice) applied() {
	d.fresh = false
	if d.all != nil && (d.wasKnown == d.all.peers) != (d.known == d.all.peers) {
		if d.known == d.all.peers {
			d.knowsAllAt = time.Now()
			d.all.complete.Add(1)
		} else {
			d.knowsAllAt = time.Time{}
			d.all.complete.Add(-1)
		}
	}
	d.wasKnown = d.known
	if d.pendingWatch && d.reached.IsZero() {
		d.reached = time.Now()
	}
}

func samePeerConfig(a, b wg.PeerConfig) bool {
	return a.PublicKey == b.PublicKey && a.PresharedKey == b.PresharedKey && a.Endpoint == b.Endpoint &&
		a.Keepalive == b.Keepalive && a.SendKeepalive == b.SendKeepalive && slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

// sawPeers takes a full pass's peer set; sawSome a change pass's changed
// peers.
func (d *fakeDevice) sawPeers(peers []mesh.Peer) { d.saw(peers, true) }
func (d *fakeDevice) sawSome(peers []mesh.Peer)  { d.saw(peers, false) }

func (d *fakeDevice) saw(peers []mesh.Peer, full bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.passes++
	if !full {
		d.changes++
	}
	d.full = full
	if d.pending == nil {
		d.pending = map[wgtypes.Key]bool{}
	}
	clear(d.pending)
	d.pendingWatch, d.fresh = false, true
	for i := range peers {
		p := &peers[i]
		d.pending[p.PublicKey] = len(p.Endpoints) > 0
		if d.watchEP.IsValid() && p.PublicKey == d.watchKey && slices.Contains(p.Endpoints, d.watchEP) {
			d.pendingWatch = true
		}
	}
}

func (d *fakeDevice) expect(k wgtypes.Key, ep netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.watchKey, d.watchEP, d.reached, d.pendingWatch = k, ep, time.Time{}, false
}

func (d *fakeDevice) reachedAt() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reached
}

func (d *fakeDevice) knownPeers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.known
}

// knowsAll is when the device was last configured for every other member
// (zero while it is not).
func (d *fakeDevice) knowsAll() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.knowsAllAt
}

func (d *fakeDevice) passCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passes
}

// changePassCount is how many of passCount were change passes.
func (d *fakeDevice) changePassCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changes
}

func (p *publishClock) publishes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sets
}
