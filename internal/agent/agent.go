// Package agent is the meshspan node agent as a library: Run turns a
// machine config into a live WireGuard full mesh and keeps it matching the
// config, the discovered affiliates and the host's addresses. The cobra
// commands in agent/ only parse flags and call into this package.
//
// Each reconcile pass (on a discovery change and on a short tick) re-reads
// every input, computes the desired state with internal/mesh, and makes the
// WireGuard device (internal/wg) and host policy (internal/netpolicy) match
// it: level-triggered, so a missed event costs at most one tick.
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
	"reflect"
	"runtime"
	"runtime/debug"
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
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
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
	// stays unknown does not keep the agent busy).
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
	Affiliates() []discovery.Affiliate
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

// PathChoice is a PathChooser's verdict for one peer.
type PathChoice struct {
	// SetEndpoint, when valid, is configured on the device now.
	SetEndpoint netip.AddrPort
	// Path and Via describe it for status ("direct", "relayed" via a node).
	Path, Via, Reason string
	// Advisory choices only describe the path (status); the agent's own
	// rotation keeps picking the endpoint, and SetEndpoint is ignored.
	Advisory bool
}

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
	OpenDevice func(wg.Options) (*wg.Device, error) // default wg.Open
	HostAddrs  func() ([]netip.Addr, error)         // default: addresses of links with carrier
	MAC        func() (net.HardwareAddr, error)     // default FirstPhysicalMAC
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
	// ownNets are the host's addresses with their subnets, as of the last
	// HostAddrs call (nil when a test replaces HostAddrs).
	ownNets []netip.Prefix
	// policyBase is the host policy's config part, from netpolicy.FromConfig.
	policyBase netpolicy.State
	dev        *wg.Device
	policy     Policy
	disco      Discovery
	tracker    *mesh.Tracker

	// live: WireGuard endpoints seen for peers, kept as candidates.
	live          map[wgtypes.Key]netip.AddrPort
	lastPublished *discovery.Affiliate
	mem           struct {
		lastCheck, quietSince, lastTrim time.Time
		lastTotal                       int64 // rx+tx of all peers at lastCheck
		idle                            bool
	}
	peerKeys map[wgtypes.Key]bool
	decrypt  struct {
		count uint64    // decrypt failures seen so far
		at    time.Time // when the count last grew
	}
	fastUntil    time.Time
	lastObserved map[string][]netip.AddrPort
	policyErr    string
	// underlay caches the underlay MTU towards the peers' endpoints.
	underlay struct {
		dests []netip.Addr
		at    time.Time
		mtu   int
	}

	mu     sync.Mutex
	status *Status
}

