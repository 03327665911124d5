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
