package mesh

import (
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// TestEndpointCycling: n3's first advertised endpoint leads nowhere. n3
// knows no endpoint of the others, so it cannot reach out and be roamed to;
// n1 and n2 must move on to n3's second endpoint by themselves.
func TestEndpointCycling(t *testing.T) {
	c := newCluster(t, 3, false)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	const dead = "192.0.2.250:51820" // on the underlay, but no host answers
	good := n3.ip.String() + ":51820"
	for _, n := range []*node{n1, n2} {
		cfg := n.baseConfig()
		other := n2
		if n == n2 {
			other = n1
		}
		cfg.StaticPeers = append(cfg.StaticPeers, other.staticPeer(), n3.staticPeer(dead, good))
		n.writeConfig(cfg)
	}
	cfg := n3.baseConfig()
	cfg.StaticPeers = append(cfg.StaticPeers, n1.staticPeer([]string{}...), n2.staticPeer([]string{}...))
	n3.writeConfig(cfg)

	c.startAll()
	start := time.Now()
	c.waitAllUp(c.nodes, 20*time.Second)
	took := time.Since(start)
	t.Logf("all peers up %.1f s after start, across one dead endpoint (endpointProbe 4 s)", took.Seconds())
	if took > 15*time.Second {
		t.Errorf("failover to the working endpoint took %s; want < 15 s", took)
	}
	for _, n := range []*node{n1, n2} {
		s, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		p := e2e.Peer(s, "n3")
		if p.Endpoint != good || p.EndpointChanges < 2 {
			t.Errorf("%s uses %s for n3 after %d endpoint changes; want %s after at least 2 (dead one first)", n.Name, p.Endpoint, p.EndpointChanges, good)
		}
		if len(p.Candidates) < 2 || p.Candidates[0] != dead {
			t.Errorf("%s's candidates for n3 = %v; want %s first", n.Name, p.Candidates, dead)
		}
	}
	if err := n1.ping(n3.ID.Address); err != nil {
		t.Errorf("ping n1 -> n3 after failover: %v", err)
	}
}