// Run runs the agent until ctx ends, then removes everything it made (the
// interface, its routes and firewall table, its discovery affiliate). An
// error before the mesh is up leaves nothing behind and names the cause.
func Run(ctx context.Context, opts Options) (err error) {
	a, err := newAgent(opts)
	if err != nil {
		return err
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	// Everything above was checks and files; from here on the host changes.
	l, err := listenSocket(a.opts.Socket)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { l.Close(); removeSocket(a.opts.Socket) })

	a.dev, err = a.opts.OpenDevice(wg.Options{
		Name:         a.cfg.WireGuard.Interface,
		Mode:         a.opts.WireGuard,
		MTU:          a.cfg.WireGuard.MTU,
		ListenPort:   a.cfg.WireGuard.ListenPort,
		PrivateKey:   a.id.PrivateKey,
		FirewallMark: int(a.cfg.Routing.FirewallMark),
		Address:      netip.PrefixFrom(a.id.Address, a.prefix.Bits()),
		Bind:         a.opts.Bind,
		Logger:       a.log,
	})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() {
		if err := a.dev.Close(); err != nil {
			a.log.Warn("close WireGuard device", "err", err)
		}
	})
	a.log.Info("mesh interface up", "interface", a.dev.Name(), "mode", a.dev.Mode(), "why", a.opts.WireGuardWhy,
		"address", a.id.Address, "publicKey", a.id.PublicKey().String(), "port", a.dev.ListenPort())

	a.policy = a.opts.Policy
	if a.policy == nil && !a.opts.NoHostPolicy {
		m, err := netpolicy.New(netpolicy.Options{})
		if err != nil {
			return err
		}
		a.policy = m
	}
	if a.policy != nil {
		cleanups = append(cleanups, func() {
			if err := a.policy.Close(); err != nil {
				a.log.Warn("remove host policy", "err", err)
			}
		})
	}

	socketHandler, metricsHandler := a.handlers()
	srv := &http.Server{Handler: socketHandler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	cleanups = append(cleanups, func() { srv.Close() })
	if a.opts.MetricsListen != "" {
		ml, err := net.Listen("tcp", a.opts.MetricsListen)
		if err != nil {
			return fmt.Errorf("agent: metrics: listen on %s: %w (choose a free --metrics-listen address)", a.opts.MetricsListen, err)
		}
		msrv := &http.Server{Handler: metricsHandler, ReadHeaderTimeout: 5 * time.Second}
		go msrv.Serve(ml)
		cleanups = append(cleanups, func() { msrv.Close() })
	}

	// Discovery runs until loopCtx ends; on the way out it deletes our
	// affiliate, and the cleanup waits for that before the interface goes.
	loopCtx, stop := context.WithCancel(context.Background())
	defer stop()
	changes := make(<-chan struct{})
	if a.disco != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := a.disco.Run(loopCtx); err != nil && loopCtx.Err() == nil {
				a.log.Warn("discovery stopped", "err", err)
			}
		}()
		cleanups = append(cleanups, func() {
			stop()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				a.log.Warn("discovery did not stop within 10 s; the affiliate may linger until its TTL")
			}
		})
		changes = a.disco.Changes()
	}

	tick := time.NewTimer(a.opts.Tick)
	defer tick.Stop()
	a.reconcile(ctx)
	if err := sdNotify("READY=1"); err != nil {
		a.log.Warn("notify systemd", "err", err)
	}
	if a.opts.Ready != nil {
		a.opts.Ready()
	}
	for {
		select {
		case <-ctx.Done():
			a.log.Info("shutting down: removing the interface, host policy and affiliate")
			if err := sdNotify("STOPPING=1"); err != nil {
				a.log.Warn("notify systemd", "err", err)
			}
			return nil
		case <-changes:
		case <-tick.C:
		}
		a.reconcile(ctx)
		a.trimWhenIdle()
		tick.Reset(a.nextTick())
	}
}

// noMemProfile: MemProfileRate is process-wide and must be set once.
var noMemProfile sync.Once

func newAgent(opts Options) (*agent, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("agent: no config; pass --config with the node's machine config")
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	if opts.WireGuard == "" {
		opts.WireGuard = wg.ModeAuto
	}
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.OpenDevice == nil {
		opts.OpenDevice = wg.Open
	}
	hostNets := opts.HostAddrs == nil
	if opts.MAC == nil {
		opts.MAC = FirstPhysicalMAC
	}
	if opts.UnderlayMTU == nil {
		opts.UnderlayMTU = underlayMTU
	}
	noMemProfile.Do(func() {
		// The memory profiler's sampling tables cost an idle agent ~1.5 MB.
		runtime.MemProfileRate = 0
	})
	if os.Getenv("GOMEMLIMIT") == "" {
		switch {
		case opts.MemoryLimit == 0:
			debug.SetMemoryLimit(DefaultMemoryLimit)
		case opts.MemoryLimit > 0:
			debug.SetMemoryLimit(opts.MemoryLimit)
		}
	}
	a := &agent{opts: opts, cfg: cfg, log: opts.Logger, live: map[wgtypes.Key]netip.AddrPort{}}
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

	var err error
	if a.filter, err = mesh.ParseFilter(cfg.EndpointFilters); err != nil {
		return nil, err
	}
	for i, s := range cfg.ExtraEndpoints {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("agent: config extraEndpoints[%d]: %q is not ip:port; write 203.0.113.7:51820", i, s)
		}
		a.extra = append(a.extra, ap)
	}
	for i, s := range cfg.AdvertisedNetworks {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("agent: config advertisedNetworks[%d]: %w", i, err)
		}
		a.nets = append(a.nets, p)
	}
	if err := a.trustFromConfig(); err != nil {
		return nil, err
	}
	if a.policyBase, err = netpolicy.FromConfig(cfg); err != nil {
		return nil, fmt.Errorf("agent: config: %w", err)
	}
	if a.psk, err = clusterkey.PresharedKey(cfg.Cluster.Secret); err != nil {
		return nil, fmt.Errorf("agent: config cluster.secret: %w", err)
	}
	a.prefix = clusterkey.MeshPrefix(cfg.Cluster.ID)
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
		o.Dialer = wg.MarkDialer(a.cfg.Routing.FirewallMark)
	}
	return o
}

