package agent

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath/drive"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// traversalPlan is how NAT traversal is wired, decided from the config and
// the requested back end before anything is opened: the transport depends
// on the back end, so this is where auto becomes kernel or userspace.
type traversalPlan struct {
	mode wg.Mode // kernel or userspace, never auto
	why  string  // for the log
	// relay: this node relays for members (relay.enabled), on ownPort, or
	// on the WireGuard port through the userspace Bind when ownPort is 0.
	relay   bool
	ownPort uint16
	// publish is the relay port members are told (0: not relaying).
	publish uint16
}

// planTraversal decides the back end and where the relay listens. probe
// tells whether the kernel can make a WireGuard link (wg.ProbeKernel).
func planTraversal(cfg *config.Config, mode wg.Mode, probe func() error) (traversalPlan, error) {
	var p traversalPlan
	// relay.port set and different from the WireGuard port: its own socket.
	own := cfg.Relay.Port != 0 && cfg.Relay.Port != cfg.WireGuard.ListenPort
	if cfg.Relay.Enabled {
		p.relay = true
		p.publish = uint16(cmp.Or(cfg.Relay.Port, cfg.WireGuard.ListenPort))
		if own {
			p.ownPort = uint16(cfg.Relay.Port)
		}
	}
	onWireGuardPort := p.relay && !own
	p.mode, p.why = wg.Resolve(mode, onWireGuardPort, probe)
	if onWireGuardPort && p.mode == wg.ModeKernel {
		return p, errors.New("relay: kernel WireGuard owns the WireGuard port; set relay.port to another port (and open it in the cloud firewall), or run with --wireguard=userspace")
	}
	return p, nil
}

// traversal is NAT traversal for Run: the relay server when relay.enabled,
// and the client side (relay Bind or, for kernel WireGuard, the loopback
// proxy) with natpath choosing each peer's path.
type traversal struct {
	plan       traversalPlan
	bind       conn.Bind // userspace only
	paths      PathChooser
	collectors []prometheus.Collector
	closers    []func()
	server     *relay.Server // when relaying: only current peers may register
}

// choose makes c the path chooser; a relay server, if any, admits exactly
// the agent's current peers before every choice.
func (t *traversal) choose(c *drive.Chooser) {
	if t.server == nil {
		t.paths = c
		return
	}
	t.paths = admitter{c, t.server, map[[32]byte]bool{}}
}

func (t *traversal) close() {
	for i := len(t.closers) - 1; i >= 0; i-- {
		t.closers[i]()
	}
}

// openTraversal opens what plan says. mark, when not 0, is set on the
// relay's sockets that send to members outside WireGuard's own socket (the
// host policy's firewall mark: without it they would be routed into the
// mesh).
func openTraversal(plan traversalPlan, cfg *config.Config, id Identity, mark uint32, log *slog.Logger) (_ *traversal, err error) {
	secret, err := clusterkey.Key(cfg.Cluster.Secret)
	if err != nil {
		return nil, fmt.Errorf("relay: config cluster.secret: %w", err)
	}
	key, err := relay.DeriveKey(secret)
	if err != nil {
		return nil, err
	}
	priv := [32]byte(id.PrivateKey)
	t := &traversal{plan: plan}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	timing := natpath.Timing{Probe: cfg.Health.EndpointProbe.D(), DownAfter: cfg.Health.DownAfter.D()}
	fresh := 3 * relay.DefaultRegisterInterval

	var srv *relay.Server // serving on the WireGuard port, through the Bind
	if plan.relay {
		s := relay.NewServer(key, priv, relay.WithMark(mark))
		t.collectors, t.server = s.Collectors(), s
		if plan.ownPort != 0 {
			l, err := s.ListenUDP(plan.ownPort)
			if err != nil {
				return nil, err
			}
			t.closers = append(t.closers, func() { _ = l.Close() })
			log.Info("relaying for members", "port", plan.ownPort)
		} else {
			srv = s
		}
	}

	if plan.mode == wg.ModeKernel {
		// The kernel cannot take a Bind: relayed peers point at a loopback
		// proxy.
		p, err := relay.NewProxy(key, priv, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cfg.WireGuard.ListenPort)), ":0", 0)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() { p.Close() })
		if mark != 0 {
			if err := p.SetMark(mark); err != nil {
				return nil, err
			}
		}
		t.choose(&drive.Chooser{Driver: drive.New(p, timing, fresh), RelayPort: plan.publish, MTU: cfg.WireGuard.MTU})
		return t, nil
	}
	b, err := relay.NewBind(conn.NewDefaultBind(), relay.BindConfig{Key: key, PrivateKey: priv, Server: srv})
	if err != nil {
		return nil, err
	}
	if srv != nil {
		log.Info("relaying for members on the WireGuard port", "port", cfg.WireGuard.ListenPort)
	}
	t.bind = b
	t.choose(&drive.Chooser{Driver: drive.New(b, timing, fresh), RelayPort: plan.publish, MTU: cfg.WireGuard.MTU,
		Rendezvous: natpath.NewRendezvous(id.PublicKey(), 0, 0, 0)})
	t.collectors = append(t.collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meshspan_nat_punches_total",
		Help: "Rendezvous this node took part in (asked or joined): bursts of direct probes sent to a peer at an agreed time.",
	}, func() float64 { return float64(b.Punches()) }))
	return t, nil
}

var (
	_ PathChooser = (*drive.Chooser)(nil)
	_ Traverser   = (*drive.Chooser)(nil)
	_ Traverser   = admitter{}
)

// admitter keeps a relay server's members equal to the agent's peers,
// through full passes (Choose) and change passes (ChooseSome, Forget).
type admitter struct {
	*drive.Chooser // Choose and Traverse
	srv            *relay.Server
	members        map[[32]byte]bool
}

func (a admitter) Choose(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]PathChoice {
	clear(a.members)
	for _, p := range peers {
		a.members[p.PublicKey] = true
	}
	a.admit()
	return a.Chooser.Choose(now, peers, obs)
}

func (a admitter) ChooseSome(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]PathChoice {
	joined := false
	for _, p := range peers {
		joined = joined || !a.members[p.PublicKey]
		a.members[p.PublicKey] = true
	}
	if joined {
		a.admit()
	}
	return a.Chooser.ChooseSome(now, peers, obs)
}

func (a admitter) Forget(keys []wgtypes.Key) {
	for _, k := range keys {
		delete(a.members, k)
	}
	if len(keys) > 0 {
		a.admit() // a member that left may no longer use the relay
	}
	a.Chooser.Forget(keys)
}

func (a admitter) admit() {
	a.srv.SetMembers(slices.Collect(maps.Keys(a.members)))
}
