package provider

import (
	"slices"
	"strings"
	"testing"

	"github.com/digitalocean/godo"
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

func TestDigitalOceanSplitRulesImport(t *testing.T) {
	fw := apiFirewall([]godo.InboundRule{
		{Protocol: "tcp", PortRange: "6443", Sources: src("100.64.0.0/10")},
		{Protocol: "udp", PortRange: "41641", Sources: src("::/0", "0.0.0.0/0")},
		{Protocol: "udp", PortRange: "51820", Sources: src("0.0.0.0/0", "::/0")},
		{Protocol: "udp", PortRange: "9999", Sources: src("0.0.0.0/0")}, // not from anywhere: not WireGuard
	}, apiAllowAll())
	obs := doSplitRules(fw, nil, nil, nil, false)
	if obs.WireGuardPort == nil || *obs.WireGuardPort != 51820 {
		t.Fatalf("WireGuard port %v, want 51820 (the default wins among candidates)", obs.WireGuardPort)
	}
	if len(obs.ExtraIn) != 3 || obs.ExtraOut != nil {
		t.Fatalf("extras in %v out %v; want three inbound extras and the default outbound (nil)", doRuleKeys(obs.ExtraIn), obs.ExtraOut)
	}
	// Without 51820 the lowest qualifying port is taken.
	fw.InboundRules = slices.Delete(fw.InboundRules, 2, 3)
	if obs := doSplitRules(fw, nil, nil, nil, false); obs.WireGuardPort == nil || *obs.WireGuardPort != 41641 {
		t.Fatalf("WireGuard port %v, want 41641", obs.WireGuardPort)
	}
}

func TestDigitalOceanSplitRulesKeepsSpelling(t *testing.T) {
	port := int64(51820)
	prior := []doRule{{Protocol: "tcp", Ports: "1-65535", Addresses: []string{"::0/0", "10.0.0.1"}}}
	fw := apiFirewall([]godo.InboundRule{
		{Protocol: "udp", PortRange: "51820", Sources: src("0.0.0.0/0", "::/0")},
		{Protocol: "tcp", PortRange: "0", Sources: src("10.0.0.1/32", "::/0")},
	}, apiAllowAll())
	obs := doSplitRules(fw, &port, prior, nil, false)
	if len(obs.ExtraIn) != 1 || obs.ExtraIn[0].Ports != "1-65535" || !slices.Equal(obs.ExtraIn[0].Addresses, prior[0].Addresses) {
		t.Fatalf("extras %+v, want the prior spelling kept", obs.ExtraIn)
	}
	// A rule that differs in meaning is reported as the API has it.
	fw.InboundRules[1].PortRange = "22"
	obs = doSplitRules(fw, &port, prior, nil, false)
	if len(obs.ExtraIn) != 1 || obs.ExtraIn[0].Ports != "22" {
		t.Fatalf("extras %+v, want port 22 from the API", obs.ExtraIn)
	}
}

func TestDigitalOceanSplitRulesDrift(t *testing.T) {
	port := int64(51821)
	fw := apiFirewall([]godo.InboundRule{{Protocol: "udp", PortRange: "51820", Sources: src("0.0.0.0/0", "::/0")}}, nil)
	obs := doSplitRules(fw, &port, nil, nil, false)
	if obs.WireGuardPort != nil {
		t.Fatalf("WireGuard port %d found, but the API holds 51820 not 51821", *obs.WireGuardPort)
	}
	if len(obs.ExtraIn) != 1 {
		t.Fatalf("the stray udp 51820 rule must show as an extra, got %v", obs.ExtraIn)
	}
	if obs.ExtraOut == nil || len(obs.ExtraOut) != 0 {
		t.Fatalf("no outbound rules must read as an empty set (drift from allow-all), got %#v", obs.ExtraOut)
	}
	// Configured outbound rules equal to allow-all stay listed.
	fw.OutboundRules = apiAllowAll()
	if obs := doSplitRules(fw, &port, nil, doAllowAllOutbound(), true); len(obs.ExtraOut) != 3 {
		t.Fatalf("configured allow-all outbound read back as %v", obs.ExtraOut)
	}
}

func TestDigitalOceanFirewallRequest(t *testing.T) {
	extra := []doRule{{Protocol: "icmp", Addresses: []string{"198.51.100.0/24"}}, {Protocol: "tcp", Ports: "all", Tags: []string{"edge"}}}
	req := doFirewallRequest("fw", 41641, extra, nil, []int64{7}, []string{"mesh"})
	if len(req.InboundRules) != 3 || req.InboundRules[0].PortRange != "41641" || req.InboundRules[0].Protocol != "udp" {
		t.Fatalf("inbound %+v, want WireGuard first, then the two extras", req.InboundRules)
	}
	if req.InboundRules[1].PortRange != "" {
		t.Fatalf("icmp rule sent ports %q; godo must omit them", req.InboundRules[1].PortRange)
	}
	if len(req.OutboundRules) != 3 || !slices.Equal(req.DropletIDs, []int{7}) || !slices.Equal(req.Tags, []string{"mesh"}) {
		t.Fatalf("request %+v", req)
	}
	out := []doRule{{Protocol: "udp", Ports: "53", Addresses: []string{"203.0.113.53"}}}
	if req := doFirewallRequest("fw", 51820, nil, out, nil, nil); len(req.OutboundRules) != 1 || req.DropletIDs == nil || req.Tags == nil {
		t.Fatalf("configured outbound must replace allow-all, lists must be [] not null: %+v", req)
	}
}

func TestDigitalOceanRuleValidate(t *testing.T) {
	good := []doRule{
		{Protocol: "tcp", Ports: "all", Addresses: []string{"0.0.0.0/0"}},
		{Protocol: "udp", Ports: "30000-32767", DropletIDs: []int64{3}},
		{Protocol: "icmp", Tags: []string{"k8s:worker"}},
		{Protocol: "tcp", Ports: "22", Addresses: []string{"203.0.113.7"}},
	}
	for _, r := range good {
		if err := r.validate("extra_inbound_rules", "source"); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	bad := map[string]doRule{
		"port_range is required": {Protocol: "tcp", Addresses: []string{"0.0.0.0/0"}},
		"has no ports":           {Protocol: "icmp", Ports: "0", Addresses: []string{"0.0.0.0/0"}},
		"not a port or range":    {Protocol: "udp", Ports: "70000", Addresses: []string{"0.0.0.0/0"}},
		"host bits":              {Protocol: "tcp", Ports: "22", Addresses: []string{"10.1.2.3/8"}},
		"at least one of":        {Protocol: "tcp", Ports: "22"},
		"not a valid tag":        {Protocol: "tcp", Ports: "22", Tags: []string{"white space"}},
		"not supported":          {Protocol: "esp", Addresses: []string{"0.0.0.0/0"}},
	}
	for want, r := range bad {
		err := r.validate("extra_inbound_rules", "source")
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "extra_inbound_rules") {
			t.Errorf("%+v: error %v, want one naming the field and saying %q", r, err, want)
		}
	}
}
