// Package netpolicy makes the host's routing and nftables match what the mesh
// needs: traffic to members goes through the mesh interface (firewall mark,
// dedicated table, policy rules), WireGuard's own UDP is exempt, traffic to a
// member whose peer is down is dropped unless bypass is allowed, LAN-bypass
// CIDRs stay off the mesh, and the host input firewall from the config.
//
// One nftables table (inet "meshspan") holds it all and is replaced whole
// in one transaction, so the kernel has the old table or the new one, never
// a mix. Its chains, as in Talos KubeSpan plus two guards:
//
//   - prerouting and output: WireGuard's own packets (mark&mask ==
//     FirewallMark) pass untouched; TCP SYNs to routed destinations get their
//     MSS clamped (MTU-52 IPv4, MTU-72 IPv6); routed destinations get the
//     force mark, which policy rules (priority RulePriority, both families)
//     send to the mesh table, whose default routes point at the mesh link.
//   - postrouting: plaintext to a routed destination leaving on any other
//     link is dropped. It never should; it would if the mesh link vanished
//     (its routes go with it) or the policy rules were removed.
//   - output also drops the "fragmentation needed" / "packet too big" error
//     the kernel sends itself for a local DF packet too big for the mesh: it
//     would cache the mesh MTU as the path MTU to the member's underlay
//     address, which WireGuard's own UDP shares, and break the tunnel's
//     full-size packets for ten minutes.
//   - input (only with firewall.defaultAction set): loopback, established
//     and related, the mesh link (its packets were decrypted with a member's
//     key, so they come from authenticated members and are accepted before
//     the config's rules), WireGuard's and the relay's UDP ports, the ICMPv6
//     that IPv6 needs (errors and neighbour discovery), then the config's
//     rules in order, then the default action as the chain policy.
//
// Every rule carries its text as its nftables comment: Plan lists the live
// table from those and the live set elements, and diffs it with the desired
// one (`meshspan-agent firewall check`); Apply uses the same comparison to
// skip the transaction when nothing changed.
package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// State is everything the host policy is computed from. The agent builds a
// new one on every reconcile; Apply makes the kernel match it (level-triggered).
type State struct {
	// Interface is the mesh (WireGuard) link name; MTU its MTU.
	Interface string
	MTU       int
	// ListenPort is WireGuard's UDP port, always admitted by the host firewall.
	ListenPort int
	Routing    config.Routing
	// Routed are destinations to send through the mesh: the AllowedIPs of
	// members (their underlay addresses and advertised networks), minus mesh
	// ULA addresses (routed by the link itself) and minus LANBypass.
	// Apply subtracts LANBypass itself, so passing it unsubtracted is fine.
	Routed []netip.Prefix
	// Unreachable are destinations of members whose peer is down. With
	// AllowDownPeerBypass false they are still routed into the mesh (where
	// WireGuard drops them: fail closed); with true they are left to the
	// underlay. They may or may not also appear in Routed: with bypass on,
	// Apply routes Routed minus Unreachable; with it off, Routed plus
	// Unreachable.
	Unreachable         []netip.Prefix
	AllowDownPeerBypass bool
	// LANBypass CIDRs never go through the mesh.
	LANBypass []netip.Prefix
	// Firewall is the host input firewall; empty DefaultAction leaves input alone.
	Firewall config.Firewall
	// RelayPort, when not 0, is one more UDP port the host firewall always
	// admits (the relay's, when it is not the WireGuard port).
	RelayPort int
}

// FromConfig fills every field that comes from the machine config alone,
// defaults applied (to a copy). The agent adds Routed and Unreachable from
// the live peer set.
func FromConfig(in *config.Config) (State, error) {
	c := *in
	c.Firewall.Rules = append([]config.FirewallRule(nil), in.Firewall.Rules...)
	c.ApplyDefaults()
	s := State{
		Interface:           c.WireGuard.Interface,
		MTU:                 c.WireGuard.MTU,
		ListenPort:          c.WireGuard.ListenPort,
		Routing:             c.Routing,
		AllowDownPeerBypass: c.AllowDownPeerBypass,
		Firewall:            c.Firewall,
	}
	if c.Relay.Enabled && c.Relay.Port != 0 && c.Relay.Port != c.WireGuard.ListenPort {
		s.RelayPort = c.Relay.Port
	}
	for i, l := range c.LANBypass {
		p, err := config.ParsePrefix(l)
		if err != nil {
			return State{}, fmt.Errorf("netpolicy: lanBypass[%d]: %w", i, err)
		}
		s.LANBypass = append(s.LANBypass, p)
	}
	return s, nil
}

// Validate checks what Apply relies on; each error names the State field.
func (s State) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("netpolicy: "+format, args...)) }
	if s.Interface == "" || len(s.Interface) > 15 {
		add("State.Interface %q is not an interface name; pass the mesh link name (1..15 characters)", s.Interface)
	}
	if s.MTU < config.MinMTU || s.MTU > config.MaxMTU {
		add("State.MTU %d is out of range; use %d..%d", s.MTU, config.MinMTU, config.MaxMTU)
	}
	if s.ListenPort < 1 || s.ListenPort > 65535 {
		add("State.ListenPort %d is not a port; use 1..65535", s.ListenPort)
	}
	if s.RelayPort < 0 || s.RelayPort > 65535 {
		add("State.RelayPort %d is not a port; use 0 (none) or 1..65535", s.RelayPort)
	}
	r := s.Routing
	if r.Table < 1 || r.Table > 252 {
		add("State.Routing.Table %d is not a usable routing table; use 1..252", r.Table)
	}
	if r.MarkMask == 0 || r.FirewallMark&^r.MarkMask != 0 || r.ForceMark&^r.MarkMask != 0 || r.FirewallMark == r.ForceMark || r.ForceMark == 0 || r.FirewallMark == 0 {
		add("State.Routing marks must be non-zero, distinct and inside MarkMask (FirewallMark %#x, ForceMark %#x, MarkMask %#x); start from config.ApplyDefaults", r.FirewallMark, r.ForceMark, r.MarkMask)
	}
	if r.RulePriority < 1 || r.RulePriority > 32765 {
		add("State.Routing.RulePriority %d is out of range; use 1..32765", r.RulePriority)
	}
	for name, list := range map[string][]netip.Prefix{"Routed": s.Routed, "Unreachable": s.Unreachable, "LANBypass": s.LANBypass} {
		for i, p := range list {
			if !p.IsValid() {
				add("State.%s[%d] is not a valid prefix", name, i)
			}
		}
	}
	if _, err := firewallRules(s.Firewall); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// marked returns the destinations whose packets get the force mark (and so
// go through the mesh), per family: the member destinations (down ones
// included unless bypass is allowed) minus the LAN bypass.
func (s State) marked(v6 bool) []addrRange {
	dest := s.Routed
	if !s.AllowDownPeerBypass {
		dest = append(append([]netip.Prefix(nil), s.Routed...), s.Unreachable...)
	}
	rs := rangesOf(dest, v6)
	if s.AllowDownPeerBypass {
		rs = subtractRanges(rs, rangesOf(s.Unreachable, v6))
	}
	return subtractRanges(rs, rangesOf(s.LANBypass, v6))
}

// Marked is the list of destinations Apply sends through the mesh, for
// status output: IPv4 then IPv6, each as the fewest covering prefixes.
func (s State) Marked() []netip.Prefix {
	return append(rangesPrefixes(s.marked(false)), rangesPrefixes(s.marked(true))...)
}
