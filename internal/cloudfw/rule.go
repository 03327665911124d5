// Package cloudfw is the cloud firewall rule model shared by the Hetzner Cloud
// and DigitalOcean resources: the WireGuard-only default, user rules, and a
// canonical form so rule sets compare equal whatever their order or spelling.
package cloudfw

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// Directions.
const (
	In  = "in"
	Out = "out"
)

// Rule is one cloud firewall rule in provider-neutral form.
type Rule struct {
	Direction string // In or Out
	Protocol  string // tcp, udp, icmp (Hetzner also esp, gre)
	// Port is "" (all ports, or none for icmp/esp/gre), "51820" or "30000-32767".
	Port string
	// CIDRs are the sources of an In rule or the destinations of an Out rule.
	CIDRs       []netip.Prefix
	Description string
}

// Anywhere is every IPv4 and IPv6 address.
var Anywhere = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// WireGuardDescription marks the WireGuard rule, so the rule can be told
// apart on an imported firewall.
const WireGuardDescription = "meshspan WireGuard"

// WireGuard is the one inbound rule every mesh node needs: the WireGuard
// listen port over UDP from anywhere.
func WireGuard(port int) Rule {
	return Rule{
		Direction:   In,
		Protocol:    "udp",
		Port:        fmt.Sprint(port),
		CIDRs:       slices.Clone(Anywhere),
		Description: WireGuardDescription,
	}
}

// Validate checks a rule against what both clouds accept; protocols lists
// the protocols the target cloud supports.
func (r Rule) Validate(protocols ...string) error {
	if r.Direction != In && r.Direction != Out {
		return fmt.Errorf("direction %q is invalid; use %q or %q", r.Direction, In, Out)
	}
	if !slices.Contains(protocols, r.Protocol) {
		return fmt.Errorf("protocol %q is not supported here; use one of %s", r.Protocol, strings.Join(protocols, ", "))
	}
	switch r.Protocol {
	case "tcp", "udp":
		if r.Port != "" {
			if _, _, err := config.ParsePortRange(r.Port); err != nil {
				return err
			}
		}
	default:
		if r.Port != "" {
			return fmt.Errorf("port %q is set but %s has no ports; remove it", r.Port, r.Protocol)
		}
	}
	if len(r.CIDRs) == 0 {
		return fmt.Errorf("no addresses: an %s rule needs at least one CIDR (0.0.0.0/0 and ::/0 for anywhere)", r.Direction)
	}
	return nil
}

// ParseCIDRs reads CIDRs or bare IPs (as /32 or /128), rejecting host bits.
func ParseCIDRs(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Canonical returns the rule with its CIDRs sorted and deduplicated and a
// full port range written as "" (all ports), so equal rules compare equal.
func (r Rule) Canonical() Rule {
	c := r
	c.CIDRs = slices.Clone(r.CIDRs)
	for i := range c.CIDRs {
		c.CIDRs[i] = c.CIDRs[i].Masked()
	}
	slices.SortFunc(c.CIDRs, comparePrefix)
	c.CIDRs = slices.Compact(c.CIDRs)
	if c.Port == "1-65535" || c.Port == "any" || c.Port == "all" || c.Port == "0" {
		c.Port = ""
	}
	return c
}

// Key identifies a rule by everything but its description.
func (r Rule) Key() string {
	c := r.Canonical()
	cidrs := make([]string, len(c.CIDRs))
	for i, p := range c.CIDRs {
		cidrs[i] = p.String()
	}
	return c.Direction + "|" + c.Protocol + "|" + c.Port + "|" + strings.Join(cidrs, ",")
}

// SameSet reports whether two rule lists hold the same rules, in any order.
func SameSet(a, b []Rule) bool {
	ka, kb := keys(a), keys(b)
	return slices.Equal(ka, kb)
}

func keys(rules []Rule) []string {
	k := make([]string, len(rules))
	for i, r := range rules {
		k[i] = r.Key()
	}
	slices.Sort(k)
	return slices.Compact(k)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
