package provider

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
)

// hcloudProtocols are the protocols Hetzner Cloud firewalls accept.
var hcloudProtocols = []string{"tcp", "udp", "icmp", "esp", "gre"}

type hcloudFirewallModel struct {
	ID             types.String `tfsdk:"id"`
	Name           types.String `tfsdk:"name"`
	Labels         types.Map    `tfsdk:"labels"`
	WireGuardPort  types.Int64  `tfsdk:"wireguard_port"`
	ExtraRules     types.Set    `tfsdk:"extra_rules"`
	ServerIDs      types.Set    `tfsdk:"server_ids"`
	LabelSelectors types.Set    `tfsdk:"label_selectors"`
	Timeouts       types.Object `tfsdk:"timeouts"`
}

type hcloudRuleModel struct {
	Direction      types.String `tfsdk:"direction"`
	Protocol       types.String `tfsdk:"protocol"`
	Port           types.String `tfsdk:"port"`
	SourceIPs      types.Set    `tfsdk:"source_ips"`
	DestinationIPs types.Set    `tfsdk:"destination_ips"`
	Description    types.String `tfsdk:"description"`
}

var hcloudRuleAttrTypes = map[string]attr.Type{
	"direction":       types.StringType,
	"protocol":        types.StringType,
	"port":            types.StringType,
	"source_ips":      types.SetType{ElemType: types.StringType},
	"destination_ips": types.SetType{ElemType: types.StringType},
	"description":     types.StringType,
}

var hcloudRuleType = types.ObjectType{AttrTypes: hcloudRuleAttrTypes}

// toRule converts a configured rule to the shared model; the error names the
// offending attribute and says how to fix it.
func (m hcloudRuleModel) toRule(ctx context.Context) (cloudfw.Rule, string, error) {
	r := cloudfw.Rule{
		Direction:   m.Direction.ValueString(),
		Protocol:    m.Protocol.ValueString(),
		Port:        m.Port.ValueString(),
		Description: m.Description.ValueString(),
	}
	if r.Port == "any" {
		r.Port = ""
	}
	var src, dst []string
	if d := m.SourceIPs.ElementsAs(ctx, &src, false); d.HasError() {
		return r, "source_ips", fmt.Errorf("source_ips: %s", d[0].Detail())
	}
	if d := m.DestinationIPs.ElementsAs(ctx, &dst, false); d.HasError() {
		return r, "destination_ips", fmt.Errorf("destination_ips: %s", d[0].Detail())
	}
	own, other, ownName, otherName := src, dst, "source_ips", "destination_ips"
	if r.Direction == cloudfw.Out {
		own, other, ownName, otherName = dst, src, "destination_ips", "source_ips"
	}
	if len(other) > 0 && (r.Direction == cloudfw.In || r.Direction == cloudfw.Out) {
		return r, otherName, fmt.Errorf("%s is set on an %q rule; an %q rule takes %s only", otherName, r.Direction, r.Direction, ownName)
	}
	if len(own) > 100 {
		return r, ownName, fmt.Errorf("%s has %d entries; Hetzner Cloud allows at most 100 per rule, split the rule", ownName, len(own))
	}
	cidrs, err := cloudfw.ParseCIDRs(own)
	if err != nil {
		return r, ownName, fmt.Errorf("%s: %w", ownName, err)
	}
	r.CIDRs = cidrs
	if len(r.Description) > 255 {
		return r, "description", fmt.Errorf("description is %d characters; Hetzner Cloud allows at most 255", len(r.Description))
	}
	if err := r.Validate(hcloudProtocols...); err != nil {
		attr := "protocol"
		switch {
		case r.Direction != cloudfw.In && r.Direction != cloudfw.Out:
			attr = "direction"
		case len(r.CIDRs) == 0:
			attr = ownName
		case r.Port != "" && slices.Contains(hcloudProtocols, r.Protocol):
			attr = "port"
		}
		return r, attr, err
	}
	return r, "", nil
}

