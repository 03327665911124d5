// Package e2e is the end-to-end suites' harness (tests/mesh, tests/policy,
// tests/nat, tests/vm): an agent in a netlab namespace (Node: its config,
// state, status socket, and its output shown when the test fails), the one
// bounded polling helper (Poll), and the one packet capture (Capture, with
// the kernel's own received and dropped counts, readable while it runs for
// positive controls).
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

// Main is a suite's TestMain: it sets *bin to the agent binary
// (internal/testing/agentbin) when running as root, leaves it "" otherwise
// (the suites skip), runs the tests, removes a binary agentbin built, and
// exits with the tests' code.
func Main(m *testing.M, bin *string) {
	code := func() int {
		defer agentbin.Remove()
		if os.Geteuid() == 0 {
			var err error
			if *bin, err = agentbin.Path(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// Identity is a node's identity as `meshspan-agent identity -o json` prints it.
type Identity struct {
	PublicKey   string `json:"publicKey"`
	Address     string `json:"address"`
	AffiliateID string `json:"affiliateId"`
}

// NewIdentity runs `meshspan-agent identity` inside ns (the identity needs
// the namespace's link MAC), creating it in stateDir for cluster clusterID.
func NewIdentity(ns *netlab.NS, bin, clusterID, stateDir string) (Identity, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var id Identity
	out, err := ns.Exec(ctx, bin, "identity", "--cluster-id", clusterID, "--state-dir", stateDir, "-o", "json")
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(out, &id); err != nil {
		return id, fmt.Errorf("e2e: identity of %s: %w: %s", ns.Name(), err, out)
	}
	return id, nil
}

// StartDiscovery runs `meshspan-agent discovery serve` inside ns on listen
// (no metrics, no snapshot) and waits, at most 10 s, until it accepts
// connections. It returns the process and the URL agents are given.
func StartDiscovery(ns *netlab.NS, bin string, listen netip.AddrPort) (*netlab.Proc, string, error) {
	p, err := ns.Start(exec.Command(bin, "discovery", "serve", "--listen", listen.String(), "--metrics-listen", "", "--snapshot-path", ""))
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", listen.String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return p, "http://" + listen.String() + "/", nil
		}
		if time.Now().After(deadline) {
			return p, "", fmt.Errorf("e2e: discovery service not listening on %s within 10 s: %w; output:\n%s", listen, err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