// reconcile is one level-triggered pass over every input.
func (a *agent) reconcile(ctx context.Context) {
	now := time.Now()
	var warnings []string
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	if err := a.dev.UAPIError(); err != nil {
		warn("%v (wg show will not see the interface)", err)
	}

	addrs, err := a.opts.HostAddrs()
	if err != nil {
		warn("%v", err)
	}
	var observedSelf netip.Addr
	var affs []mesh.Affiliate
	remote := map[wgtypes.Key]discovery.Traversal{}
	if a.disco != nil {
		observedSelf = a.disco.ObservedAddress()
		for _, d := range a.disco.Affiliates() {
			if k, err := wgtypes.ParseKey(d.PublicKey); err == nil && !d.Traversal.IsZero() {
				remote[k] = d.Traversal
			}
			affs = append(affs, mesh.Affiliate{
				ID: d.ID, NodeName: d.NodeName, PublicKey: d.PublicKey, Address: d.Address,
				Addresses: d.Addresses, Networks: d.Networks, ExcludeNetworks: d.ExcludeNetworks, Endpoints: d.Endpoints,
			})
		}
	}
	localEps := mesh.LocalEndpoints(mesh.LocalInput{
		Addrs: addrs, Prefix: a.prefix, Observed: observedSelf, Port: uint16(a.dev.ListenPort()),
		Filter: a.filter, Extra: a.extra,
	})

	stats, err := a.dev.Peers()
	if err != nil {
		warn("%v", err)
	}
	obs := make(map[wgtypes.Key]mesh.Observation, len(stats))
	byKey := make(map[wgtypes.Key]wg.PeerStats, len(stats))
	for _, s := range stats {
		obs[s.PublicKey] = mesh.Observation{Endpoint: s.Endpoint, LastHandshake: s.LastHandshake, RxBytes: s.RxBytes, TxBytes: s.TxBytes}
		byKey[s.PublicKey] = s
	}
	if w := netpolicy.MTUWarning(a.underlayMTU(now, stats), a.cfg.WireGuard.MTU); w != "" {
		warnings = append(warnings, w)
	}
	if w := a.decryptWarning(now); w != "" {
		warnings = append(warnings, w)
	}
	observed := make(map[wgtypes.Key][]netip.AddrPort, len(a.live))
	for k, ep := range a.live {
		observed[k] = []netip.AddrPort{ep}
	}

	set := mesh.Build(mesh.Input{
		Self: a.id.PublicKey(), Prefix: a.prefix, Own: append(slices.Clone(addrs), a.id.Address), OwnNets: a.ownNets, Static: a.cfg.StaticPeers,
		Affiliates: affs, Filter: a.peerFilter, Observed: observed, Approved: a.approved,
	})
	peers := set.Peers
	warnings = append(warnings, set.Warnings...)
	a.refused.observe(set.Refused)
	keys := make(map[wgtypes.Key]bool, len(peers))
	for _, p := range peers {
		keys[p.PublicKey] = true
	}
	if !reflect.DeepEqual(keys, a.peerKeys) {
		a.peerKeys, a.fastUntil = keys, now.Add(convergeFor)
	}
	verdicts := a.tracker.Step(now, peers, obs)
	var traversal discovery.Traversal
	if t, ok := a.opts.Paths.(Traverser); ok {
		traversal = t.Traverse(now, withStaticRelays(remote, a.cfg.StaticPeers))
	}
	var paths map[wgtypes.Key]PathChoice
	if a.opts.Paths != nil {
		paths = a.opts.Paths.Choose(now, peers, obs)
	}

	want := make([]wg.PeerConfig, 0, len(peers))
	for _, p := range peers {
		v := verdicts[p.PublicKey]
		if paths != nil && !paths[p.PublicKey].Advisory {
			v.SetEndpoint = paths[p.PublicKey].SetEndpoint
		}
		pc := wg.PeerConfig{PublicKey: p.PublicKey, PresharedKey: a.psk, Endpoint: v.SetEndpoint, AllowedIPs: p.AllowedIPs}
		if v.Keepalive {
			pc.Keepalive = mesh.WireGuardKeepalive(a.cfg.WireGuard.Keepalive.D())
			pc.SendKeepalive = v.SendKeepalive
		}
		if v.SetEndpoint.IsValid() {
			a.log.Debug("peer endpoint", "peer", p.Name, "endpoint", v.SetEndpoint, "state", v.State)
		}
		want = append(want, pc)
	}
	if err := a.dev.SyncPeers(want); err != nil {
		warn("%v", err)
	}

	// Endpoints of live peers: kept as candidates here, published for them.
	peerObserved := map[string][]netip.AddrPort{}
	live := map[wgtypes.Key]netip.AddrPort{}
	for _, p := range peers {
		s, ok := byKey[p.PublicKey]
		if !ok || !s.Endpoint.IsValid() || verdicts[p.PublicKey].State != mesh.StateUp || relay.IsVirtual(s.Endpoint) {
			if ep, ok := a.live[p.PublicKey]; ok {
				live[p.PublicKey] = ep
			}
			continue
		}
		live[p.PublicKey] = s.Endpoint
		if p.AffiliateID != "" {
			peerObserved[p.AffiliateID] = []netip.AddrPort{s.Endpoint}
		}
	}
	a.live = live

	if a.policy != nil {
		if err := a.policy.Apply(ctx, a.policyState(peers, verdicts, set.Contested)); err != nil {
			if msg := err.Error(); msg != a.policyErr {
				a.log.Warn("host policy", "err", err)
				a.policyErr = msg
			}
			warn("host policy: %v", err)
		} else {
			a.policyErr = ""
		}
	}

	if a.disco != nil {
		nets, routed := mesh.Exclude(a.nets, mesh.Routed(addrs, a.prefix), a.exclude)
		self := discovery.Affiliate{
			ID:              a.id.AffiliateID,
			NodeName:        a.nodeName(),
			Hostname:        hostname(),
			MachineType:     "unknown",
			OperatingSystem: "meshspan (" + a.opts.Version + ")",
			PublicKey:       a.id.PublicKey().String(),
			Address:         a.id.Address,
			Addresses:       routed,
			Networks:        nets,
			ExcludeNetworks: a.exclude,
			Endpoints:       localEps,
			Traversal:       traversal,
		}
		if a.lastPublished == nil || !reflect.DeepEqual(*a.lastPublished, self) || !reflect.DeepEqual(a.lastObserved, peerObserved) {
			a.disco.SetLocal(self, peerObserved)
			a.lastPublished, a.lastObserved = &self, peerObserved
		}
	}

	st := &Status{
		Node: a.nodeName(), PublicKey: a.id.PublicKey().String(), Address: a.id.Address.String(), AffiliateID: a.id.AffiliateID,
		Interface: a.dev.Name(), Mode: string(a.dev.Mode()), ListenPort: a.dev.ListenPort(),
		Endpoints: strs(localEps), Discovery: a.disco != nil, Warnings: warnings, Peers: []PeerStatus{},
		UpdatedAt: time.Now().UTC(),
	}
	if st.Warnings == nil {
		st.Warnings = []string{}
	}
	if observedSelf.IsValid() {
		st.ObservedAddress = observedSelf.String()
	}
	for _, p := range peers {
		v, s := verdicts[p.PublicKey], byKey[p.PublicKey]
		ps := PeerStatus{
			Name: p.Name, PublicKey: p.PublicKey.String(), AffiliateID: p.AffiliateID, Address: p.Address.String(),
			State: v.State.String(), RxBytes: s.RxBytes, TxBytes: s.TxBytes,
			LastHandshake: timeString(s.LastHandshake), LastActivity: timeString(v.LastActivity),
			EndpointChanges: v.EndpointChanges, AllowedIPs: strs(p.AllowedIPs), Candidates: strs(p.Endpoints),
		}
		if s.Endpoint.IsValid() {
			ps.Endpoint = s.Endpoint.String()
		}
		if pc, ok := paths[p.PublicKey]; ok {
			ps.Path, ps.Via, ps.PathReason = pc.Path, pc.Via, pc.Reason
		}
		st.Peers = append(st.Peers, ps)
	}
	a.mu.Lock()
	old := a.status
	a.status = st
	a.mu.Unlock()
	a.logTransitions(old, st)
}

