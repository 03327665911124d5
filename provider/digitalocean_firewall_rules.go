package provider

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/digitalocean/godo"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// doRule is one DigitalOcean rule in plain Go, between the Terraform model
// and godo. Targets are the sources of an inbound rule or the destinations
// of an outbound one. Strings keep the user's spelling; key() compares.
type doRule struct {
	Protocol         string
	Ports            string // "" when not set (icmp)
	Action           string // "allow" or "deny"; "" is the API's default, allow
	Addresses        []string
	Tags             []string
	DropletIDs       []int64
	LoadBalancerUIDs []string
	KubernetesIDs    []string
}

// doAction is the action as the API means it.
func doAction(a string) string {
	if a == "" {
		return string(godo.FirewallRuleActionAllow)
	}
	return a
}

// doProtocols are the protocols DigitalOcean firewalls support (spec D).
var doProtocols = []string{"tcp", "udp", "icmp"}

// wireGuardDORule is the one inbound rule every mesh node needs.
func wireGuardDORule(port int64) doRule {
	wg := cloudfw.WireGuard(int(port))
	addrs := make([]string, len(wg.CIDRs))
	for i, p := range wg.CIDRs {
		addrs[i] = p.String()
	}
	return doRule{Protocol: wg.Protocol, Ports: wg.Port, Addresses: addrs}
}

// allowAllOutbound is what "outbound unrestricted" means on DigitalOcean: a
// cloud firewall blocks all traffic no rule permits, outbound included, so
// leaving outbound rules out would cut the node off.
func doAllowAllOutbound() []doRule {
	anywhere := []string{"0.0.0.0/0", "::/0"}
	return []doRule{
		{Protocol: "tcp", Ports: "all", Addresses: anywhere},
		{Protocol: "udp", Ports: "all", Addresses: anywhere},
		{Protocol: "icmp", Addresses: anywhere},
	}
}

// canonicalPorts writes every spelling of "all ports" the same way and
// drops ports where the protocol has none.
func doCanonicalPorts(protocol, ports string) string {
	if protocol == "icmp" {
		return ""
	}
	switch ports {
	case "", "0", "all", "1-65535":
		return "all"
	}
	if lo, hi, ok := strings.Cut(ports, "-"); ok && lo == hi {
		return lo
	}
	return ports
}

// canonicalAddress writes an address the way netip does (bare IPs as /32
// or /128, IPv6 compressed); unparsable text is kept for the API to judge.
func doCanonicalAddress(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}

