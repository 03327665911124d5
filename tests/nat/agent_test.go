package nat

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

type agentNode struct{ *e2e.Node }

// peer is how n sees the named peer now (zero when it cannot tell).
func (n *agentNode) peer(name string) agent.PeerStatus {
	if s, err := n.Status(); err == nil {
		if p := e2e.Peer(s, name); p != nil {
			return *p
		}
	}
	return agent.PeerStatus{}
}

// TestAgentsBehindNAT runs real meshspan-agent processes: a and b behind
// NAT gateways, r on the WAN with relay.enabled, and a discovery service.
// a and b find each other through discovery, and r as a relay because r
// announces a relay port in its sealed discovery data. Not yet direct, a
// and b ask each other to meet through that data and probe each other at
// the agreed moment. Behind port-preserving NAT they connect directly;
// behind random-port NAT they fail to punch through and talk through r.
// Status says which, and why. With relay disabled on every node, behind
// random-port NAT, status says there is no reachable endpoint and why. A
// watcher holding the cluster secret reads the traversal data back.
func TestAgentsBehindNAT(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nat       netlab.NATMode
		strict    bool   // UDP mappings expire within a second
		relayPort uint16 // r's relay.port; 0: the WireGuard port
		path      string
	}{{"port-preserving", netlab.NATPreservePorts, false, 0, "direct"}, {"port-preserving-strict", netlab.NATPreservePorts, true, 0, "direct"},
		{"random", netlab.NATFullyRandomPorts, false, 0, "relayed"}, {"random-relay-own-port", netlab.NATFullyRandomPorts, false, 3478, "relayed"},
		{"random-no-relay", netlab.NATFullyRandomPorts, false, 0, "no-path"}} {
		t.Run(tc.name, func(t *testing.T) { agentsBehindNAT(t, tc.nat, tc.strict, tc.relayPort, tc.path) })
	}
}

func agentsBehindNAT(t *testing.T, mode netlab.NATMode, strict bool, relayPort uint16, path string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	bin, err := agentbin.Path()
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.NewT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lanA, err := lab.Switch("lana")
	must(err)
	lanB, err := lab.Switch("lanb")
	must(err)
	wan, err := lab.Switch("wan")
	must(err)
	ra, err := lab.NATRouter("nata", lanA, wan, pfx("192.0.2.1/24"), pfx("203.0.113.1/24"), mode)
	must(err)
	rb, err := lab.NATRouter("natb", lanB, wan, pfx("198.51.100.1/24"), pfx("203.0.113.2/24"), mode)
	must(err)
	must(gatewayFirewall(ra))
	must(gatewayFirewall(rb))
	if strict {
		// Handshakes each side retries on its own schedule rarely pass
		// within a second of each other's; the rendezvous makes them.
		for _, r := range []*netlab.NS{ra, rb} {
			out, err := r.Exec(context.Background(), "sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout=1")
			if err != nil {
				t.Fatalf("%s: %v: %s", r.Name(), err, out)
			}
		}
	}

	secrets, err := clusterkey.Generate()
	must(err)
	dir := t.TempDir()
	host := func(name string, sw *netlab.Switch, addr, gw string) *netlab.NS {
		ns, err := lab.Host(name)
		must(err)
		must(sw.Attach(ns, "eth0", netip.PrefixFrom(ip(addr), 24)))
		if gw != "" {
			must(ns.DefaultRoute(ip(gw)))
		}
		return ns
	}
	agentHost := func(name string, sw *netlab.Switch, addr, gw string) *agentNode {
		return &agentNode{e2e.NewNode(t, bin, host(name, sw, addr, gw), name, filepath.Join(dir, name), secrets.ID)}
	}
	disc := host("disc", wan, "203.0.113.3", "")
	_, _, err = e2e.StartDiscovery(disc, bin, netip.MustParseAddrPort("203.0.113.3:3000"))
	must(err)

	nodes := []*agentNode{agentHost("a", lanA, "192.0.2.10", "192.0.2.1"), agentHost("b", lanB, "198.51.100.10", "198.51.100.1"), agentHost("r", wan, "203.0.113.21", "")}
	for _, n := range nodes {
		cfg := &config.Config{
			APIVersion: config.APIVersion,
			Node:       config.Node{Name: n.Name},
			Cluster:    config.Cluster{ID: secrets.ID, Secret: secrets.Secret},
			Discovery:  config.Discovery{Endpoints: []string{"http://203.0.113.3:3000/"}},
			Relay:      relayOf(n.Name == "r" && path != "no-path", relayPort),
		}
		n.WriteConfig(t, cfg)
	}
	for _, n := range nodes {
		n.Start(t, "--wireguard", "userspace", "--no-host-policy")
	}
	a, b := nodes[0], nodes[1]
	watch := watchTraversal(t, disc, "203.0.113.3:3000", secrets.ID, secrets.Secret)
	outputs := func() string { return e2e.Outputs(2500, a.Node, b.Node, nodes[2].Node) }

	var pa, pb agent.PeerStatus
	if err := e2e.Poll(60*time.Second, 200*time.Millisecond, func() (bool, string) {
		pa, pb = a.peer("b"), b.peer("a")
		via := map[string]string{"relayed": "r", "direct": ""}[path]
		if pa.Path == path && pa.Via == via && pa.State == "up" && pb.Path == path && pb.Via == via && pb.State == "up" {
			t.Logf("a sees b: %s %s at %s (%s)", pa.Path, pa.Via, pa.Endpoint, pa.PathReason)
			return true, ""
		}
		if path == "no-path" && pa.Path == path && pb.Path == path && pa.State != "up" && pb.State != "up" {
			return true, ""
		}
		watch.poll()
		return false, ""
	}); err != nil {
		t.Fatalf("a sees b %+v\nb sees a %+v\n%s", pa, pb, outputs())
	}
	watch.poll()
	// Relaying is announced in the sealed discovery data, by r only.
	for _, n := range nodes {
		want := uint16(0)
		if n.Name == "r" && path != "no-path" {
			want = cmp.Or(relayPort, 51820)
		}
		if got := watch.relayPort[n.ID.PublicKey]; got != want {
			t.Errorf("%s publishes relay port %d, want %d", n.Name, got, want)
		}
	}
	// Neither a nor b could reach the other at first: one asked the other
	// to meet through the discovery data, and both took part.
	if !watch.asked(a.ID.PublicKey, b.ID.PublicKey) && !watch.asked(b.ID.PublicKey, a.ID.PublicKey) {
		t.Errorf("no rendezvous between a and b was published")
	}
	for _, n := range []*agentNode{a, b} {
		if p := metric(t, n, "meshspan_nat_punches_total"); p < 1 {
			t.Errorf("%s: meshspan_nat_punches_total = %v, want >= 1", n.Name, p)
		}
	}
	if path == "no-path" {
		// The table says so, and why, instead of a peer silently flapping.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := a.NS.Exec(ctx, bin, "status", "--socket", a.Socket())
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		for _, want := range []string{"no reachable endpoint", "no-path", "b: no reachable endpoint: ", "no relay member is available"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("a's status table lacks %q:\n%s", want, out)
			}
		}
		return
	}
	// Traffic between the mesh addresses crosses the relay.
	var c *net.UDPConn
	must(b.NS.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip(b.ID.Address), 7007)))
		return err
	}))
	defer c.Close()
	var s *net.UDPConn
	must(a.NS.Do(func() (err error) { s, err = net.ListenUDP("udp6", nil); return err }))
	defer s.Close()
	got := make([]byte, 100)
	for i := 0; ; i++ {
		s.WriteToUDPAddrPort(marker, netip.AddrPortFrom(ip(b.ID.Address), 7007))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if k, _, err := c.ReadFromUDPAddrPort(got); err == nil && string(got[:k]) == string(marker) {
			break
		}
		if i == 20 {
			t.Fatalf("a -> b (%s): nothing arrived\n%s", path, outputs())
		}
	}
	if path == "direct" {
		return
	}
	// The relay counts what it forwarded, on r's /metrics.
	if forwarded := metric(t, nodes[2], "meshspan_relay_forwarded_packets_total"); forwarded < 2 {
		t.Errorf("r's /metrics: meshspan_relay_forwarded_packets_total = %v, want >= 2", forwarded)
	}
}

