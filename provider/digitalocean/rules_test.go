package digitalocean

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/digitalocean/godo"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
)

func apiFirewall(in []godo.InboundRule, out []godo.OutboundRule) *godo.Firewall {
	return &godo.Firewall{ID: "id", Name: "fw", InboundRules: in, OutboundRules: out}
}

func src(addrs ...string) *godo.Sources { return &godo.Sources{Addresses: addrs} }

// apiAllowAll is the default outbound as the API returns it: "0" ports.
func apiAllowAll() []godo.OutboundRule {
	d := &godo.Destinations{Addresses: []string{"0.0.0.0/0", "::/0"}}
	return []godo.OutboundRule{{Protocol: "icmp", PortRange: "0", Destinations: d}, {Protocol: "udp", PortRange: "0", Destinations: d}, {Protocol: "tcp", PortRange: "0", Destinations: d}}
}

func TestSplitRulesImport(t *testing.T) {
	fw := apiFirewall([]godo.InboundRule{
		{Protocol: "tcp", PortRange: "6443", Sources: src("100.64.0.0/10")},
		{Protocol: "udp", PortRange: "41641", Sources: src("::/0", "0.0.0.0/0")},
		{Protocol: "udp", PortRange: "51820", Sources: src("0.0.0.0/0", "::/0")},
		{Protocol: "udp", PortRange: "9999", Sources: src("0.0.0.0/0")}, // not from anywhere: not WireGuard
	}, apiAllowAll())
	obs := splitRules(fw, 0, false)
	if obs.WireGuardPort != 51820 {
		t.Fatalf("WireGuard port %v, want 51820 (the default wins among candidates)", obs.WireGuardPort)
	}
	if len(obs.ExtraIn) != 3 || obs.ExtraOut != nil {
		t.Fatalf("extras in %v out %v; want three inbound extras and the default outbound (nil)", cloudfw.Keys(obs.ExtraIn), obs.ExtraOut)
	}
	// Without 51820 the lowest qualifying port is taken.
	fw.InboundRules = slices.Delete(fw.InboundRules, 2, 3)
	if obs := splitRules(fw, 0, false); obs.WireGuardPort != 41641 {
		t.Fatalf("WireGuard port %v, want 41641", obs.WireGuardPort)
	}
}

// A rule switched to deny is no longer the WireGuard rule, and an extra
// rule's action is read.
func TestSplitRulesAction(t *testing.T) {
	fw := apiFirewall([]godo.InboundRule{
		{Protocol: "udp", PortRange: "51820", Sources: src("0.0.0.0/0", "::/0"), Action: godo.FirewallRuleActionDeny},
		{Protocol: "tcp", PortRange: "22", Sources: src("10.0.0.0/8"), Action: godo.FirewallRuleActionAllow},
	}, apiAllowAll())
	obs := splitRules(fw, 51820, false)
	if obs.WireGuardPort != 0 || len(obs.ExtraIn) != 2 {
		t.Fatalf("a denied WireGuard rule was taken for the WireGuard rule: %+v", obs)
	}
	if obs.ExtraIn[0].Action != cloudfw.Deny || obs.ExtraIn[1].Action != "" {
		t.Fatalf("actions read %q and %q, want deny and unset (allow)", obs.ExtraIn[0].Action, obs.ExtraIn[1].Action)
	}
}

func TestSplitRulesDrift(t *testing.T) {
	wg := godo.InboundRule{Protocol: "udp", PortRange: "51820", Sources: src("0.0.0.0/0", "::/0")}
	// WireGuard rule changed to another port: no WireGuard rule for 51820.
	other := wg
	other.PortRange = "51821"
	if obs := splitRules(apiFirewall([]godo.InboundRule{other}, apiAllowAll()), 51820, false); obs.WireGuardPort != 0 || len(obs.ExtraIn) != 1 {
		t.Fatalf("changed port not seen as drift: %+v", obs)
	}
	// No outbound rule at all: drift from the allow-all default.
	if obs := splitRules(apiFirewall([]godo.InboundRule{wg}, nil), 51820, false); obs.ExtraOut == nil || len(obs.ExtraOut) != 0 {
		t.Fatalf("missing outbound rules not seen as drift: %+v", obs.ExtraOut)
	}
	// The allow-all rules when outbound rules are configured are reported as they are.
	if obs := splitRules(apiFirewall([]godo.InboundRule{wg}, apiAllowAll()), 51820, true); len(obs.ExtraOut) != 3 {
		t.Fatalf("outbound %+v, want the three rules", obs.ExtraOut)
	}
}

