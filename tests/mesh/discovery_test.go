package mesh

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// TestDiscoveryMesh: three agents that know only the discovery service
// find each other through it (sealed affiliates, real gRPC), form the
// mesh, publish their underlay endpoints, and a clean shutdown removes the
// interface, the host policy and the affiliate.
func TestDiscoveryMesh(t *testing.T) {
	c := newCluster(t, 3, true)
	c.discoveryMesh()
	c.startAll()
	c.waitAllUp(c.nodes, 20*time.Second)

	for _, n := range c.nodes {
		for _, m := range c.nodes {
			if n != m {
				if err := n.ping(m.ID.Address); err != nil {
					t.Errorf("ping %s -> %s: %v", n.Name, m.Name, err)
				}
			}
		}
	}
	if err := transfer(c.nodes[2], c.nodes[0], 2<<20); err != nil {
		t.Fatal(err)
	}
	n1, n3 := c.nodes[0], c.nodes[2]
	s1, err := n1.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !s1.Discovery || !slices.Contains(s1.Endpoints, n1.ip.String()+":51820") {
		t.Errorf("n1 publishes %v (discovery %t); want its underlay endpoint %s:51820", s1.Endpoints, s1.Discovery, n1.ip)
	}
	if p := e2e.Peer(s1, "n3"); p == nil || p.AffiliateID != n3.ID.AffiliateID || !slices.Contains(p.Candidates, n3.ip.String()+":51820") {
		t.Errorf("n1's view of n3 = %+v; want affiliate %s with candidate %s:51820", p, n3.ID.AffiliateID, n3.ip)
	}

	// Clean shutdown of n3.
	if err := n3.Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n3.Proc.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("n3 did not exit within 15 s of SIGTERM:\n%s", n3.Proc.Output())
	}
	if err := n3.Proc.Wait(); err != nil {
		t.Errorf("n3 exited with %v after SIGTERM; want 0:\n%s", err, n3.Proc.Output())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := n3.NS.Exec(ctx, "ip", "link", "show", "meshspan0"); err == nil {
		t.Errorf("meshspan0 still exists in n3 after shutdown:\n%s", out)
	}
	if out, err := n3.NS.Exec(ctx, "ip", "-6", "rule", "list"); err != nil || strings.Contains(string(out), "lookup 180") {
		t.Errorf("n3 policy rules after shutdown (%v):\n%s", err, out)
	}
	if out, err := n3.NS.Exec(ctx, "nft", "list", "tables"); err == nil && strings.Contains(string(out), "meshspan") {
		t.Errorf("n3's nftables table still there after shutdown:\n%s", out)
	}
	// Its affiliate is deleted: the others drop it as a peer (not just down).
	if err := e2e.Poll(10*time.Second, 100*time.Millisecond, func() (bool, string) {
		for _, n := range c.nodes[:2] {
			s, err := n.Status()
			if err != nil {
				return false, err.Error()
			}
			if p := e2e.Peer(s, "n3"); p != nil {
				return false, n.Name + " still lists n3 as " + p.State
			}
		}
		return true, ""
	}); err != nil {
		t.Fatal(err)
	}
}
