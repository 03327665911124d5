// Package agent is the meshspan node agent as a library: Run turns a
// machine config into a live WireGuard full mesh and keeps it matching the
// config, the discovered affiliates and the host's addresses. The cobra
// commands in agent/ only parse flags and call into this package.
//
// Each reconcile pass (on a discovery change and on a short tick) re-reads
// every input, computes the desired state with internal/mesh, and makes the
// WireGuard device (internal/wg) and host policy (internal/netpolicy) match
// it: level-triggered, so a missed event costs at most one tick. The pass
// is a chain of small steps, one file each, as Talos's KubeSpan
// controllers (see reconcile.go); they program the device through the
// Device interface, so they run without a kernel in tests.
//
// Run also tunes process-wide runtime settings (a soft memory limit, a
// tighter GC target while the mesh is idle): run one agent per process
// outside tests.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/fwmark"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// Defaults for Options.
const (
	DefaultStateDir = "/var/lib/meshspan"
	DefaultSocket   = "/run/meshspan/agent.sock"
	// DefaultTick is the reconcile period without events; it bounds how
	// late a down peer or an address change is noticed.
	DefaultTick = time.Second
	// convergeTick replaces it while some peer's state is still unknown
	// within convergeFor of a change to the peer set, so that a finished
	// handshake shows as up within a fraction of a second (a peer that
	// stays unknown does not keep the agent busy). Such a tick only reads
	// the device's peers; a pass follows when a peer completed a handshake
	// (handshook), or when Tick has passed since the last pass.
	convergeTick = 250 * time.Millisecond
	convergeFor  = 15 * time.Second
	// DefaultMemoryLimit is the Go soft memory limit when GOMEMLIMIT is not
	// set: wireguard-go's buffer pools otherwise grow to hundreds of MB
	// under load, because the GC lets the heap double before collecting.
	DefaultMemoryLimit = 56 << 20
)

// Discovery is what the agent needs of a discovery client
// (*discovery.Client satisfies it).
type Discovery interface {
	Run(ctx context.Context) error
	SetLocal(self discovery.Affiliate, observed map[string][]netip.AddrPort)
	// Affiliates returns the same slice for as long as the affiliates do
	// not change (the agent keeps what it derived from it), and a new one
	// when they do; the affiliates in it are never modified, and one that
	// did not change is the same pointer in the new slice.
	Affiliates() []*discovery.Affiliate
	ObservedAddress() netip.Addr
	Changes() <-chan struct{}
}

// Policy makes the host's routing and firewall match a netpolicy.State
// (*netpolicy.Manager satisfies it).
type Policy interface {
	Apply(ctx context.Context, s netpolicy.State) error
	Close() error
}

// PathChooser, when set in Options, picks every peer's endpoint instead of
// the built-in round robin over candidates (for example a NAT-traversal
// driver that falls back to relays). Peer states (up, down) still come from
// the agent's own tracker.
type PathChooser interface {
	Choose(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]PathChoice
}

// Traverser is implemented by PathChoosers that exchange NAT-traversal data
// (relaying offered, rendezvous asked) through the sealed discovery data.
type Traverser interface {
	// Traverse reads what peers publish, by public key, and returns what
	// this node publishes. It runs before Choose in every pass.
	Traverse(now time.Time, peers map[wgtypes.Key]discovery.Traversal) discovery.Traversal
}

// PathChoice is a PathChooser's verdict for one peer. It is natpath's type,
// so that choosers (internal/natpath/drive) need not import the agent.
type PathChoice = natpath.Choice

