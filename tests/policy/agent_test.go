package policy

import (
	"net/netip"
	"path/filepath"
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

// agentNode is a host running the real agent binary (e2e.Node).
type agentNode struct {
	*e2e.Node
	ip          netip.Addr // underlay
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
	return &agentNode{Node: e2e.NewNode(t, agentBin, ns, name, filepath.Join(t.TempDir(), name), secrets.ID), ip: ip, secrets: secrets}
}

func (n *agentNode) config() *config.Config {
	return &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: n.Name},
		Cluster:    config.Cluster{ID: n.secrets.ID, Secret: n.secrets.Secret},
		Discovery:  config.Discovery{Endpoints: n.discoveries},
	}
}

func (n *agentNode) staticPeer(networks ...string) config.StaticPeer {
	return config.StaticPeer{Name: n.Name, PublicKey: n.ID.PublicKey, Address: n.ID.Address,
		Endpoints: []string{netip.AddrPortFrom(n.ip, wgPort).String()}, Networks: networks}
}

func (n *agentNode) start(t *testing.T, cfg *config.Config) {
	t.Helper()
	n.WriteConfig(t, cfg)
	n.Start(t, "--wireguard", "userspace")
}

// waitUp waits until every node sees every other one up.
func waitUp(t *testing.T, timeout time.Duration, nodes ...*agentNode) {
	t.Helper()
	agents := make([]*e2e.Node, len(nodes))
	for i, n := range nodes {
		agents[i] = n.Node
	}
	if err := e2e.Poll(timeout, 20*time.Millisecond, func() (bool, string) { return e2e.AllUp(agents...) }); err != nil {
		t.Fatalf("mesh not up: %v", err)
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
	s, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if p := e2e.Peer(s, name); p != nil {
		return *p
	}
	t.Fatalf("%s does not list peer %s", n.Name, name)
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
