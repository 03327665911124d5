package cloudfw

import (
	"net/netip"
	"testing"
)

func TestWireGuardRule(t *testing.T) {
	r := WireGuard(51821)
	if r.Direction != In || r.Protocol != "udp" || r.Port != "51821" || len(r.CIDRs) != 2 {
		t.Fatalf("unexpected WireGuard rule %+v", r)
	}
	if err := r.Validate("tcp", "udp", "icmp"); err != nil {
		t.Fatal(err)
	}
}

func TestSameSetIgnoresOrderAndSpelling(t *testing.T) {
	a := []Rule{
		WireGuard(51820),
		{Direction: In, Protocol: "tcp", Port: "6443", CIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}},
	}
	b := []Rule{
		{Direction: In, Protocol: "tcp", Port: "6443", CIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}, Description: "k8s"},
		{Direction: In, Protocol: "udp", Port: "51820", CIDRs: []netip.Prefix{netip.MustParsePrefix("::0/0"), netip.MustParsePrefix("0.0.0.0/0")}},
	}
	if !SameSet(a, b) {
		t.Fatal("equal sets reported different")
	}
	b[0].Port = "6444"
	if SameSet(a, b) {
		t.Fatal("different sets reported equal")
	}
}

func TestValidate(t *testing.T) {
	bad := []Rule{
		{Direction: "up", Protocol: "tcp", CIDRs: Anywhere},
		{Direction: In, Protocol: "gre", CIDRs: Anywhere},
		{Direction: In, Protocol: "tcp", Port: "0-70000", CIDRs: Anywhere},
		{Direction: In, Protocol: "icmp", Port: "22", CIDRs: Anywhere},
		{Direction: In, Protocol: "tcp", Port: "22"},
	}
	for i, r := range bad {
		if err := r.Validate("tcp", "udp", "icmp"); err == nil {
			t.Errorf("rule %d %+v accepted", i, r)
		}
	}
}

func TestCanonicalSpellings(t *testing.T) {
	p := netip.MustParsePrefix
	for _, pair := range [][2]Rule{
		{{Direction: In, Protocol: "tcp", Port: "any", CIDRs: []netip.Prefix{p("::/0")}}, {Direction: In, Protocol: "tcp", Port: "1-65535", CIDRs: []netip.Prefix{p("::0/0")}}},
		{{Direction: In, Protocol: "tcp", Port: "all", CIDRs: Anywhere}, {Direction: In, Protocol: "tcp", Port: "0", CIDRs: Anywhere, Action: Allow}},
		{{Direction: In, Protocol: "tcp", Port: "22-22", Tags: []string{"Mesh", "mesh"}}, {Direction: In, Protocol: "tcp", Port: "22", Tags: []string{"mesh"}}},
		{{Direction: Out, Protocol: "icmp", Port: "0", DropletIDs: []int64{2, 1, 2}}, {Direction: Out, Protocol: "icmp", DropletIDs: []int64{1, 2}}},
	} {
		if pair[0].Key() != pair[1].Key() {
			t.Errorf("%q != %q", pair[0].Key(), pair[1].Key())
		}
	}
	deny := Rule{Direction: In, Protocol: "tcp", Port: "22", CIDRs: Anywhere, Action: Deny}
	allow := deny
	allow.Action = ""
	if deny.Key() == allow.Key() {
		t.Error("a deny rule compares equal to the allow rule")
	}
}

func TestValidatePort(t *testing.T) {
	for _, ok := range []string{"", "any", "all", "1-65535", "22", "30000-32767"} {
		if err := ValidatePort(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"0", "+80", "+1-+65535", "70000", "5-4", "http"} {
		if err := ValidatePort(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestFindWireGuard(t *testing.T) {
	mgmt := Rule{Direction: In, Protocol: "tcp", Port: "22", CIDRs: Anywhere}
	other := WireGuard(40000)
	other.Description = ""
	port, rest := FindWireGuard([]Rule{mgmt, other, WireGuard(51821)}, 0)
	if port != 51821 || len(rest) != 2 {
		t.Fatalf("labelled rule not preferred: %d %v", port, rest)
	}
	unlabelled := WireGuard(51820)
	unlabelled.Description = ""
	if port, _ := FindWireGuard([]Rule{other, unlabelled}, 0); port != 51820 {
		t.Fatalf("default port not preferred on import: %d", port)
	}
	if port, rest := FindWireGuard([]Rule{mgmt, other}, 51820); port != 0 || len(rest) != 2 {
		t.Fatalf("found a rule for another port: %d", port)
	}
}