// Options configure Run.
type Options struct {
	// Config is the parsed, validated machine config (config.Load).
	Config *config.Config
	// StateDir holds the identity (default DefaultStateDir).
	StateDir string
	// Socket is the status socket path (default DefaultSocket).
	Socket string
	// WireGuard selects the back end (default wg.ModeAuto).
	WireGuard wg.Mode
	// WireGuardWhy says why that back end was chosen (logged once the
	// interface is up, so a start that fails prints only its error).
	WireGuardWhy string
	// MetricsListen, if set, also serves /metrics on this TCP address
	// (it is always served on Socket).
	MetricsListen string
	// NATTraversal sets up NAT traversal from the config, as `meshspan-agent
	// run` does: the relay server when relay.enabled, the relay Bind (or,
	// for kernel WireGuard, a loopback proxy) and natpath choosing each
	// peer's path. It decides the back end (WireGuard auto becomes kernel
	// or userspace), and fills in Bind, Paths and the relay's Collectors.
	NATTraversal bool
	// Bind, if set, is the UDP transport of userspace WireGuard (relay).
	Bind conn.Bind
	// Paths, if set, chooses endpoints instead of the built-in rotation.
	Paths PathChooser
	// Collectors are extra metrics served on /metrics (the relay's).
	Collectors []prometheus.Collector
	// Discovery overrides the client built from Config.Discovery; nil with
	// no discovery endpoints configured means static peers only.
	Discovery Discovery
	// Policy overrides the host policy manager; nil means netpolicy.New,
	// unless NoHostPolicy.
	Policy       Policy
	NoHostPolicy bool
	// Tick is the reconcile period without events (default DefaultTick).
	Tick time.Duration
	// SharedProcess says other agents run in this process (scale tests):
	// the GC pace and returning memory to the kernel are process-wide, so
	// the idle trimming is left out (each agent's would be a full GC of
	// all of them).
	SharedProcess bool
	// MemoryLimit is the Go soft memory limit in bytes, applied when
	// GOMEMLIMIT is unset; 0 means DefaultMemoryLimit, -1 none.
	MemoryLimit int64
	// Version goes into the published affiliate's operating system field.
	Version string
	Logger  *slog.Logger
	// Ready, if set, is called once after the first reconcile pass.
	Ready func()

	// Host seams, nil for the real host; tests run agents in one process
	// on channel TUNs and Binds with them.
	// OpenDevice creates the mesh interface (default wg.Open); a fake
	// Device runs the reconcile steps without a kernel.
	OpenDevice func(wg.Options) (Device, error)
	HostAddrs  func() ([]netip.Addr, error)     // default: addresses of links with carrier
	MAC        func() (net.HardwareAddr, error) // default FirstPhysicalMAC
	// UnderlayMTU is the smallest MTU towards the given peer endpoint
	// addresses (default: their routes' links, or the default routes').
	UnderlayMTU func(dests []netip.Addr) int
}

// agent is the state of one Run.
type agent struct {
	opts   Options
	cfg    *config.Config
	log    *slog.Logger
	id     Identity
	prefix netip.Prefix
	psk    wgtypes.Key
	filter mesh.Filter
	extra  []netip.AddrPort
	nets   []netip.Prefix
	// trust: what is taken from peers and what this node announces.
	peerFilter mesh.Filter
	approved   []mesh.ApprovedRoute
	exclude    []netip.Prefix
	refused    refusedAdverts
	specs      specCache // the last peer set and its input
	discoCache discoveryCache
	devCache   deviceCache // the device's peers as the last pass read them
	// verdicts: the last pass's peer verdicts, a map the next pass refills;
	// want, spareQuiet: storage wireguardPeers reuses
	verdicts   map[wgtypes.Key]mesh.Status
	want       []wg.PeerConfig
	spareQuiet map[wgtypes.Key]bool
	reported   []mesh.Peer // the peer set of the last status
	// fullWarnings are the last full pass's warnings (change passes add
	// their own to them).
	fullWarnings []string
	reportedRaw  []peerRaw // what its peers' times and endpoints were formatted from
	// ownNets are the host's addresses with their subnets, as of the last
	// HostAddrs call (nil when a test replaces HostAddrs).
	ownNets []netip.Prefix
	// policyBase is the host policy's config part, from netpolicy.FromConfig.
	policyBase netpolicy.State
	dev        Device
	policy     Policy
	disco      Discovery
	// probeKernel tells whether the kernel can make a WireGuard link
	// (wg.ProbeKernel; tests replace it).
	probeKernel func() error
	tracker     *mesh.Tracker

	// live: WireGuard endpoints seen for peers, kept as candidates.
	live map[wgtypes.Key]netip.AddrPort
	// quiet: peers kept off WireGuard's handshake loop in the last pass
	// (mesh.Status.Quiet).
	quiet     map[wgtypes.Key]bool
	published publisher
	mem       memRegime
	peerKeys  map[wgtypes.Key]bool
	decrypt   struct {
		count uint64    // decrypt failures seen so far
		at    time.Time // when the count last grew
	}
	fastUntil time.Time
	// lastPass is when the last pass started; pace, when the last pass a
	// discovery change started began and ended (paceWait).
	lastPass time.Time
	pace     struct {
		start, end time.Time
		full       bool // a full pass, not a change pass
	}
	policyErr string
	// underlay caches the underlay MTU towards the peers' endpoints.
	underlay struct {
		dests []netip.Addr
		at    time.Time
		mtu   int
	}

	// mu guards status, which the loop replaces after a full pass and
	// changes in place after a change pass; readers elsewhere copy it
	// (snapshot).
	mu     sync.Mutex
	status *Status
}