// key identifies a rule by meaning, whatever the order or spelling.
func (r doRule) key() string {
	addrs := make([]string, len(r.Addresses))
	for i, a := range r.Addresses {
		addrs[i] = doCanonicalAddress(a)
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	tags := slices.Clone(r.Tags)
	for i := range tags {
		tags[i] = strings.ToLower(tags[i])
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)
	ids := slices.Clone(r.DropletIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	lbs := slices.Sorted(slices.Values(r.LoadBalancerUIDs))
	k8s := slices.Sorted(slices.Values(r.KubernetesIDs))
	return fmt.Sprintf("%s|%s|%s|%s|%s|%v|%s|%s", doAction(r.Action), r.Protocol, doCanonicalPorts(r.Protocol, r.Ports),
		strings.Join(addrs, ","), strings.Join(tags, ","), ids, strings.Join(slices.Compact(lbs), ","), strings.Join(slices.Compact(k8s), ","))
}

// doSameRules compares two rule lists as sets.
func doSameRules(a, b []doRule) bool {
	return slices.Equal(doRuleKeys(a), doRuleKeys(b))
}

func doRuleKeys(rules []doRule) []string {
	k := make([]string, len(rules))
	for i, r := range rules {
		k[i] = r.key()
	}
	slices.Sort(k)
	return slices.Compact(k)
}

// validate checks one configured rule; field names the attribute for the
// message, e.g. "extra_inbound_rules".
func (r doRule) validate(field, targets string) error {
	if !slices.Contains(doProtocols, r.Protocol) {
		return fmt.Errorf("%s: protocol %q is not supported by DigitalOcean; use tcp, udp or icmp", field, r.Protocol)
	}
	switch {
	case r.Protocol == "icmp" && r.Ports != "":
		return fmt.Errorf("%s: port_range %q is set on an icmp rule, which has no ports; remove it", field, r.Ports)
	case r.Protocol != "icmp" && r.Ports == "":
		return fmt.Errorf("%s: port_range is required for %s; write \"22\", \"30000-32767\" or \"all\"", field, r.Protocol)
	case r.Protocol != "icmp" && r.Ports != "all":
		if _, _, err := config.ParsePortRange(r.Ports); err != nil {
			return fmt.Errorf("%s: port_range: %w (or \"all\")", field, err)
		}
	}
	if len(r.Addresses)+len(r.Tags)+len(r.DropletIDs)+len(r.LoadBalancerUIDs)+len(r.KubernetesIDs) == 0 {
		return fmt.Errorf("%s: a %s rule needs at least one of %s_addresses, %s_tags, %s_droplet_ids, %s_load_balancer_uids or %s_kubernetes_ids (0.0.0.0/0 and ::/0 for anywhere)",
			field, r.Protocol, targets, targets, targets, targets, targets)
	}
	if n := len(r.Addresses) + len(r.Tags) + len(r.DropletIDs) + len(r.LoadBalancerUIDs) + len(r.KubernetesIDs); n > doMaxTargets {
		return fmt.Errorf("%s: a rule has %d %ss; DigitalOcean allows at most %d per rule, split the rule", field, n, targets, doMaxTargets)
	}
	if _, err := cloudfw.ParseCIDRs(r.Addresses); err != nil {
		return fmt.Errorf("%s: %s_addresses: %w", field, targets, err)
	}
	for _, t := range r.Tags {
		if !doTagRE.MatchString(t) {
			return fmt.Errorf("%s: %s_tags: %q is not a valid tag name; use up to 255 letters, digits, ':', '-' or '_'", field, targets, t)
		}
	}
	for _, id := range r.DropletIDs {
		if id <= 0 {
			return fmt.Errorf("%s: %s_droplet_ids: %d is not a droplet ID; IDs are positive", field, targets, id)
		}
	}
	return nil
}

func (r doRule) apiPorts() string {
	if r.Protocol == "icmp" {
		return ""
	}
	return r.Ports
}

func doInts(in []int64) []int {
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = int(v)
	}
	return out
}

func doInt64s(in []int) []int64 {
	out := make([]int64, len(in))
	for i, v := range in {
		out[i] = int64(v)
	}
	return out
}

// firewallRequest is the full object sent on create and update: the
// WireGuard rule plus the extras inbound, and the configured outbound rules
// or allow-all outbound when none are configured.
func doFirewallRequest(name string, wgPort int64, extraIn, extraOut []doRule, dropletIDs []int64, tags []string) *godo.FirewallRequest {
	in := append([]doRule{wireGuardDORule(wgPort)}, extraIn...)
	if len(extraOut) == 0 {
		extraOut = doAllowAllOutbound()
	}
	req := &godo.FirewallRequest{
		Name:          name,
		InboundRules:  []godo.InboundRule{},
		OutboundRules: []godo.OutboundRule{},
		DropletIDs:    doInts(dropletIDs),
		Tags:          append([]string{}, tags...),
	}
	for _, r := range in {
		req.InboundRules = append(req.InboundRules, godo.InboundRule{Protocol: r.Protocol, PortRange: r.apiPorts(),
			Action: godo.FirewallRuleAction(r.Action),
			Sources: &godo.Sources{Addresses: r.Addresses, Tags: r.Tags, DropletIDs: doInts(r.DropletIDs),
				LoadBalancerUIDs: r.LoadBalancerUIDs, KubernetesIDs: r.KubernetesIDs}})
	}
	for _, r := range extraOut {
		req.OutboundRules = append(req.OutboundRules, godo.OutboundRule{Protocol: r.Protocol, PortRange: r.apiPorts(),
			Action: godo.FirewallRuleAction(r.Action),
			Destinations: &godo.Destinations{Addresses: r.Addresses, Tags: r.Tags, DropletIDs: doInts(r.DropletIDs),
				LoadBalancerUIDs: r.LoadBalancerUIDs, KubernetesIDs: r.KubernetesIDs}})
	}
	return req
}

// doRuleFromAPI converts a rule the API returned. Ports "0" mean all ports
// for tcp/udp and nothing for icmp; action allow, the default, reads as unset.
func doRuleFromAPI(protocol, ports string, action godo.FirewallRuleAction, t godo.Sources) doRule {
	r := doRule{Protocol: protocol, Addresses: slices.Clone(t.Addresses), Tags: slices.Clone(t.Tags), DropletIDs: doInt64s(t.DropletIDs),
		LoadBalancerUIDs: slices.Clone(t.LoadBalancerUIDs), KubernetesIDs: slices.Clone(t.KubernetesIDs)}
	if action != godo.FirewallRuleActionAllow {
		r.Action = string(action)
	}
	switch {
	case protocol == "icmp":
	case ports == "0" || ports == "":
		r.Ports = "all"
	default:
		r.Ports = ports
	}
	return r
}

// doObserved is what Read learns from the API, split into the resource's
// attributes.
type doObserved struct {
	WireGuardPort *int64   // nil when no WireGuard rule is present
	ExtraIn       []doRule // inbound rules other than the WireGuard one
	ExtraOut      []doRule // nil: outbound is the allow-all default
}

// splitRules recognises the WireGuard rule and the default outbound rules
// among the firewall's rules. priorPort is the port in state (nil on
// import); priorOutSet says the configuration lists outbound rules. Rules
// equal to a prior rule keep the prior spelling, so "1-65535" written by the
// user and "0" returned by the API cause no diff.
func doSplitRules(fw *godo.Firewall, priorPort *int64, priorIn, priorOut []doRule, priorOutSet bool) doObserved {
	var in, out []doRule
	for _, r := range fw.InboundRules {
		s := r.Sources
		if s == nil {
			s = &godo.Sources{}
		}
		in = append(in, doRuleFromAPI(r.Protocol, r.PortRange, r.Action, *s))
	}
	for _, r := range fw.OutboundRules {
		d := r.Destinations
		if d == nil {
			d = &godo.Destinations{}
		}
		out = append(out, doRuleFromAPI(r.Protocol, r.PortRange, r.Action, godo.Sources(*d)))
	}

	var obs doObserved
	wgAt := -1
	if priorPort != nil {
		want := wireGuardDORule(*priorPort).key()
		wgAt = slices.IndexFunc(in, func(r doRule) bool { return r.key() == want })
	} else {
		// Import: the WireGuard rule is a UDP single port from anywhere;
		// prefer the default port when several qualify.
		best := int64(0)
		for i, r := range in {
			p, err := strconv.ParseInt(r.Ports, 10, 64)
			if err != nil || r.key() != wireGuardDORule(p).key() {
				continue
			}
			if wgAt < 0 || p == 51820 || (best != 51820 && p < best) {
				wgAt, best = i, p
			}
		}
	}
	if wgAt >= 0 {
		p, _ := strconv.ParseInt(in[wgAt].Ports, 10, 64)
		obs.WireGuardPort = &p
		in = slices.Delete(in, wgAt, wgAt+1)
	}
	obs.ExtraIn = doKeepSpelling(in, priorIn)
	switch {
	case !priorOutSet && doSameRules(out, doAllowAllOutbound()):
		obs.ExtraOut = nil
	default:
		obs.ExtraOut = doKeepSpelling(out, priorOut)
		if obs.ExtraOut == nil {
			obs.ExtraOut = []doRule{} // no outbound rule at all: drift from the default
		}
	}
	return obs
}

// keepSpelling replaces each rule equal in meaning to a prior rule by the
// prior one, and drops duplicates.
func doKeepSpelling(got, prior []doRule) []doRule {
	var out []doRule
	seen := map[string]bool{}
	for _, r := range got {
		k := r.key()
		if seen[k] {
			continue
		}
		seen[k] = true
		if i := slices.IndexFunc(prior, func(p doRule) bool { return p.key() == k }); i >= 0 {
			r = prior[i]
		}
		out = append(out, r)
	}
	return out
}
