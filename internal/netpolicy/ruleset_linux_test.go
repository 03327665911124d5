package netpolicy

import (
	"strings"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// The rendered table is what `firewall check` shows and what Apply compares
// with the kernel: check the lines that carry the policy.
func TestRulesetText(t *testing.T) {
	s := validState()
	s.Routed = pfx("192.0.2.2/32", "2001:db8::2/128")
	s.Firewall = config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{
		{Name: "kube api", Protocol: "tcp", Port: "6443", Sources: []string{"100.64.0.0/10", "2001:db8:1::/48"}, Action: "accept"},
		{Protocol: "udp", Port: "30000-32767", Action: "block"},
	}}
	rs, err := buildRuleset(s, "meshspan")
	if err != nil {
		t.Fatal(err)
	}
	text := rs.listing().String()
	for _, want := range []string{
		"set routed4 {\n\t\ttype ipv4_addr; flags interval;\n\t\telements = {\n\t\t\t192.0.2.2,\n",
		"chain output {\n\t\ttype route hook output priority 0; policy accept;\n\t\tmeta mark & 0x60 == 0x20 accept # WireGuard's own UDP\n",
		"ip daddr @routed4 tcp flags & (syn | rst) == syn tcp option maxseg size > 1368 tcp option maxseg size set 1368",
		"ip6 daddr @routed6 tcp flags & (syn | rst) == syn tcp option maxseg size > 1348",
		"ip daddr @routed4 meta mark set meta mark & 0xffffff9f | 0x40 accept",
		"oifname meshspan0 accept\n\t\toifname lo accept\n\t\tip daddr @routed4 counter drop",
		"chain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tiifname lo accept\n\t\tct state established,related accept\n\t\tiifname meshspan0 accept # authenticated members\n\t\tmeta l4proto udp th dport 51820 accept # WireGuard\n",
		"icmpv6 type 133-136 accept # neighbour discovery",
		"ip saddr @fw0_src4 meta l4proto tcp th dport 6443 accept # firewall.rules[0] kube api",
		"ip6 saddr @fw0_src6 meta l4proto tcp th dport 6443 accept # firewall.rules[0] kube api",
		"meta l4proto udp th dport 30000-32767 drop # firewall.rules[1]",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ruleset lacks %q\n%s", want, text)
		}
	}
	s.Firewall = config.Firewall{}
	rs, _ = buildRuleset(s, "meshspan")
	if text := rs.listing().String(); strings.Contains(text, "chain input") {
		t.Errorf("empty defaultAction must leave input alone, got\n%s", text)
	}
}