// noMemProfile: MemProfileRate is process-wide and must be set once.
var noMemProfile sync.Once

// newAgent checks the options and the config and loads (or creates) the
// node's identity; it changes nothing on the host but the state directory.
func newAgent(opts Options) (*agent, error) {
	if opts.Config == nil {
		return nil, errors.New("agent: no config; pass --config with the node's machine config")
	}
	if opts.NATTraversal && (opts.Bind != nil || opts.Paths != nil) {
		return nil, errors.New("agent: Options.NATTraversal builds Bind and Paths; set either, not both")
	}
	hostNets := opts.HostAddrs == nil
	opts = opts.withDefaults()
	tuneRuntime(opts.MemoryLimit)
	cfg := opts.Config
	a := &agent{opts: opts, cfg: cfg, log: opts.Logger, live: map[wgtypes.Key]netip.AddrPort{}, probeKernel: wg.ProbeKernel}
	if hostNets {
		iface := cfg.WireGuard.Interface
		a.opts.HostAddrs = func() ([]netip.Addr, error) {
			ps, err := hostPrefixes(iface)
			a.ownNets = ps
			out := make([]netip.Addr, 0, len(ps))
			for _, p := range ps {
				out = append(out, p.Addr())
			}
			return out, err
		}
	}
	if err := a.fromConfig(); err != nil {
		return nil, err
	}
	var err error
	if a.id, err = LoadIdentity(opts.StateDir, cfg.Cluster.ID, opts.MAC); err != nil {
		return nil, err
	}
	a.tracker = mesh.NewTracker(mesh.Health{
		DownAfter: cfg.Health.DownAfter.D(), EndpointProbe: cfg.Health.EndpointProbe.D(),
		Keepalive: mesh.WireGuardKeepalive(cfg.WireGuard.Keepalive.D()),
	}, a.id.PublicKey())

	a.disco = opts.Discovery
	if a.disco == nil && len(cfg.Discovery.Endpoints) > 0 {
		c, err := discovery.NewClient(a.discoveryOptions())
		if err != nil {
			return nil, err
		}
		a.disco = c
	}
	return a, nil
}

// withDefaults fills in what the caller left unset (HostAddrs is filled
// in by newAgent, which needs the agent).
func (o Options) withDefaults() Options {
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Socket == "" {
		o.Socket = DefaultSocket
	}
	if o.WireGuard == "" {
		o.WireGuard = wg.ModeAuto
	}
	if o.Tick <= 0 {
		o.Tick = DefaultTick
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.OpenDevice == nil {
		o.OpenDevice = openDevice
	}
	if o.MAC == nil {
		o.MAC = FirstPhysicalMAC
	}
	if o.UnderlayMTU == nil {
		o.UnderlayMTU = underlayMTU
	}
	return o
}

// tuneRuntime sets the process-wide memory settings (Options.MemoryLimit).
func tuneRuntime(limit int64) {
	noMemProfile.Do(func() {
		// The memory profiler's sampling tables cost an idle agent ~1.5 MB.
		runtime.MemProfileRate = 0
	})
	if os.Getenv("GOMEMLIMIT") == "" {
		switch {
		case limit == 0:
			debug.SetMemoryLimit(DefaultMemoryLimit)
		case limit > 0:
			debug.SetMemoryLimit(limit)
		}
	}
}

// fromConfig parses what the reconcile steps take from the config: endpoint
// filters, extra endpoints, advertised networks, the trust filters, the
// host policy's config part, the PSK and the mesh prefix.
func (a *agent) fromConfig() error {
	cfg := a.cfg
	var err error
	if a.filter, err = mesh.ParseFilter(cfg.EndpointFilters); err != nil {
		return err
	}
	for i, s := range cfg.ExtraEndpoints {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return fmt.Errorf("agent: config extraEndpoints[%d]: %q is not ip:port; write 203.0.113.7:51820", i, s)
		}
		a.extra = append(a.extra, ap)
	}
	for i, s := range cfg.AdvertisedNetworks {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("agent: config advertisedNetworks[%d]: %w", i, err)
		}
		a.nets = append(a.nets, p)
	}
	if err := a.trustFromConfig(); err != nil {
		return err
	}
	if a.policyBase, err = netpolicy.FromConfig(cfg); err != nil {
		return fmt.Errorf("agent: config: %w", err)
	}
	if a.psk, err = clusterkey.PresharedKey(cfg.Cluster.Secret); err != nil {
		return fmt.Errorf("agent: config cluster.secret: %w", err)
	}
	a.prefix = clusterkey.MeshPrefix(cfg.Cluster.ID)
	return nil
}

