package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// Run runs the agent until ctx ends, then removes everything it made (the
// interface, its routes and firewall table, its discovery affiliate). An
// error before the mesh is up leaves nothing behind and names the cause.
//
// Run starts in steps, each undone in reverse order on the way out: NAT
// traversal (Options.NATTraversal), the status socket, the WireGuard device, the host policy, the HTTP servers,
// the discovery client; then it reconciles until ctx ends.
func Run(ctx context.Context, opts Options) error {
	a, err := newAgent(opts)
	if err != nil {
		return err
	}
	var undo cleanups
	defer undo.run()
	// Everything above was checks and files; from here on the host changes.
	if err := a.startTraversal(&undo); err != nil {
		return err
	}
	l, err := a.listen(&undo)
	if err != nil {
		return err
	}
	if err := a.openDevice(&undo); err != nil {
		return err
	}
	if err := a.openPolicy(&undo); err != nil {
		return err
	}
	if err := a.serve(l, &undo); err != nil {
		return err
	}
	changes := a.startDiscovery(&undo)
	a.loop(ctx, changes)
	return nil
}

// cleanups undoes Run's steps, last first.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }

// run is deferred with a pointer receiver, so it sees what was added after
// the defer statement.
func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}

// startTraversal sets up NAT traversal when Options.NATTraversal asks for
// it: it decides the back end, and gives the device its transport and the
// agent its path chooser.
func (a *agent) startTraversal(undo *cleanups) error {
	if !a.opts.NATTraversal {
		return nil
	}
	plan, err := planTraversal(a.cfg, a.opts.WireGuard, a.probeKernel)
	if err != nil {
		return err
	}
	var mark uint32 // what the host policy exempts from the mesh
	if !a.opts.NoHostPolicy {
		mark = a.cfg.Routing.FirewallMark
	}
	t, err := openTraversal(plan, a.cfg, a.id, mark, a.log)
	if err != nil {
		return err
	}
	undo.add(t.close)
	a.opts.Bind, a.opts.Paths = t.bind, t.paths
	a.opts.WireGuard, a.opts.WireGuardWhy = plan.mode, plan.why
	a.opts.Collectors = append(a.opts.Collectors, t.collectors...)
	return nil
}

// listen opens the status socket.
func (a *agent) listen(undo *cleanups) (net.Listener, error) {
	l, err := listenSocket(a.opts.Socket)
	if err != nil {
		return nil, err
	}
	undo.add(func() { l.Close(); removeSocket(a.opts.Socket) })
	return l, nil
}

// openDevice creates the mesh interface with this node's identity.
func (a *agent) openDevice(undo *cleanups) error {
	dev, err := a.opts.OpenDevice(wg.Options{
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
	a.dev = dev
	undo.add(func() {
		if err := a.dev.Close(); err != nil {
			a.log.Warn("close WireGuard device", "err", err)
		}
	})
	a.log.Info("mesh interface up", "interface", a.dev.Name(), "mode", a.dev.Mode(), "why", a.opts.WireGuardWhy,
		"address", a.id.Address, "publicKey", a.id.PublicKey().String(), "port", a.dev.ListenPort())
	return nil
}

// openPolicy takes the host's routing and firewall policy (none with
// NoHostPolicy); the first reconcile pass applies it.
func (a *agent) openPolicy(undo *cleanups) error {
	a.policy = a.opts.Policy
	if a.policy == nil && !a.opts.NoHostPolicy {
		m, err := netpolicy.New(netpolicy.Options{})
		if err != nil {
			return err
		}
		a.policy = m
	}
	if a.policy != nil {
		undo.add(func() {
			if err := a.policy.Close(); err != nil {
				a.log.Warn("remove host policy", "err", err)
			}
		})
	}
	return nil
}

// serve serves status and metrics on the socket, and metrics alone on
// MetricsListen when set.
func (a *agent) serve(l net.Listener, undo *cleanups) error {
	socketHandler, metricsHandler := a.handlers()
	srv := &http.Server{Handler: socketHandler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	undo.add(func() { srv.Close() })
	if a.opts.MetricsListen == "" {
		return nil
	}
	ml, err := net.Listen("tcp", a.opts.MetricsListen)
	if err != nil {
		return fmt.Errorf("agent: metrics: listen on %s: %w (choose a free --metrics-listen address)", a.opts.MetricsListen, err)
	}
	msrv := &http.Server{Handler: metricsHandler, ReadHeaderTimeout: 5 * time.Second}
	go msrv.Serve(ml)
	undo.add(func() { msrv.Close() })
	return nil
}

// startDiscovery runs the discovery client, if any, and returns its change
// notifications (a channel that never fires without one). On the way out
// the client deletes this node's affiliate, and the cleanup waits for that
// before the interface goes.
func (a *agent) startDiscovery(undo *cleanups) <-chan struct{} {
	if a.disco == nil {
		return make(<-chan struct{})
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.disco.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("discovery stopped", "err", err)
		}
	}()
	undo.add(func() {
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			a.log.Warn("discovery did not stop within 10 s; the affiliate may linger until its TTL")
		}
	})
	return a.disco.Changes()
}

// loop reconciles once, reports ready, then again on every discovery
// change and tick until ctx ends.
func (a *agent) loop(ctx context.Context, changes <-chan struct{}) {
	a.pass(ctx, false)
	due := time.Now().Add(a.nextTick()) // when tick fires
	tick := time.NewTimer(time.Until(due))
	defer tick.Stop()
	rearm := func(d time.Duration) { due = time.Now().Add(d); tick.Reset(d) }
	if err := sdNotify("READY=1"); err != nil {
		a.log.Warn("notify systemd", "err", err)
	}
	if a.opts.Ready != nil {
		a.opts.Ready()
	}
	for {
		byChange := false
		select {
		case <-ctx.Done():
			a.log.Info("shutting down: removing the interface, host policy and affiliate")
			if err := sdNotify("STOPPING=1"); err != nil {
				a.log.Warn("notify systemd", "err", err)
			}
			return
		case <-changes:
			byChange = true
			if wait := a.paceWait(time.Now()); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					continue
				case <-t.C:
				}
				select {
				case <-changes: // taken by this pass
				default:
				}
			}
		case <-tick.C:
			if time.Since(a.lastPass) < a.opts.Tick && !a.handshook() {
				// A converging probe that saw no handshake: no pass.
				rearm(a.nextTick())
				continue
			}
		}
		if !a.pass(ctx, byChange) {
			// A change pass leaves the tick where it was (full passes keep
			// their pace whatever the changes), unless a peer it added
			// starts a converging phase sooner.
			if time.Until(due) > min(convergeTick, a.opts.Tick) {
				if d := a.nextTick(); time.Until(due) > d {
					rearm(d)
				}
			}
			continue
		}
		if !a.opts.SharedProcess {
			a.trimWhenIdle()
		}
		rearm(a.nextTick())
	}
}