func TestFirewallRequest(t *testing.T) {
	extra := []cloudfw.Rule{
		{Direction: cloudfw.In, Protocol: "icmp", CIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
		{Direction: cloudfw.In, Protocol: "tcp", Port: "1-65535", Tags: []string{"edge"}, Action: cloudfw.Deny},
	}
	req := firewallRequest("fw", 51820, extra, nil, []int64{7}, []string{"mesh"})
	if len(req.InboundRules) != 3 || len(req.OutboundRules) != 3 || req.DropletIDs[0] != 7 || req.Tags[0] != "mesh" {
		t.Fatalf("request %+v", req)
	}
	if r := req.InboundRules[0]; r.Protocol != "udp" || r.PortRange != "51820" || r.Action != "" {
		t.Errorf("WireGuard rule sent as %+v", r)
	}
	if r := req.InboundRules[1]; r.PortRange != "" {
		t.Errorf("icmp sent with ports %q", r.PortRange)
	}
	if r := req.InboundRules[2]; r.PortRange != "1-65535" || r.Action != godo.FirewallRuleActionDeny || r.Sources.Tags[0] != "edge" {
		t.Errorf("full-range deny rule sent as %+v", r)
	}
	for _, r := range req.OutboundRules {
		if r.Protocol != "icmp" && r.PortRange != "all" {
			t.Errorf("default outbound sent as %+v", r)
		}
	}
	out := []cloudfw.Rule{{Direction: cloudfw.Out, Protocol: "udp", Port: "53", CIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.53/32")}}}
	if req := firewallRequest("fw", 51820, nil, out, nil, nil); len(req.OutboundRules) != 1 || req.OutboundRules[0].Destinations.Addresses[0] != "203.0.113.53/32" {
		t.Errorf("configured outbound replaced: %+v", req.OutboundRules)
	}
}

func TestCheckRule(t *testing.T) {
	any := cloudfw.Anywhere
	good := []cloudfw.Rule{
		{Direction: cloudfw.In, Protocol: "tcp", Port: "22", CIDRs: any},
		{Direction: cloudfw.In, Protocol: "tcp", Port: "all", Tags: []string{"edge"}},
		{Direction: cloudfw.Out, Protocol: "icmp", DropletIDs: []int64{3}},
		{Direction: cloudfw.Out, Protocol: "udp", Port: "53", LoadBalancerUIDs: []string{"4de7ac8b-495b-4884-9a69-1050c6793cd6"}},
		{Direction: cloudfw.In, Protocol: "tcp", Port: "6443", KubernetesIDs: []string{"bd5f5959-5e1e-4205-a714-a914373942af"}, Action: cloudfw.Deny},
	}
	for _, r := range good {
		if err := checkRule(r); err != nil {
			t.Errorf("%+v refused: %v", r, err)
		}
	}
	bad := map[string]cloudfw.Rule{
		"port_range is required":  {Direction: cloudfw.In, Protocol: "tcp", CIDRs: any},
		"which has no ports":      {Direction: cloudfw.In, Protocol: "icmp", Port: "22", CIDRs: any},
		"at least one of source_": {Direction: cloudfw.In, Protocol: "tcp", Port: "22"},
		"destination_addresses":   {Direction: cloudfw.Out, Protocol: "tcp", Port: "22"},
	}
	for want, r := range bad {
		if err := checkRule(r); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error containing %q", r, err, want)
		}
	}
}
