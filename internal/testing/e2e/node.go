package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// Node is a meshspan-agent in a network namespace: its directory (config,
// state and status socket), its identity and, once started, its process.
// When the test fails, the tail of the agent's output is logged.
type Node struct {
	Name string
	NS   *netlab.NS
	// Bin is the agent binary; Dir holds config.yaml, state/ and agent.sock.
	Bin, Dir string
	ID       Identity
	Proc     *netlab.Proc
	// Started is when Start ran the process.
	Started time.Time
	// Env is added to the agent's environment (e.g. GOMEMLIMIT).
	Env []string
}

// outputTail is how much of an agent's output a failure shows.
const outputTail = 3000

// NewNode makes dir and creates the node's identity there for cluster
// clusterID, by `meshspan-agent identity` inside ns (the identity needs the
// namespace's link MAC, so ns is plugged in first).
func NewNode(t testing.TB, bin string, ns *netlab.NS, name, dir, clusterID string) *Node {
	t.Helper()
	n := &Node{Name: name, NS: ns, Bin: bin, Dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if n.ID, err = NewIdentity(ns, bin, clusterID, n.StateDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && n.Proc != nil {
			t.Logf("--- %s output (tail) ---\n%s", n.Name, n.Tail(outputTail))
		}
	})
	return n
}

// ConfigPath is the node's config file.
func (n *Node) ConfigPath() string { return filepath.Join(n.Dir, "config.yaml") }

// StateDir is the node's --state-dir.
func (n *Node) StateDir() string { return filepath.Join(n.Dir, "state") }

// Socket is the node's status socket.
func (n *Node) Socket() string { return filepath.Join(n.Dir, "agent.sock") }

// WriteConfig renders cfg to the node's config file (mode 0600, as the
// agent demands).
func (n *Node) WriteConfig(t testing.TB, cfg *config.Config) {
	t.Helper()
	data, err := config.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.ConfigPath(), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Start runs `meshspan-agent run` on the node's config, state and socket,
// with extra arguments (--wireguard, ...). The lab stops it.
func (n *Node) Start(t testing.TB, extra ...string) {
	t.Helper()
	args := append([]string{"run", "--config", n.ConfigPath(), "--state-dir", n.StateDir(), "--socket", n.Socket()}, extra...)
	cmd := exec.Command(n.Bin, args...)
	if n.Env != nil {
		cmd.Env = append(os.Environ(), n.Env...)
	}
	p, err := n.NS.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	n.Proc, n.Started = p, time.Now()
}

// Status reads the agent's status from its socket (2 s at most).
func (n *Node) Status() (*agent.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.FetchStatus(ctx, n.Socket())
}

// Peer is the named peer in s, or nil.
func Peer(s *agent.Status, name string) *agent.PeerStatus {
	for _, p := range s.Peers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Tail is the last max bytes of the agent's output ("" before Start).
func (n *Node) Tail(max int) string {
	if n.Proc == nil {
		return ""
	}
	out := n.Proc.Output()
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return string(out)
}

// Outputs is the tail of each started node's output under a header, for
// failure messages.
func Outputs(max int, nodes ...*Node) string {
	var b strings.Builder
	for _, n := range nodes {
		if n.Proc != nil {
			fmt.Fprintf(&b, "--- %s output (tail) ---\n%s\n", n.Name, n.Tail(max))
		}
	}
	return b.String()
}

// AllUp reports whether every node sees every other node up, and if not,
// who sees whom how. The nodes are asked in parallel, so the answer is not
// a poll round behind at N = 20.
func AllUp(nodes ...*Node) (bool, string) {
	type answer struct {
		s   *agent.Status
		err error
	}
	answers := make([]answer, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := n.Status()
			answers[i] = answer{s, err}
		}()
	}
	wg.Wait()
	var b strings.Builder
	ok := true
	for i, n := range nodes {
		s, err := answers[i].s, answers[i].err
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", n.Name, err)
			continue
		}
		for _, m := range nodes {
			if m == n {
				continue
			}
			p := Peer(s, m.Name)
			if p == nil || p.State != "up" {
				ok = false
				state := "absent"
				if p != nil {
					state = p.State + " via " + p.Endpoint
				}
				fmt.Fprintf(&b, "%s sees %s %s\n", n.Name, m.Name, state)
			}
		}
	}
	return ok, b.String()
}

// Metrics fetches the agent's Prometheus /metrics from its status socket
// (5 s at most).
func (n *Node) Metrics() (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.Socket())
		},
	}}
	resp, err := c.Get("http://agent/metrics")
	if err != nil {
		return "", fmt.Errorf("%s /metrics: %w", n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("%s /metrics: %w", n.Name, err)
	}
	return string(b), nil
}
