package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath/drive"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// traversal is NAT traversal for `run`: the relay server when relay.enabled,
// and the client side (relay Bind or, for kernel WireGuard, the loopback
// proxy) with natpath choosing each peer's path.
type traversal struct {
	bind       conn.Bind
	mode       wg.Mode // the back end to open: kernel or userspace, never auto
	modeWhy    string
	paths      agent.PathChooser
	collectors []prometheus.Collector
	closers    []func()
	server     *relay.Server // when relaying: only current peers may register
}

// admitting wraps c so that the relay server, if any, admits exactly the
// agent's current peers before every path choice.
func (t *traversal) admitting(c *drive.Chooser) agent.PathChooser {
	if t.server == nil {
		return c
	}
	return admitter{c, t.server}
}

// admitter keeps a relay server's members equal to the agent's peers.
type admitter struct {
	*drive.Chooser // Choose and Traverse
	srv            *relay.Server
}

var (
	_ agent.PathChooser = (*drive.Chooser)(nil)
	_ agent.Traverser   = (*drive.Chooser)(nil)
	_ agent.Traverser   = admitter{}
)

func (a admitter) Choose(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]agent.PathChoice {
	keys := make([][32]byte, 0, len(peers))
	for _, p := range peers {
		keys = append(keys, p.PublicKey)
	}
	a.srv.SetMembers(keys)
	return a.Chooser.Choose(now, peers, obs)
}

func (t *traversal) close() {
	for i := len(t.closers) - 1; i >= 0; i-- {
		t.closers[i]()
	}
}

// mark, when not 0, is set on the relay's sockets that send to members
// outside WireGuard's own socket (the host policy's firewall mark: without
// it they would be routed into the mesh).
func newTraversal(cfg *config.Config, mode wg.Mode, stateDir string, mark uint32, log *slog.Logger) (*traversal, error) {
	secret, err := clusterkey.Key(cfg.Cluster.Secret)
	if err != nil {
		return nil, fmt.Errorf("relay: config cluster.secret: %w", err)
	}
	key, err := relay.DeriveKey(secret)
	if err != nil {
		return nil, err
	}
	if stateDir == "" {
		stateDir = agent.DefaultStateDir
	}
	id, err := agent.LoadIdentity(stateDir, cfg.Cluster.ID, agent.FirstPhysicalMAC)
	if err != nil {
		return nil, err
	}
	priv := [32]byte(id.PrivateKey)
	t := &traversal{}
	timing := natpath.Timing{Probe: cfg.Health.EndpointProbe.D(), DownAfter: cfg.Health.DownAfter.D()}
	fresh := 3 * relay.DefaultRegisterInterval

	var srv *relay.Server
	var relayPort uint16 // published: where members reach this node's relay
	if cfg.Relay.Enabled {
		relayPort = uint16(cmp.Or(cfg.Relay.Port, cfg.WireGuard.ListenPort))
		srv = relay.NewServer(key, priv, relay.WithMark(mark))
		t.collectors = srv.Collectors()
		t.server = srv
	}
	ownPort := cfg.Relay.Port != 0 && cfg.Relay.Port != cfg.WireGuard.ListenPort
	// Decide the back end once, here, because the transport depends on it.
	resolved, why := wg.Resolve(mode, srv != nil && !ownPort, wg.ProbeKernel)
	t.mode, t.modeWhy = resolved, why
	kernel := resolved == wg.ModeKernel
	if srv != nil && kernel && !ownPort {
		return nil, errors.New("relay: kernel WireGuard owns the WireGuard port; set relay.port to another port (and open it in the cloud firewall), or run with --wireguard=userspace")
	}
	if srv != nil && ownPort {
		l, err := srv.ListenUDP(uint16(cfg.Relay.Port))
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() { _ = l.Close() })
		log.Info("relaying for members", "port", cfg.Relay.Port)
		srv = nil // not on the WireGuard port
	}

	if kernel {
		// The kernel cannot take a Bind: relayed peers point at a loopback
		// proxy.
		p, err := relay.NewProxy(key, priv, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cfg.WireGuard.ListenPort)), ":0", 0)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() { p.Close() })
		if mark != 0 {
			if err := p.SetMark(mark); err != nil {
				t.close()
				return nil, err
			}
		}
		t.paths = t.admitting(&drive.Chooser{Driver: drive.New(p, timing, fresh), RelayPort: relayPort, MTU: cfg.WireGuard.MTU})
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
	t.paths = t.admitting(&drive.Chooser{Driver: drive.New(b, timing, fresh), RelayPort: relayPort, MTU: cfg.WireGuard.MTU,
		Rendezvous: natpath.NewRendezvous(id.PublicKey(), 0, 0, 0)})
	t.collectors = append(t.collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meshspan_nat_punches_total",
		Help: "Rendezvous this node took part in (asked or joined): bursts of direct probes sent to a peer at an agreed time.",
	}, func() float64 { return float64(b.Punches()) }))
	return t, nil
}