// ruleToModel is the inverse of toRule, in canonical spelling.
func ruleToModel(r cloudfw.Rule) hcloudRuleModel {
	c := r.Canonical()
	cidrs := make([]attr.Value, len(c.CIDRs))
	for i, p := range c.CIDRs {
		cidrs[i] = types.StringValue(p.String())
	}
	set := types.SetValueMust(types.StringType, cidrs)
	null := types.SetNull(types.StringType)
	m := hcloudRuleModel{
		Direction: types.StringValue(c.Direction), Protocol: types.StringValue(c.Protocol),
		Port: types.StringNull(), SourceIPs: null, DestinationIPs: null, Description: types.StringNull(),
	}
	if c.Port != "" {
		m.Port = types.StringValue(c.Port)
	}
	if c.Direction == cloudfw.In {
		m.SourceIPs = set
	} else {
		m.DestinationIPs = set
	}
	if c.Description != "" {
		m.Description = types.StringValue(c.Description)
	}
	return m
}

// extraRules reads the extra_rules set.
func (m hcloudFirewallModel) extraRules(ctx context.Context) ([]cloudfw.Rule, diag.Diagnostics) {
	var diags diag.Diagnostics
	if m.ExtraRules.IsNull() || m.ExtraRules.IsUnknown() {
		return nil, diags
	}
	var models []hcloudRuleModel
	diags.Append(m.ExtraRules.ElementsAs(ctx, &models, false)...)
	var out []cloudfw.Rule
	for _, rm := range models {
		r, attrName, err := rm.toRule(ctx)
		if err != nil {
			diags.AddError("Invalid extra_rules entry", fmt.Sprintf("extra_rules.%s: %v", attrName, err))
			continue
		}
		out = append(out, r)
	}
	return out, diags
}

// desiredRules is every rule the firewall must hold: the WireGuard rule
// first, then the extras.
func (m hcloudFirewallModel) desiredRules(ctx context.Context) ([]cloudfw.Rule, diag.Diagnostics) {
	extras, diags := m.extraRules(ctx)
	if m.WireGuardPort.IsNull() || m.WireGuardPort.IsUnknown() {
		return extras, diags
	}
	return append([]cloudfw.Rule{cloudfw.WireGuard(int(m.WireGuardPort.ValueInt64()))}, extras...), diags
}

// ruleIdentity compares rules as sets: canonical CIDRs and ports, plus the
// description (so a description changed outside shows as drift too).
func ruleIdentity(r cloudfw.Rule) string { return r.Key() + "|" + r.Description }

func sameRules(a, b []cloudfw.Rule) bool {
	ids := func(rules []cloudfw.Rule) []string {
		out := make([]string, len(rules))
		for i, r := range rules {
			out[i] = ruleIdentity(r)
		}
		sort.Strings(out)
		return slices.Compact(out)
	}
	return slices.Equal(ids(a), ids(b))
}

// hcloudRulesFrom converts rules for the API: bare IPs already became /32 or
// /128, IPv6 is written canonically, "all ports" is "any".
func hcloudRulesFrom(rules []cloudfw.Rule) []hcloud.FirewallRule {
	out := make([]hcloud.FirewallRule, 0, len(rules))
	for _, r := range rules {
		c := r.Canonical()
		fr := hcloud.FirewallRule{Direction: hcloud.FirewallRuleDirection(c.Direction), Protocol: hcloud.FirewallRuleProtocol(c.Protocol)}
		if c.Protocol == "tcp" || c.Protocol == "udp" {
			port := c.Port
			if port == "" {
				port = "any"
			}
			fr.Port = &port
		}
		nets := make([]net.IPNet, len(c.CIDRs))
		for i, p := range c.CIDRs {
			nets[i] = net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		}
		if c.Direction == cloudfw.In {
			fr.SourceIPs = nets
		} else {
			fr.DestinationIPs = nets
		}
		if c.Description != "" {
			d := c.Description
			fr.Description = &d
		}
		out = append(out, fr)
	}
	return out
}

