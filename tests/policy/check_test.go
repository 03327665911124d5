package policy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
)

// `meshspan-agent firewall check` prints what Apply would make live and the
// diff against the host, and changes nothing.
func TestFirewallCheck(t *testing.T) {
	if agentBin == "" {
		t.Skip("needs root (network namespaces)")
	}
	lab := netlab.NewT(t)
	ns, err := lab.Host("h")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(netlab.LinkEnd{NS: ns, Name: config.DefaultInterface}, netlab.LinkEnd{NS: ns, Name: "meshpeer0"}); err != nil {
		t.Fatal(err)
	}
	secrets, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: "cp-1"},
		Cluster:    config.Cluster{ID: secrets.ID, Secret: secrets.Secret},
		Discovery:  config.Discovery{Endpoints: []string{"https://discovery.example.com/"}},
		LANBypass:  []string{"10.0.0.0/8"},
		Firewall: config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{
			{Protocol: "tcp", Port: "6443", Sources: []string{"100.64.0.0/10"}, Action: "accept"},
		}},
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(c *config.Config) {
		data, err := config.Render(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(wantExit bool) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := ns.Exec(ctx, agentBin, "firewall", "check", "--config", path, "--exit-code")
		if (err != nil) != wantExit {
			t.Fatalf("firewall check: err %v, want exit status 1: %v\n%s", err, wantExit, out)
		}
		return string(out)
	}
	write(cfg)

	out := check(true)
	for _, want := range []string{
		"table inet meshspan {",
		"ip saddr @fw0_src4 meta l4proto tcp th dport 6443 accept # firewall.rules[0]",
		"route ipv4 0.0.0.0/0 dev meshspan0 table 180 metric 1 mtu 1420",
		"rule ipv6 priority 32500 fwmark 0x40/0x60 lookup 180",
		"Nothing of the agent's is live yet",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if listed, _ := ns.Exec(context.Background(), "nft", "list", "tables"); strings.Contains(string(listed), "meshspan") {
		t.Fatal("firewall check created the table")
	}

	// Make it live as the agent would, with a member learned from discovery.
	m, err := netpolicy.New(netpolicy.Options{NetNSPath: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	s, err := netpolicy.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Routed = hostPrefixes(netip4("203.0.113.7"))
	if err := m.Apply(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if out := check(false); !strings.Contains(out, "nothing would change") {
		t.Fatalf("check after Apply of the same config should find nothing to change:\n%s", out)
	}

	// A config change shows as a diff, keeping the member the agent knows.
	cfg.Firewall.Rules = append(cfg.Firewall.Rules, config.FirewallRule{Protocol: "udp", Port: "53", Action: "accept"})
	cfg.LANBypass = append(cfg.LANBypass, "203.0.113.0/24")
	write(cfg)
	out = check(true)
	for _, want := range []string{
		"+ \t\tmeta l4proto udp th dport 53 accept # firewall.rules[1]",
		"- \t\t\t203.0.113.7,", // the member now sits in the LAN bypass
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "+ \t\t\t203.0.113.7,") || strings.Contains(out, "- \t\tip saddr @fw0_src4") {
		t.Errorf("diff shows unchanged lines as changes:\n%s", out)
	}
}

func netip4(s string) netip.Addr { return netip.MustParseAddr(s) }