// trustFromConfig reads the filters: which peer endpoints are taken
// (filters.peerEndpoints, else endpointFilters), which wide routes are
// approved for which peer, what this node leaves out of its announcement.
func (a *agent) trustFromConfig() error {
	f := a.cfg.Filters
	a.peerFilter = a.filter
	if len(f.PeerEndpoints) > 0 {
		pf, err := mesh.ParseFilter(f.PeerEndpoints)
		if err != nil {
			return fmt.Errorf("agent: config filters.peerEndpoints: %w", err)
		}
		a.peerFilter = pf
	}
	for i, r := range f.ApprovedRoutes {
		k, err := wgtypes.ParseKey(r.PublicKey)
		if err != nil {
			return fmt.Errorf("agent: config filters.approvedRoutes[%d].publicKey: not a WireGuard public key; paste the key `meshspan-agent identity` prints on the peer", i)
		}
		ar := mesh.ApprovedRoute{PublicKey: k}
		for j, s := range r.Networks {
			p, err := config.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("agent: config filters.approvedRoutes[%d].networks[%d]: %w", i, j, err)
			}
			ar.Networks = append(ar.Networks, p)
		}
		a.approved = append(a.approved, ar)
	}
	for i, s := range f.ExcludeAdvertisedNetworks {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("agent: config filters.excludeAdvertisedNetworks[%d]: %w", i, err)
		}
		a.exclude = append(a.exclude, p)
	}
	return nil
}

// discoveryOptions configures the discovery client. With host policy on, its
// sockets carry WireGuard's firewall mark: a discovery service on a member's
// underlay address would otherwise be routed into the mesh, which needs
// discovery to come up.
func (a *agent) discoveryOptions() discovery.ClientOptions {
	o := discovery.ClientOptions{
		Endpoints:        a.cfg.Discovery.Endpoints,
		ClusterID:        a.cfg.Cluster.ID,
		ClusterSecret:    a.cfg.Cluster.Secret,
		AffiliateID:      a.id.AffiliateID,
		TTL:              a.cfg.Discovery.TTL.D(),
		CACertificatePEM: a.cfg.Discovery.CACertificate,
		ClientVersion:    "meshspan-" + a.opts.Version,
		Logger:           a.opts.Logger,
	}
	if !a.opts.NoHostPolicy {
		o.Dialer = fwmark.Dialer(a.cfg.Routing.FirewallMark)
	}
	return o
}

// underlayMTU is the underlay MTU on the way to the peers' live endpoints
// (the default routes' before any is known). Relayed and loopback-proxied
// endpoints are not underlay paths and are left out. Routes rarely change:
// it is looked up again when the endpoints change, or after underlayRecheck.
func (a *agent) underlayMTU(now time.Time, stats []wg.PeerStats) int {
	const underlayRecheck = 30 * time.Second
	var dests []netip.Addr
	for _, s := range stats {
		ep := s.Endpoint
		if !ep.IsValid() || relay.IsVirtual(ep) || ep.Addr().IsLoopback() {
			continue
		}
		if d := ep.Addr().Unmap(); !slices.Contains(dests, d) {
			dests = append(dests, d)
		}
	}
	slices.SortFunc(dests, netip.Addr.Compare)
	u := &a.underlay
	if !u.at.IsZero() && now.Sub(u.at) < underlayRecheck && slices.Equal(dests, u.dests) {
		return u.mtu
	}
	u.dests, u.at, u.mtu = dests, now, a.opts.UnderlayMTU(dests)
	return u.mtu
}

