package policy

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// TestDiscoveryOnAMember: the discovery service runs on a member, pub, at
// its underlay address, and every agent runs host policy, which routes
// members' underlay addresses into the mesh and fails closed for members
// that are down. With WireGuard between pub and other blocked, each sees
// the other down and would blackhole traffic to it; discovery still flows
// both ways (the members' client connections and the service's replies
// carry WireGuard's firewall mark and stay on the underlay), so other
// learns of late, a node that joins now, and the two connect.
func TestDiscoveryOnAMember(t *testing.T) {
	lab, secrets, wan := agentLab(t)
	pub := newAgentNode(t, lab, wan, secrets, "pub", netip.MustParseAddr("203.0.113.10"))
	other := newAgentNode(t, lab, wan, secrets, "other", netip.MustParseAddr("203.0.113.11"))
	late := newAgentNode(t, lab, wan, secrets, "late", netip.MustParseAddr("203.0.113.12"))
	url := startDiscovery(t, pub.NS, pub.ip) // default flags: WireGuard's mark
	for _, n := range []*agentNode{pub, other, late} {
		n.discoveries = []string{url}
	}
	pub.start(t, pub.config())
	other.start(t, other.config())
	waitUp(t, 30*time.Second, pub, other)

	// Block WireGuard between pub and other, in other's namespace.
	for _, cmd := range [][]string{
		{"add", "table", "inet", "cut"},
		{"add", "chain", "inet", "cut", "in", "{ type filter hook input priority -10; }"},
		{"add", "chain", "inet", "cut", "out", "{ type filter hook output priority -10; }"},
		{"add", "rule", "inet", "cut", "in", "ip", "saddr", pub.ip.String(), "udp", "sport", "51820", "drop"},
		{"add", "rule", "inet", "cut", "out", "ip", "daddr", pub.ip.String(), "udp", "dport", "51820", "drop"},
	} {
		if out, err := other.NS.Exec(context.Background(), "nft", cmd...); err != nil {
			t.Fatalf("nft %v: %v: %s", cmd, err, out)
		}
	}
	if e2e.Poll(45*time.Second, 20*time.Millisecond, func() (bool, string) {
		return other.peerStatus(t, "pub").State == "down" && pub.peerStatus(t, "other").State == "down", ""
	}) != nil {
		t.Fatalf("pub and other still see each other: %+v / %+v", other.peerStatus(t, "pub"), pub.peerStatus(t, "other"))
	}
	// Control: an ordinary connection from other to the service is now
	// held in the mesh (fail closed), so discovery works only because its
	// connections are marked.
	if err := other.NS.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(pub.ip, 3000).String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err == nil {
		t.Fatal("an unmarked connection from other reached pub's discovery service while pub is down: the control proves nothing")
	}

	late.start(t, late.config())
	waitUp(t, 45*time.Second, other, late)
}
