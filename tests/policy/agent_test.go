package policy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// agentBin is the meshspan-agent under test (internal/testing/agentbin);
// empty without root, where the suites skip.
var agentBin string

func TestMain(m *testing.M) { e2e.Main(m, &agentBin) }

// agentNode is a host running the real agent binary.
type agentNode struct {
	name, dir   string
	ns          *netlab.NS
	ip          netip.Addr // underlay
	cfgPath     string
	stateDir    string
	sock        string
	id          e2e.Identity
	proc        *netlab.Proc
	secrets     clusterkey.Secrets
	discoveries []string
}

// newAgentNode makes a host, plugs it into sw with ip/24, and gives it an
// identity from `meshspan-agent identity` (which needs the link's MAC).
func newAgentNode(t *testing.T, lab *netlab.Lab, sw *netlab.Switch, secrets clusterkey.Secrets, name string, ip netip.Addr) *agentNode {
	t.Helper()
	if agentBin == "" {
		t.Skip("needs root (network namespaces)")
	}
	ns, err := lab.Host(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(ns, underIf, netip.PrefixFrom(ip, 24)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	n := &agentNode{name: name, dir: dir, ns: ns, ip: ip, secrets: secrets,
		cfgPath: filepath.Join(dir, "config.yaml"), stateDir: filepath.Join(dir, "state"), sock: filepath.Join(dir, "agent.sock")}
	if n.id, err = e2e.NewIdentity(ns, agentBin, secrets.ID, n.stateDir); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *agentNode) config() *config.Config {
	return &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: n.name},
		Cluster:    config.Cluster{ID: n.secrets.ID, Secret: n.secrets.Secret},
		Discovery:  config.Discovery{Endpoints: n.discoveries},
	}
}

func (n *agentNode) staticPeer(networks ...string) config.StaticPeer {
	return config.StaticPeer{Name: n.name, PublicKey: n.id.PublicKey, Address: n.id.Address,
		Endpoints: []string{netip.AddrPortFrom(n.ip, wgPort).String()}, Networks: networks}
}

func (n *agentNode) start(t *testing.T, cfg *config.Config) {
	t.Helper()
	data, err := config.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	n.proc, err = n.ns.Start(exec.Command(agentBin, "run", "--config", n.cfgPath, "--state-dir", n.stateDir,
		"--socket", n.sock, "--wireguard", "userspace"))
	if err != nil {
		t.Fatal(err)
	}
}

func (n *agentNode) status() (*agent.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.FetchStatus(ctx, n.sock)
}

// waitUp waits until every node sees every other one up.
func waitUp(t *testing.T, timeout time.Duration, nodes ...*agentNode) {
	t.Helper()
	var why string
	ok := eventually(timeout, func() bool {
		var b strings.Builder
		for _, n := range nodes {
			s, err := n.status()
			if err != nil {
				fmt.Fprintf(&b, "%s: %v; ", n.name, err)
				continue
			}
			for _, m := range nodes {
				if m == n {
					continue
				}
				state := "absent"
				for _, p := range s.Peers {
					if p.Name == m.name {
						state = p.State + " via " + p.Endpoint
					}
				}
				if !strings.HasPrefix(state, "up") {
					fmt.Fprintf(&b, "%s sees %s %s; ", n.name, m.name, state)
				}
			}
		}
		why = b.String()
		return why == ""
	})
	if !ok {
		var out strings.Builder
		for _, n := range nodes {
			if n.proc != nil {
				o := n.proc.Output()
				if len(o) > 2000 {
					o = o[len(o)-2000:]
				}
				fmt.Fprintf(&out, "\n--- %s ---\n%s", n.name, o)
			}
		}
		t.Fatalf("mesh not up within %s: %s%s", timeout, why, out.String())
	}
}

// startDiscovery runs `meshspan-agent discovery serve` in ns on addr:3000.
func startDiscovery(t *testing.T, ns *netlab.NS, addr netip.Addr) string {
	t.Helper()
	p, url, err := e2e.StartDiscovery(ns, agentBin, netip.AddrPortFrom(addr, 3000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- discovery service output ---\n%s", p.Output())
		}
	})
	return url
}

func (n *agentNode) peerStatus(t *testing.T, name string) agent.PeerStatus {
	t.Helper()
	s, err := n.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("%s does not list peer %s", n.name, name)
	return agent.PeerStatus{}
}

// agentLab is a lab with a WAN switch and fresh cluster secrets, for tests
// that run real agents.
func agentLab(t *testing.T) (*netlab.Lab, clusterkey.Secrets, *netlab.Switch) {
	t.Helper()
	if agentBin == "" {
		t.Skip("needs root (network namespaces)")
	}
	lab := netlab.NewT(t)
	secrets, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	wan, err := lab.Switch("wan")
	if err != nil {
		t.Fatal(err)
	}
	return lab, secrets, wan
}