// withStaticRelays adds the relay ports static peers are configured with
// (clusters without discovery); what a peer announces itself wins.
func withStaticRelays(remote map[wgtypes.Key]discovery.Traversal, peers []config.StaticPeer) map[wgtypes.Key]discovery.Traversal {
	for _, sp := range peers {
		k, err := wgtypes.ParseKey(sp.PublicKey)
		if err != nil || sp.RelayPort == 0 {
			continue
		}
		if t := remote[k]; t.RelayPort == 0 {
			t.RelayPort = uint16(sp.RelayPort)
			remote[k] = t
		}
	}
	return remote
}

// policyState is the host policy for this pass: the config's part
// (netpolicy.FromConfig: firewall, relay port, LAN bypass, marks) with the
// live device's name and port; members' AllowedIPs are
// routed through the mesh (the mesh prefix itself is on the link already);
// those of peers that are not up are marked unreachable, and so are ranges
// two members claim (contested), which no peer gets: they stay in the mesh
// and are dropped rather than leaving in plaintext.
func (a *agent) policyState(peers []mesh.Peer, verdicts map[wgtypes.Key]mesh.Status, contested []netip.Prefix) netpolicy.State {
	s := a.policyBase
	s.Interface, s.ListenPort = a.dev.Name(), a.dev.ListenPort()
	s.Routed, s.Unreachable = nil, nil
	for _, n := range contested {
		if a.prefix.Overlaps(n) {
			continue // the mesh prefix is on the link already
		}
		s.Routed = append(s.Routed, n)
		s.Unreachable = append(s.Unreachable, n)
	}
	for _, p := range peers {
		up := verdicts[p.PublicKey].State == mesh.StateUp
		for _, n := range p.AllowedIPs {
			if a.prefix.Overlaps(n) && n.Bits() >= a.prefix.Bits() {
				continue
			}
			s.Routed = append(s.Routed, n)
			if !up {
				s.Unreachable = append(s.Unreachable, n)
			}
		}
	}
	return s
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
	prev := map[string]string{}
	if old != nil {
		for _, p := range old.Peers {
			prev[p.PublicKey] = p.State
		}
	}
	for _, p := range cur.Peers {
		if was, ok := prev[p.PublicKey]; !ok || was != p.State {
			a.log.Info("peer state", "peer", p.Name, "publicKey", p.PublicKey, "state", p.State, "endpoint", p.Endpoint)
		}
	}
}

