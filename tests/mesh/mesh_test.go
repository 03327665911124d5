package mesh

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// TestStaticMesh: three hosts with static peers form a full mesh; every
// node reaches every other over its mesh address; status shows the peers up
// with traffic counted; a killed agent is seen down within the threshold,
// and restarted on its state directory it comes back as the same node.
func TestStaticMesh(t *testing.T) {
	c := newCluster(t, 3, false)
	c.staticMesh()
	c.startAll()
	c.waitAllUp(c.nodes, 15*time.Second)

	for _, n := range c.nodes {
		for _, m := range c.nodes {
			if n != m {
				if err := n.ping(m.ID.Address); err != nil {
					t.Errorf("ping %s -> %s (%s): %v", n.Name, m.Name, m.ID.Address, err)
				}
			}
		}
	}
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	before, err := n1.Status()
	if err != nil {
		t.Fatal(err)
	}
	if err := transfer(n1, n2, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := transfer(n2, n1, 1<<20); err != nil {
		t.Fatal(err)
	}
	after, err := n1.Status()
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := e2e.Peer(before, "n2"), e2e.Peer(after, "n2")
	if p1.TxBytes < p0.TxBytes+4<<20 || p1.RxBytes < p0.RxBytes+1<<20 {
		t.Errorf("n1's counters for n2 grew tx %d -> %d, rx %d -> %d; want at least the 4 MiB sent and 1 MiB received",
			p0.TxBytes, p1.TxBytes, p0.RxBytes, p1.RxBytes)
	}
	if after.Mode != expectedMode() || after.Address != n1.ID.Address || after.PublicKey != n1.ID.PublicKey {
		t.Errorf("status header %+v does not match identity %+v / mode %s", after, n1.ID, expectedMode())
	}

	// The CLI prints the same, as a table and as JSON.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n1.NS.Exec(ctx, agentBin, "status", "--socket", n1.Socket())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PUBLIC KEY", "LAST HANDSHAKE", n2.ID.PublicKey, "n3", "up", "(" + expectedMode() + ")"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	out, err = n1.NS.Exec(ctx, agentBin, "status", "--socket", n1.Socket(), "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var js agent.Status
	if err := json.Unmarshal(out, &js); err != nil || len(js.Peers) != 2 {
		t.Errorf("status -o json: %v, %d peers:\n%s", err, len(js.Peers), out)
	}

	out, err = n1.NS.Exec(ctx, agentBin, "status", "--socket", n1.Socket(), "-o", "yaml")
	if err != nil || !strings.Contains(string(out), "state: up") || !strings.Contains(string(out), "publicKey: "+n2.ID.PublicKey) {
		t.Errorf("status -o yaml: %v\n%s", err, out)
	}

	// wg show sees the device (userspace: through the UAPI socket the agent serves).
	{
		out, err = n1.NS.Exec(ctx, "nsenter", "-t", strconv.Itoa(n1.Proc.PID()), "-m", "wg", "show", "meshspan0")
		if err != nil || !strings.Contains(string(out), n2.ID.PublicKey) || !strings.Contains(string(out), "latest handshake") {
			t.Errorf("wg show meshspan0 in n1: %v\n%s", err, out)
		}
	}
	// Metrics on the same socket.
	body := metrics(t, n1)
	for _, want := range []string{
		`meshspan_peer_up{node="n2",peer="` + n2.ID.PublicKey + `",state="up"} 1`,
		`meshspan_wireguard_mode{interface="meshspan0",mode="` + after.Mode + `"} 1`,
		`meshspan_peers{state="up"} 2`,
		"meshspan_peer_receive_bytes_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Kill n3 without a chance to clean up: the others must call it down.
	if err := n3.Proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := e2e.Poll(15*time.Second, 100*time.Millisecond, func() (bool, string) {
		var b strings.Builder
		for _, n := range []*node{n1, n2} {
			s, err := n.Status()
			if err != nil {
				return false, err.Error()
			}
			if p := e2e.Peer(s, "n3"); p == nil || p.State != "down" {
				b.WriteString(n.Name + " still sees n3 " + p.State + "; ")
			}
		}
		return b.Len() == 0, b.String()
	}); err != nil {
		t.Fatal(err)
	}
	detect := time.Since(killed)
	t.Logf("dead peer detected by both others %.1f s after SIGKILL (downAfter 8 s)", detect.Seconds())
	if detect > 10500*time.Millisecond {
		t.Errorf("down detection took %s; want < 10 s (downAfter 8 s + one tick)", detect)
	}
	n3.Proc.Wait()

	// Same state directory: same key, same address, back up.
	n3.start()
	c.waitAllUp(c.nodes, 15*time.Second)
	s3, err := n3.Status()
	if err != nil {
		t.Fatal(err)
	}
	if s3.PublicKey != n3.ID.PublicKey || s3.Address != n3.ID.Address || s3.AffiliateID != n3.ID.AffiliateID {
		t.Errorf("restarted n3 is %s/%s/%s; want the identity it had: %+v", s3.PublicKey, s3.Address, s3.AffiliateID, n3.ID)
	}
	if err := n1.ping(n3.ID.Address); err != nil {
		t.Errorf("ping n1 -> restarted n3: %v", err)
	}
}

// metrics fetches /metrics from n's status socket.
func metrics(t testing.TB, n *node) string {
	t.Helper()
	m, err := n.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	return m
}
