package digitalocean

import (
	"net/netip"
	"slices"

	"github.com/digitalocean/godo"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
)

// This file translates the shared rule model (internal/cloudfw) to and
// from godo; nothing here decides what rules mean.

// protocols are the protocols DigitalOcean firewalls support.
var protocols = []string{"tcp", "udp", "icmp"}

// apiPorts is a rule's ports as the API takes them: nothing for icmp, "all"
// for every port when not written as a range ("1-65535" is sent as written:
// the API echoes it, so an import reads back what was configured).
func apiPorts(r cloudfw.Rule) string {
	switch {
	case !cloudfw.HasPorts(r.Protocol):
		return ""
	case r.Port == "" || r.Port == "any":
		return "all"
	}
	return r.Port
}

func ints(in []int64) []int {
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = int(v)
	}
	return out
}

func int64s(in []int) []int64 {
	out := make([]int64, len(in))
	for i, v := range in {
		out[i] = int64(v)
	}
	return out
}

func addresses(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// targets is the sources (inbound) or destinations (outbound) of a rule.
func targets(r cloudfw.Rule) godo.Sources {
	return godo.Sources{Addresses: addresses(r.CIDRs), Tags: r.Tags, DropletIDs: ints(r.DropletIDs),
		LoadBalancerUIDs: r.LoadBalancerUIDs, KubernetesIDs: r.KubernetesIDs}
}

// firewallRequest is the full object sent on create and update: the
// WireGuard rule plus the extras inbound, and the configured outbound rules
// or allow-all outbound when none are configured.
func firewallRequest(name string, wgPort int, extraIn, extraOut []cloudfw.Rule, dropletIDs []int64, tags []string) *godo.FirewallRequest {
	in := append([]cloudfw.Rule{cloudfw.WireGuard(wgPort)}, extraIn...)
	if len(extraOut) == 0 {
		extraOut = cloudfw.AllowAllOutbound()
	}
	req := &godo.FirewallRequest{
		Name:          name,
		InboundRules:  []godo.InboundRule{},
		OutboundRules: []godo.OutboundRule{},
		DropletIDs:    ints(dropletIDs),
		Tags:          append([]string{}, tags...),
	}
	for _, r := range in {
		t := targets(r)
		req.InboundRules = append(req.InboundRules, godo.InboundRule{Protocol: r.Protocol, PortRange: apiPorts(r),
			Action: godo.FirewallRuleAction(r.Action), Sources: &t})
	}
	for _, r := range extraOut {
		d := godo.Destinations(targets(r))
		req.OutboundRules = append(req.OutboundRules, godo.OutboundRule{Protocol: r.Protocol, PortRange: apiPorts(r),
			Action: godo.FirewallRuleAction(r.Action), Destinations: &d})
	}
	return req
}

// ruleFromAPI converts a rule the API returned. Ports "0" mean all ports
// for tcp/udp and nothing for icmp; action allow, the default, reads as
// unset. Bare IPs become /32 or /128; an address that does not parse is
// kept as an empty prefix, which matches nothing configured, so it shows
// as drift rather than vanishing.
func ruleFromAPI(dir, protocol, ports string, action godo.FirewallRuleAction, t godo.Sources) cloudfw.Rule {
	r := cloudfw.Rule{Direction: dir, Protocol: protocol, Tags: slices.Clone(t.Tags), DropletIDs: int64s(t.DropletIDs),
		LoadBalancerUIDs: slices.Clone(t.LoadBalancerUIDs), KubernetesIDs: slices.Clone(t.KubernetesIDs)}
	if action != godo.FirewallRuleActionAllow {
		r.Action = string(action)
	}
	for _, a := range t.Addresses {
		p, err := cloudfw.ParseCIDR(a)
		if err != nil {
			if q, perr := netip.ParsePrefix(a); perr == nil {
				p = q // host bits set by someone else: keep them visible
			}
		}
		r.CIDRs = append(r.CIDRs, p)
	}
	switch {
	case !cloudfw.HasPorts(protocol):
	case ports == "0" || ports == "":
		r.Port = "all"
	default:
		r.Port = ports
	}
	return r
}

// rulesFromAPI is every rule of the firewall in the shared model.
func rulesFromAPI(fw *godo.Firewall) (in, out []cloudfw.Rule) {
	for _, r := range fw.InboundRules {
		s := godo.Sources{}
		if r.Sources != nil {
			s = *r.Sources
		}
		in = append(in, ruleFromAPI(cloudfw.In, r.Protocol, r.PortRange, r.Action, s))
	}
	for _, r := range fw.OutboundRules {
		d := godo.Sources{}
		if r.Destinations != nil {
			d = godo.Sources(*r.Destinations)
		}
		out = append(out, ruleFromAPI(cloudfw.Out, r.Protocol, r.PortRange, r.Action, d))
	}
	return in, out
}

// observed is what Read learns from the API, split into the resource's
// attributes.
type observed struct {
	WireGuardPort int            // 0 when no WireGuard rule is present
	ExtraIn       []cloudfw.Rule // inbound rules other than the WireGuard one
	ExtraOut      []cloudfw.Rule // nil: outbound is the allow-all default; empty: no outbound rule at all
}

// splitRules recognises the WireGuard rule and the default outbound rules
// among the firewall's rules. priorPort is the port in state (0 on import);
// outConfigured says the configuration lists outbound rules.
func splitRules(fw *godo.Firewall, priorPort int, outConfigured bool) observed {
	in, out := rulesFromAPI(fw)
	var obs observed
	obs.WireGuardPort, obs.ExtraIn = cloudfw.FindWireGuard(in, priorPort)
	switch {
	case !outConfigured && cloudfw.SameSet(out, cloudfw.AllowAllOutbound()):
		obs.ExtraOut = nil
	case len(out) == 0:
		obs.ExtraOut = []cloudfw.Rule{} // no outbound rule at all: drift from the default
	default:
		obs.ExtraOut = out
	}
	return obs
}