func (a *agent) logTransitions(old, cur *Status) {
	// Lines come in affiliate-ID order pass after pass: each is compared
	// with the last one found walking forward, and only a peer found
	// elsewhere (two lines of one affiliate, say) needs the map.
	var prev map[string]string
	j := 0 // in old.Peers
	for _, c := range cur.Peers {
		was, ok := "", false
		if old != nil {
			for j < len(old.Peers) && old.Peers[j].AffiliateID < c.AffiliateID {
				j++
			}
		}
		switch {
		case old == nil:
		case j < len(old.Peers) && old.Peers[j].PublicKey == c.PublicKey:
			was, ok = old.Peers[j].State, true
		default:
			if prev == nil {
				prev = make(map[string]string, len(old.Peers))
				for _, p := range old.Peers {
					prev[p.PublicKey] = p.State
				}
			}
			was, ok = prev[c.PublicKey]
		}
		if !ok || was != c.State {
			a.logPeerState(c)
		}
	}
}

// logPeerState logs a peer's line when its state is new.
func (a *agent) logPeerState(c *PeerStatus) {
	a.log.Info("peer state", "peer", c.Name, "publicKey", c.PublicKey, "state", c.State, "endpoint", c.Endpoint)
}

// trimWhenIdle keeps an idle agent small. Under traffic the GC runs at the
// default pace (a tighter one costs throughput: wireguard-go's pooled
// packet buffers get collected and re-allocated). Once the mesh has been
// quiet for idleAfter, freed pages (64 KiB packet buffers, touched once and
// then garbage) go back to the kernel, again every idleTrim while it stays
// quiet, and the GC lets only idleHeadroom of garbage pile up between
// collections (idleGCPercent).
func (a *agent) trimWhenIdle() {
	var total int64
	for _, p := range a.current().Peers {
		total += p.RxBytes + p.TxBytes
	}
	switch a.mem.observe(time.Now(), total) {
	case memBusy:
		debug.SetGCPercent(100)
	case memIdle, memTrim:
		debug.FreeOSMemory()
		debug.SetGCPercent(idleGCPercent(liveHeap()))
	}
}

// idleHeadroom is the garbage an idle agent lets accumulate between two
// collections. It is set in bytes, not as a share of the live heap: with
// userspace WireGuard most of that heap is wireguard-go's receive and TUN
// batches (3 x 128 buffers of 64 KiB, allocated at start and barely
// touched), so GOGC=20 let ~6 MB of touched garbage stay resident. An idle
// agent with 19 peers allocates about 1 MB/s (mostly the reconcile pass
// reading back the nftables ruleset): 2 MB means a collection every ~2 s,
// measured at +0.1 % of a core over GOGC=20 (1 MB: every 1.2 s, +0.2 %,
// for no less memory).
const idleHeadroom = 2 << 20

// idleGCPercent is the GOGC that gives idleHeadroom over a live heap of
// live bytes, within 5-100 %.
func idleGCPercent(live uint64) int {
	if live == 0 {
		return 100
	}
	return int(min(max(idleHeadroom*100/live, 5), 100))
}

// liveHeap is the heap the last collection found live, in bytes.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// memRegime decides, from the mesh's traffic, when the agent's memory
// settings change (trimWhenIdle). It does no I/O.
type memRegime struct {
	lastCheck, quietSince, lastTrim time.Time
	lastTotal                       int64 // rx+tx of all peers at lastCheck
	idle                            bool
}

type memAction int

const (
	memKeep memAction = iota
	memBusy           // traffic again: back to the default GC pace
	memIdle           // quiet for idleAfter: idle GC pace, give memory back
	memTrim           // still quiet idleTrim later: give memory back again
)

const (
	idleAfter = 30 * time.Second
	idleTrim  = time.Minute
	busyRate  = 256 << 10 // bytes/s over all peers
	// minRateWindow: a pass right after another one (a discovery update
	// triggers one at once) would turn one handshake into a high rate;
	// the rate is taken over at least this long.
	minRateWindow = 900 * time.Millisecond
)

// observe takes the peers' rx+tx byte total at now.
func (m *memRegime) observe(now time.Time, total int64) memAction {
	elapsed := now.Sub(m.lastCheck)
	if !m.lastCheck.IsZero() && elapsed < minRateWindow {
		return memKeep
	}
	busy := m.lastCheck.IsZero() || float64(total-m.lastTotal) > busyRate*elapsed.Seconds()
	m.lastCheck, m.lastTotal = now, total
	switch {
	case busy:
		m.quietSince = time.Time{}
		if m.idle {
			m.idle = false
			return memBusy
		}
	case m.quietSince.IsZero():
		m.quietSince = now
	case now.Sub(m.quietSince) >= idleAfter && !m.idle:
		m.idle, m.lastTrim = true, now
		return memIdle
	case m.idle && now.Sub(m.lastTrim) >= idleTrim:
		m.lastTrim = now
		return memTrim
	}
	return memKeep
}