// trimWhenIdle keeps an idle agent small. Under traffic the GC runs at the
// default pace (a tighter one costs throughput: wireguard-go's pooled
// packet buffers get collected and re-allocated). Once the mesh has been
// quiet for idleAfter, the GC target drops to idleGCPercent and freed pages
// (64 KiB packet buffers, touched once and then garbage) go back to the
// kernel, again every idleTrim while it stays quiet.
func (a *agent) trimWhenIdle() {
	const (
		idleAfter     = 30 * time.Second
		idleTrim      = time.Minute
		busyRate      = 256 << 10 // bytes/s over all peers
		idleGCPercent = 20
	)
	now := time.Now()
	var total int64
	for _, p := range a.snapshot().Peers {
		total += p.RxBytes + p.TxBytes
	}
	elapsed := now.Sub(a.mem.lastCheck)
	busy := a.mem.lastCheck.IsZero() || float64(total-a.mem.lastTotal) > busyRate*elapsed.Seconds()
	a.mem.lastCheck, a.mem.lastTotal = now, total
	switch {
	case busy:
		a.mem.quietSince = time.Time{}
		if a.mem.idle {
			debug.SetGCPercent(100)
			a.mem.idle = false
		}
	case a.mem.quietSince.IsZero():
		a.mem.quietSince = now
	case now.Sub(a.mem.quietSince) >= idleAfter && (!a.mem.idle || now.Sub(a.mem.lastTrim) >= idleTrim):
		if !a.mem.idle {
			debug.SetGCPercent(idleGCPercent)
			a.mem.idle = true
		}
		debug.FreeOSMemory()
		a.mem.lastTrim = now
	}
}

// nextTick is the time to the next pass without events.
func (a *agent) nextTick() time.Duration {
	if time.Now().After(a.fastUntil) {
		return a.opts.Tick
	}
	for _, p := range a.snapshot().Peers {
		if p.State == mesh.StateUnknown.String() {
			return min(convergeTick, a.opts.Tick)
		}
	}
	return a.opts.Tick
}

func (a *agent) snapshot() *Status {
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
	c.Peers = append([]PeerStatus(nil), s.Peers...)
	for i := range c.Peers {
		if p, ok := byKey[c.Peers[i].PublicKey]; ok {
			c.Peers[i].RxBytes, c.Peers[i].TxBytes = p.RxBytes, p.TxBytes
			c.Peers[i].LastHandshake = timeString(p.LastHandshake)
			if p.Endpoint.IsValid() {
				c.Peers[i].Endpoint = p.Endpoint.String()
			}
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
