// Package cloudfw is the one cloud firewall rule model of the Hetzner Cloud
// and DigitalOcean resources: the WireGuard-only default, user rules, a
// canonical form so rule sets compare equal whatever their order or
// spelling, and the port and CIDR checks both clouds share. Each cloud's
// resource only translates this model to its SDK.
package cloudfw

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// Directions.
const (
	In  = "in"
	Out = "out"
)

// Actions. Hetzner rules always allow; DigitalOcean rules allow or deny.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Rule is one cloud firewall rule in provider-neutral form.
type Rule struct {
	Direction string // In or Out
	Protocol  string // tcp, udp, icmp (Hetzner also esp, gre)
	// Port is "" (all ports, or none for icmp/esp/gre), "51820" or "30000-32767".
	Port string
	// Action is Allow or Deny; "" means Allow.
	Action string
	// CIDRs are the sources of an In rule or the destinations of an Out rule.
	CIDRs []netip.Prefix
	// Targets other than addresses (DigitalOcean only).
	Tags             []string
	DropletIDs       []int64
	LoadBalancerUIDs []string
	KubernetesIDs    []string
	Description      string
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
		Port:        strconv.Itoa(port),
		CIDRs:       slices.Clone(Anywhere),
		Description: WireGuardDescription,
	}
}

// AllowAllOutbound is what "outbound unrestricted" means on a cloud whose
// firewall blocks all traffic no rule permits, outbound included
// (DigitalOcean): leaving outbound rules out would cut the node off.
func AllowAllOutbound() []Rule {
	return []Rule{
		{Direction: Out, Protocol: "tcp", CIDRs: slices.Clone(Anywhere)},
		{Direction: Out, Protocol: "udp", CIDRs: slices.Clone(Anywhere)},
		{Direction: Out, Protocol: "icmp", CIDRs: slices.Clone(Anywhere)},
	}
}

// HasPorts reports whether the protocol has ports.
func HasPorts(protocol string) bool { return protocol == "tcp" || protocol == "udp" }

// Validate checks a rule against what both clouds accept; protocols lists
// the protocols the target cloud supports.
func (r Rule) Validate(protocols ...string) error {
	if r.Direction != In && r.Direction != Out {
		return fmt.Errorf("direction %q is invalid; use %q or %q", r.Direction, In, Out)
	}
	if !slices.Contains(protocols, r.Protocol) {
		return fmt.Errorf("protocol %q is not supported here; use one of %s", r.Protocol, strings.Join(protocols, ", "))
	}
	if HasPorts(r.Protocol) {
		if err := ValidatePort(r.Port); err != nil {
			return err
		}
	} else if r.Port != "" {
		return fmt.Errorf("port %q is set but %s has no ports; remove it", r.Port, r.Protocol)
	}
	if r.Action != "" && r.Action != Allow && r.Action != Deny {
		return fmt.Errorf("action %q is invalid; use %q or %q", r.Action, Allow, Deny)
	}
	if len(r.CIDRs)+len(r.Tags)+len(r.DropletIDs)+len(r.LoadBalancerUIDs)+len(r.KubernetesIDs) == 0 {
		return fmt.Errorf("no addresses: an %s rule needs at least one CIDR (0.0.0.0/0 and ::/0 for anywhere)", r.Direction)
	}
	return nil
}

// allPorts are the spellings of "every port" across the clouds: omitted,
// Hetzner's "any", DigitalOcean's "all" (sent) and "0" (returned), and the
// full range.
var allPorts = []string{"", "any", "all", "0", "1-65535"}

// IsAllPorts reports whether port is a spelling of every port.
func IsAllPorts(port string) bool { return slices.Contains(allPorts, port) }

// ValidatePort is the one port check: a port ("6443"), an inclusive range
// ("30000-32767", digits only, so "+80" is refused) or a spelling of all
// ports ("", "any", "all", "1-65535").
func ValidatePort(port string) error {
	if IsAllPorts(port) && port != "0" {
		return nil
	}
	if _, _, err := config.ParsePortRange(port); err != nil {
		return fmt.Errorf("%w (or omit it for all ports)", err)
	}
	return nil
}

// ParseCIDR is the one CIDR check: a CIDR or a bare IP (as /32 or /128);
// host bits are refused with the network meant ("did you mean 10.0.0.0/8?").
func ParseCIDR(s string) (netip.Prefix, error) { return config.ParsePrefix(s) }

