package agent

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath/drive"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

func traversalConfig(t *testing.T, r config.Relay) *config.Config {
	t.Helper()
	sec, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{APIVersion: config.APIVersion, Cluster: config.Cluster{ID: sec.ID, Secret: sec.Secret}, Relay: r}
	cfg.ApplyDefaults()
	return cfg
}

func TestPlanTraversal(t *testing.T) {
	kernelOK := func() error { return nil }
	noModule := func() error { return fmt.Errorf("probe: %w", wg.ErrKernelUnavailable) }
	mustNotProbe := func() error { t.Error("probed the kernel although the choice was already made"); return nil }
	for _, c := range []struct {
		name    string
		relay   config.Relay
		mode    wg.Mode
		probe   func() error
		want    traversalPlan
		wantErr string
	}{
		{name: "auto, kernel can", mode: wg.ModeAuto, probe: kernelOK,
			want: traversalPlan{mode: wg.ModeKernel, why: "the kernel can create a WireGuard link"}},
		{name: "auto, no module", mode: wg.ModeAuto, probe: noModule,
			want: traversalPlan{mode: wg.ModeUserspace, why: "the kernel has no WireGuard module"}},
		{name: "asked for", mode: wg.ModeKernel, probe: mustNotProbe,
			want: traversalPlan{mode: wg.ModeKernel, why: "asked for with --wireguard=kernel"}},
		{name: "relay on the WireGuard port needs userspace", relay: config.Relay{Enabled: true}, mode: wg.ModeAuto, probe: mustNotProbe,
			want: traversalPlan{mode: wg.ModeUserspace, why: "relaying on the WireGuard port needs the userspace transport", relay: true, publish: 51820}},
		{name: "relay.port equal to the WireGuard port", relay: config.Relay{Enabled: true, Port: 51820}, mode: wg.ModeUserspace, probe: mustNotProbe,
			want: traversalPlan{mode: wg.ModeUserspace, why: "asked for with --wireguard=userspace", relay: true, publish: 51820}},
		{name: "relay on its own port leaves the kernel", relay: config.Relay{Enabled: true, Port: 3478}, mode: wg.ModeAuto, probe: kernelOK,
			want: traversalPlan{mode: wg.ModeKernel, why: "the kernel can create a WireGuard link", relay: true, ownPort: 3478, publish: 3478}},
		{name: "kernel asked for, relay on its port", relay: config.Relay{Enabled: true}, mode: wg.ModeKernel, probe: mustNotProbe,
			wantErr: "set relay.port to another port"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := planTraversal(traversalConfig(t, c.relay), c.mode, c.probe)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("plan = %+v, %v\n want %+v", got, err, c.want)
			}
		})
	}
}