// metric reads one sample from n's /metrics (on its status socket).
func metric(t *testing.T, n *agentNode, name string) float64 {
	t.Helper()
	body, err := n.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, l := range strings.Split(body, "\n") {
		if s, ok := strings.CutPrefix(l, name+" "); ok {
			fmt.Sscan(s, &v)
		}
	}
	return v
}

// traversalWatch is a discovery client holding the cluster secret, as a
// member would: it reads the NAT-traversal data members publish sealed.
type traversalWatch struct {
	c         *discovery.Client
	relayPort map[string]uint16          // by public key
	meetings  map[string]map[string]bool // asker -> asked, by public key
}

func watchTraversal(t *testing.T, ns *netlab.NS, addr, clusterID, secret string) *traversalWatch {
	t.Helper()
	c, err := discovery.NewClient(discovery.ClientOptions{Endpoints: []string{"http://" + addr + "/"}, ClusterID: clusterID,
		ClusterSecret: secret, AffiliateID: "traversal-watch", TTL: time.Minute,
		// The service listens inside ns: open the connection there.
		Dialer: func(ctx context.Context, addr string) (net.Conn, error) { return ns.DialContext(ctx, "tcp", addr) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &traversalWatch{c: c, relayPort: map[string]uint16{}, meetings: map[string]map[string]bool{}}
}

// poll records what members publish now: meetings are published only for
// a few seconds, so the test polls while it waits for the paths.
func (w *traversalWatch) poll() {
	for _, a := range w.c.Affiliates() {
		w.relayPort[a.PublicKey] = a.Traversal.RelayPort
		for _, r := range a.Traversal.Rendezvous {
			if w.meetings[a.PublicKey] == nil {
				w.meetings[a.PublicKey] = map[string]bool{}
			}
			w.meetings[a.PublicKey][wgtypes.Key(r.Peer).String()] = true
		}
	}
}

func (w *traversalWatch) asked(asker, asked string) bool { return w.meetings[asker][asked] }

// relayOf is a node's relay config: on, on port (0: the WireGuard port), or off.
func relayOf(on bool, port uint16) config.Relay {
	if !on {
		return config.Relay{}
	}
	return config.Relay{Enabled: true, Port: int(port)}
}