// ParseCIDRs reads CIDRs or bare IPs (as /32 or /128), rejecting host bits.
func ParseCIDRs(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParseCIDR(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Canonical returns the rule with its targets sorted and deduplicated, a
// full port range written as "" (all ports), a single-port range as the
// port, and the default action as "", so equal rules compare equal.
func (r Rule) Canonical() Rule {
	c := r
	c.CIDRs = slices.Clone(r.CIDRs)
	for i := range c.CIDRs {
		c.CIDRs[i] = c.CIDRs[i].Masked()
	}
	slices.SortFunc(c.CIDRs, comparePrefix)
	c.CIDRs = slices.Compact(c.CIDRs)
	c.Tags = sortedUnique(r.Tags, strings.ToLower) // DigitalOcean tags are case-insensitive
	c.DropletIDs = slices.Compact(slices.Sorted(slices.Values(r.DropletIDs)))
	c.LoadBalancerUIDs = sortedUnique(r.LoadBalancerUIDs, strings.ToLower)
	c.KubernetesIDs = sortedUnique(r.KubernetesIDs, strings.ToLower)
	switch {
	case !HasPorts(c.Protocol) || IsAllPorts(c.Port):
		c.Port = ""
	default:
		if lo, hi, ok := strings.Cut(c.Port, "-"); ok && lo == hi {
			c.Port = lo
		}
	}
	if c.Action == Allow {
		c.Action = ""
	}
	return c
}

func sortedUnique(in []string, norm func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = norm(s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Key identifies a rule by everything but its description.
func (r Rule) Key() string {
	c := r.Canonical()
	cidrs := make([]string, len(c.CIDRs))
	for i, p := range c.CIDRs {
		cidrs[i] = p.String()
	}
	ids := make([]string, len(c.DropletIDs))
	for i, id := range c.DropletIDs {
		ids[i] = strconv.FormatInt(id, 10)
	}
	action := c.Action
	if action == "" {
		action = Allow
	}
	return strings.Join([]string{c.Direction, action, c.Protocol, c.Port, strings.Join(cidrs, ","), strings.Join(c.Tags, ","),
		strings.Join(ids, ","), strings.Join(c.LoadBalancerUIDs, ","), strings.Join(c.KubernetesIDs, ",")}, "|")
}

// Identity is Key plus the description, for clouds that store one (a
// description changed outside Terraform is drift there).
func (r Rule) Identity() string { return r.Key() + "|" + r.Description }

// SameSet reports whether two rule lists hold the same rules, in any order,
// ignoring descriptions.
func SameSet(a, b []Rule) bool {
	return slices.Equal(keys(a, Rule.Key), keys(b, Rule.Key))
}

// SameSetWithDescriptions is SameSet comparing descriptions too.
func SameSetWithDescriptions(a, b []Rule) bool {
	return slices.Equal(keys(a, Rule.Identity), keys(b, Rule.Identity))
}

// Keys are the rules' keys, sorted and deduplicated.
func Keys(rules []Rule) []string { return keys(rules, Rule.Key) }

func keys(rules []Rule, key func(Rule) string) []string {
	k := make([]string, len(rules))
	for i, r := range rules {
		k[i] = key(r)
	}
	slices.Sort(k)
	return slices.Compact(k)
}

// FindWireGuard finds the WireGuard rule among rules read from an API: the
// one for port (if known, > 0), else (after import) a UDP single-port rule
// from anywhere, preferring the one meshspan labelled, then the default
// port, then the lowest. It returns the port found (0: none) and the other
// rules.
func FindWireGuard(rules []Rule, port int) (int, []Rule) {
	idx, best := -1, 0
	for i, r := range rules {
		p, err := strconv.Atoi(r.Port)
		if err != nil || (port > 0 && p != port) || r.Key() != WireGuard(p).Key() {
			continue
		}
		switch {
		case idx < 0,
			r.Description == WireGuardDescription && rules[idx].Description != WireGuardDescription,
			rules[idx].Description != WireGuardDescription && best != config.DefaultListenPort && (p == config.DefaultListenPort || p < best):
			idx, best = i, p
		}
	}
	if idx < 0 {
		return 0, rules
	}
	return best, append(slices.Clone(rules[:idx]), rules[idx+1:]...)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
