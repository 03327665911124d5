package netpolicy

import (
	"fmt"
	"net/netip"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// fwRule is one parsed host firewall rule.
type fwRule struct {
	index  int
	name   string
	proto  string // tcp, udp, icmp, icmpv6
	lo, hi int    // destination ports; 0 means any
	// src4/src6 are the source ranges; both empty with anySource means any.
	src4, src6 []addrRange
	anySource  bool
	accept     bool
}

// firewallRules parses config.Firewall; errors name the config field.
func firewallRules(f config.Firewall) ([]fwRule, error) {
	switch f.DefaultAction {
	case "", "accept", "block":
	default:
		return nil, fmt.Errorf("netpolicy: firewall.defaultAction %q is not an action; use \"accept\" or \"block\"", f.DefaultAction)
	}
	if len(f.Rules) > 0 && f.DefaultAction == "" {
		return nil, fmt.Errorf("netpolicy: firewall.defaultAction is empty but rules are set; set \"block\" or \"accept\"")
	}
	var out []fwRule
	for i, r := range f.Rules {
		field := fmt.Sprintf("firewall.rules[%d]", i)
		fr := fwRule{index: i, name: r.Name, proto: r.Protocol}
		switch r.Protocol {
		case "tcp", "udp":
			if r.Port != "" {
				lo, hi, err := config.ParsePortRange(r.Port)
				if err != nil {
					return nil, fmt.Errorf("netpolicy: %s.port: %w", field, err)
				}
				fr.lo, fr.hi = lo, hi
			}
		case "icmp", "icmpv6":
			if r.Port != "" {
				return nil, fmt.Errorf("netpolicy: %s.port is %q but %s has no ports; remove it", field, r.Port, r.Protocol)
			}
		default:
			return nil, fmt.Errorf("netpolicy: %s.protocol %q is not supported; use tcp, udp, icmp or icmpv6", field, r.Protocol)
		}
		switch r.Action {
		case "", "accept":
			fr.accept = true
		case "block":
		default:
			return nil, fmt.Errorf("netpolicy: %s.action %q is not an action; use \"accept\" or \"block\"", field, r.Action)
		}
		var srcs []netip.Prefix
		for j, s := range r.Sources {
			p, err := config.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("netpolicy: %s.sources[%d]: %w", field, j, err)
			}
			srcs = append(srcs, p)
		}
		fr.anySource = len(srcs) == 0
		fr.src4, fr.src6 = rangesOf(srcs, false), rangesOf(srcs, true)
		out = append(out, fr)
	}
	return out, nil
}