// freeUDPPort is a loopback UDP port nothing listens on (a moment ago).
func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestOpenTraversal(t *testing.T) {
	id := Identity{AffiliateID: "self"}
	var err error
	if id.PrivateKey, err = wgtypes.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	collectorNames := func(tr *traversal) string {
		var b strings.Builder
		for _, c := range tr.collectors {
			fmt.Fprintf(&b, "%T ", c)
		}
		return b.String()
	}

	t.Run("userspace: relay Bind, rendezvous", func(t *testing.T) {
		cfg := traversalConfig(t, config.Relay{})
		tr, err := openTraversal(traversalPlan{mode: wg.ModeUserspace}, cfg, id, 0, log)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.close()
		if _, ok := tr.bind.(*relay.Bind); !ok {
			t.Errorf("bind = %T, want *relay.Bind", tr.bind)
		}
		c, ok := tr.paths.(*drive.Chooser)
		if !ok || c.Rendezvous == nil || c.RelayPort != 0 || c.MTU != cfg.WireGuard.MTU {
			t.Errorf("paths = %#v, want a drive.Chooser with rendezvous, no relay port", tr.paths)
		}
		if len(tr.collectors) != 1 {
			t.Errorf("collectors %s: want the punch counter alone", collectorNames(tr))
		}
	})

	t.Run("relay on the WireGuard port: admitted members", func(t *testing.T) {
		cfg := traversalConfig(t, config.Relay{Enabled: true})
		tr, err := openTraversal(traversalPlan{mode: wg.ModeUserspace, relay: true, publish: 51820}, cfg, id, 0, log)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.close()
		a, ok := tr.paths.(admitter)
		if !ok || a.srv == nil || a.Chooser.RelayPort != 51820 {
			t.Fatalf("paths = %#v, want the chooser behind the relay server's admission", tr.paths)
		}
		// Change passes admit the members that join and drop those that
		// leave, as full passes do.
		k1, k2 := testKey(t), testKey(t)
		a.Choose(time.Now(), []mesh.Peer{{PublicKey: k1}}, nil)
		if _, ok := tr.paths.(PartialChooser); !ok {
			t.Fatal("the admitted chooser cannot take change passes")
		}
		a.ChooseSome(time.Now(), []mesh.Peer{{PublicKey: k2}}, nil)
		a.Forget([]wgtypes.Key{k1})
		if len(a.members) != 1 || !a.members[k2] {
			t.Errorf("admitted %v after k1 left and k2 joined: want k2 alone", a.members)
		}
		if len(tr.collectors) < 2 {
			t.Errorf("collectors %s: want the relay's and the punch counter", collectorNames(tr))
		}
	})

	t.Run("kernel: loopback proxy, relay on its own port", func(t *testing.T) {
		port := freeUDPPort(t)
		cfg := traversalConfig(t, config.Relay{Enabled: true, Port: int(port)})
		tr, err := openTraversal(traversalPlan{mode: wg.ModeKernel, relay: true, ownPort: port, publish: port}, cfg, id, 0, log)
		if err != nil {
			t.Fatal(err)
		}
		if tr.bind != nil {
			t.Errorf("kernel WireGuard got a Bind %T", tr.bind)
		}
		a, ok := tr.paths.(admitter)
		if !ok || a.Chooser.Rendezvous != nil || a.Chooser.RelayPort != port {
			t.Errorf("paths = %#v, want the admitted chooser without rendezvous, publishing %d", tr.paths, port)
		}
		// The relay holds its port until closed.
		if c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)}); err == nil {
			c.Close()
			t.Errorf("relay port %d is free while the traversal is open", port)
		}
		tr.close()
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
		if err != nil {
			t.Errorf("relay port %d still taken after close: %v", port, err)
		} else {
			c.Close()
		}
	})

	t.Run("taken relay port", func(t *testing.T) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		cfg := traversalConfig(t, config.Relay{Enabled: true, Port: int(port)})
		if _, err := openTraversal(traversalPlan{mode: wg.ModeKernel, relay: true, ownPort: port, publish: port}, cfg, id, 0, log); err == nil {
			t.Error("opened a relay on a taken port")
		}
	})

	t.Run("bad secret", func(t *testing.T) {
		cfg := traversalConfig(t, config.Relay{})
		cfg.Cluster.Secret = "short"
		_, err := openTraversal(traversalPlan{mode: wg.ModeUserspace}, cfg, id, 0, log)
		if err == nil || !strings.Contains(err.Error(), "cluster.secret") {
			t.Errorf("err = %v, want one naming cluster.secret", err)
		}
	})
}

// Options.NATTraversal loads the identity once (Run's) and refuses a Bind
// or PathChooser it would replace.
func TestNATTraversalOption(t *testing.T) {
	cfg := traversalConfig(t, config.Relay{})
	_, err := newAgent(Options{Config: cfg, StateDir: t.TempDir(), MemoryLimit: -1, NATTraversal: true, Paths: &traversalRecorder{},
		MAC: func() (net.HardwareAddr, error) { return randomMAC(), nil }})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("NATTraversal with Paths: err = %v", err)
	}
	a, err := newAgent(Options{Config: cfg, StateDir: t.TempDir(), MemoryLimit: -1, NATTraversal: true, WireGuard: wg.ModeAuto,
		MAC: func() (net.HardwareAddr, error) { return randomMAC(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	a.probeKernel = func() error { return wg.ErrKernelUnavailable }
	var undo cleanups
	if err := a.startTraversal(&undo); err != nil {
		t.Fatal(err)
	}
	defer undo.run()
	if a.opts.WireGuard != wg.ModeUserspace || a.opts.Bind == nil || a.opts.Paths == nil || len(a.opts.Collectors) == 0 {
		t.Errorf("after startTraversal: mode %q, bind %T, paths %T, %d collectors", a.opts.WireGuard, a.opts.Bind, a.opts.Paths, len(a.opts.Collectors))
	}
}