// rulesFromHcloud converts rules read from the API.
func rulesFromHcloud(in []hcloud.FirewallRule) []cloudfw.Rule {
	out := make([]cloudfw.Rule, 0, len(in))
	for _, fr := range in {
		r := cloudfw.Rule{Direction: string(fr.Direction), Protocol: string(fr.Protocol)}
		if fr.Port != nil {
			r.Port = *fr.Port
		}
		if fr.Description != nil {
			r.Description = *fr.Description
		}
		nets := fr.SourceIPs
		if r.Direction == cloudfw.Out {
			nets = fr.DestinationIPs
		}
		for _, n := range nets {
			ones, _ := n.Mask.Size()
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				if len(n.Mask) == net.IPv4len {
					a = a.Unmap()
				}
				r.CIDRs = append(r.CIDRs, netip.PrefixFrom(a, ones))
			}
		}
		out = append(out, r.Canonical())
	}
	return out
}

// splitWireGuard finds the WireGuard rule among rules read from the API: the
// one for port (if known), else (after import) the UDP single-port rule from
// anywhere, preferring the one meshspan labelled. It returns the port found
// (0: none) and the remaining rules.
func splitWireGuard(rules []cloudfw.Rule, port int64) (int64, []cloudfw.Rule) {
	idx := -1
	if port > 0 {
		want := cloudfw.WireGuard(int(port)).Key()
		for i, r := range rules {
			if r.Key() == want {
				idx = i
				break
			}
		}
	} else {
		anywhere := cloudfw.Rule{CIDRs: cloudfw.Anywhere}.Canonical().CIDRs
		for i, r := range rules {
			if r.Direction != cloudfw.In || r.Protocol != "udp" || !slices.Equal(r.CIDRs, anywhere) {
				continue
			}
			if _, err := strconv.Atoi(r.Port); err != nil {
				continue
			}
			if idx < 0 || r.Description == cloudfw.WireGuardDescription {
				idx = i
			}
		}
	}
	if idx < 0 {
		return 0, rules
	}
	p, _ := strconv.ParseInt(rules[idx].Port, 10, 64)
	rest := append(slices.Clone(rules[:idx]), rules[idx+1:]...)
	return p, rest
}

// hcloudTargets converts server_ids and label_selectors to apply_to entries.
func hcloudTargets(ctx context.Context, m hcloudFirewallModel) ([]hcloud.FirewallResource, diag.Diagnostics) {
	var diags diag.Diagnostics
	var ids []int64
	var sels []string
	if !m.ServerIDs.IsNull() && !m.ServerIDs.IsUnknown() {
		diags.Append(m.ServerIDs.ElementsAs(ctx, &ids, false)...)
	}
	if !m.LabelSelectors.IsNull() && !m.LabelSelectors.IsUnknown() {
		diags.Append(m.LabelSelectors.ElementsAs(ctx, &sels, false)...)
	}
	slices.Sort(ids)
	slices.Sort(sels)
	var out []hcloud.FirewallResource
	for _, id := range ids {
		out = append(out, hcloud.FirewallResource{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: id}})
	}
	for _, s := range sels {
		out = append(out, hcloud.FirewallResource{Type: hcloud.FirewallResourceTypeLabelSelector, LabelSelector: &hcloud.FirewallResourceLabelSelector{Selector: s}})
	}
	return out, diags
}

func targetKey(r hcloud.FirewallResource) string {
	if r.Type == hcloud.FirewallResourceTypeServer && r.Server != nil {
		return "server:" + strconv.FormatInt(r.Server.ID, 10)
	}
	if r.LabelSelector != nil {
		return "selector:" + r.LabelSelector.Selector
	}
	return string(r.Type)
}

// targetDiff returns the entries of a missing from b.
func targetDiff(a, b []hcloud.FirewallResource) []hcloud.FirewallResource {
	have := map[string]bool{}
	for _, r := range b {
		have[targetKey(r)] = true
	}
	var out []hcloud.FirewallResource
	for _, r := range a {
		if !have[targetKey(r)] {
			out = append(out, r)
		}
	}
	return out
}

// directTargets strips the read-only applied_to_resources from read-back
// entries, so they can be sent as remove_from.
func directTargets(in []hcloud.FirewallResource) []hcloud.FirewallResource {
	out := make([]hcloud.FirewallResource, 0, len(in))
	for _, r := range in {
		out = append(out, hcloud.FirewallResource{Type: r.Type, Server: r.Server, LabelSelector: r.LabelSelector})
	}
	return out
}