// nextTick is the time to the next pass without events.
func (a *agent) nextTick() time.Duration {
	if time.Now().After(a.fastUntil) {
		return a.opts.Tick
	}
	for _, p := range a.current().Peers {
		if p.State == mesh.StateUnknown.String() {
			return min(convergeTick, a.opts.Tick)
		}
	}
	return a.opts.Tick
}

// snapshot is a copy of the status for readers outside the loop: a change
// pass changes the current one's peer lines in place.
func (a *agent) snapshot() *Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == nil {
		return nil
	}
	c := *a.status
	c.Peers = slices.Clone(c.Peers)
	return &c
}

// current is the status itself, for the loop (which alone changes it).
func (a *agent) current() *Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// handlers returns what the status socket serves (/status and /metrics) and
// what --metrics-listen serves: /metrics alone, since /status lists keys,
// endpoints and AllowedIPs that only those who may open the socket may see.
func (a *agent) handlers() (socket, metricsOnly http.Handler) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{snapshot: a.snapshot, now: time.Now}, a.refused.counter())
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(a.opts.Collectors...)
	if d, ok := a.disco.(decryptCounter); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshspan_discovery_decrypt_failures_total",
			Help: "Affiliate records from the discovery service that did not decrypt with this cluster's secret.",
		}, func() float64 { return float64(d.DecryptFailures()) }))
	}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	only := http.NewServeMux()
	only.Handle("GET /metrics", metrics)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s := a.snapshot()
		if s == nil {
			http.Error(w, "agent: starting, no reconcile pass yet", http.StatusServiceUnavailable)
			return
		}
		s = a.withLiveCounters(s)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s)
	})
	return mux, only
}

// decryptCounter is implemented by discovery clients that count affiliate
// records they could not open (*discovery.Client).
type decryptCounter interface{ DecryptFailures() uint64 }

// decryptWarning says so when affiliate records failed to decrypt within
// the last decryptWarnFor: a node with the same cluster ID but another
// secret, or someone who knows the cluster ID writing to it.
func (a *agent) decryptWarning(now time.Time) string {
	d, ok := a.disco.(decryptCounter)
	if !ok {
		return ""
	}
	n := d.DecryptFailures()
	if n > a.decrypt.count {
		a.decrypt.count, a.decrypt.at = n, now
	}
	if n == 0 || now.Sub(a.decrypt.at) > decryptWarnFor {
		return ""
	}
	return fmt.Sprintf("discovery: %d affiliate records did not decrypt with this cluster's secret (last %s ago); a node with this cluster.id but another cluster.secret, or someone else writing under this cluster ID (see meshspan_discovery_decrypt_failures_total)",
		n, now.Sub(a.decrypt.at).Round(time.Second))
}

// decryptWarnFor is how long status keeps warning after the last failure.
const decryptWarnFor = 10 * time.Minute

// withLiveCounters copies s with traffic, handshake and endpoint read from
// the device now, so status is never a tick behind on counters.
func (a *agent) withLiveCounters(s *Status) *Status {
	stats, err := a.dev.Peers()
	if err != nil {
		return s
	}
	byKey := make(map[string]wg.PeerStats, len(stats))
	for _, p := range stats {
		byKey[p.PublicKey.String()] = p
	}
	c := *s
	c.Peers = make([]*PeerStatus, len(s.Peers))
	for i, l := range s.Peers {
		c.Peers[i] = l
		if p, ok := byKey[l.PublicKey]; ok {
			live := *l // lines are shared with the status: never changed
			live.RxBytes, live.TxBytes = p.RxBytes, p.TxBytes
			live.LastHandshake = timeString(p.LastHandshake)
			if p.Endpoint.IsValid() {
				live.Endpoint = p.Endpoint.String()
			}
			c.Peers[i] = &live
		}
	}
	return &c
}

func (a *agent) nodeName() string {
	if a.cfg.Node.Name != "" {
		return a.cfg.Node.Name
	}
	return hostname()
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func strs[T fmt.Stringer](list []T) []string {
	out := make([]string, 0, len(list))
	for _, v := range list {
		out = append(out, v.String())
	}
	return out
}
