package hcloud

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
)

// protocols are the protocols Hetzner Cloud firewalls accept.
var protocols = []string{"tcp", "udp", "icmp", "esp", "gre"}

type firewallModel struct {
	ID             types.String   `tfsdk:"id"`
	Name           types.String   `tfsdk:"name"`
	Labels         types.Map      `tfsdk:"labels"`
	WireGuardPort  types.Int64    `tfsdk:"wireguard_port"`
	ExtraRules     types.Set      `tfsdk:"extra_rules"`
	ServerIDs      types.Set      `tfsdk:"server_ids"`
	LabelSelectors types.Set      `tfsdk:"label_selectors"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`
}

type ruleModel struct {
	Direction      types.String `tfsdk:"direction"`
	Protocol       types.String `tfsdk:"protocol"`
	Port           types.String `tfsdk:"port"`
	SourceIPs      types.Set    `tfsdk:"source_ips"`
	DestinationIPs types.Set    `tfsdk:"destination_ips"`
	Description    types.String `tfsdk:"description"`
}

var ruleAttrTypes = map[string]attr.Type{
	"direction":       types.StringType,
	"protocol":        types.StringType,
	"port":            types.StringType,
	"source_ips":      types.SetType{ElemType: types.StringType},
	"destination_ips": types.SetType{ElemType: types.StringType},
	"description":     types.StringType,
}

var ruleType = types.ObjectType{AttrTypes: ruleAttrTypes}

// toRule converts a configured rule to the shared model and checks what
// the attribute validators cannot: how the attributes fit together. The
// error names the offending attribute and says how to fix it. Addresses the
// CIDR validator refuses are left out here (it reports them).
func (m ruleModel) toRule(ctx context.Context) (cloudfw.Rule, string, error) {
	r := cloudfw.Rule{
		Direction:   m.Direction.ValueString(),
		Protocol:    m.Protocol.ValueString(),
		Port:        m.Port.ValueString(),
		Description: m.Description.ValueString(),
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
	for _, s := range own {
		if p, err := cloudfw.ParseCIDR(s); err == nil {
			r.CIDRs = append(r.CIDRs, p)
		}
	}
	switch {
	case len(other) > 0 && (r.Direction == cloudfw.In || r.Direction == cloudfw.Out):
		return r, otherName, fmt.Errorf("%s is set on an %q rule; an %q rule takes %s only", otherName, r.Direction, r.Direction, ownName)
	case !cloudfw.HasPorts(r.Protocol) && r.Port != "":
		return r, "port", fmt.Errorf("port %q is set but %s has no ports; remove it", r.Port, r.Protocol)
	case len(own) == 0:
		return r, ownName, fmt.Errorf("no addresses: an %s rule needs at least one entry in %s (0.0.0.0/0 and ::/0 for anywhere)", r.Direction, ownName)
	}
	return r, "", nil
}

// ruleToModel is the inverse of toRule, in canonical spelling.
func ruleToModel(r cloudfw.Rule) ruleModel {
	c := r.Canonical()
	cidrs := make([]attr.Value, len(c.CIDRs))
	for i, p := range c.CIDRs {
		cidrs[i] = types.StringValue(p.String())
	}
	set := types.SetValueMust(types.StringType, cidrs)
	null := types.SetNull(types.StringType)
	m := ruleModel{
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
func (m firewallModel) extraRules(ctx context.Context) ([]cloudfw.Rule, diag.Diagnostics) {
	var diags diag.Diagnostics
	if m.ExtraRules.IsNull() || m.ExtraRules.IsUnknown() {
		return nil, diags
	}
	var models []ruleModel
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
func (m firewallModel) desiredRules(ctx context.Context) ([]cloudfw.Rule, diag.Diagnostics) {
	extras, diags := m.extraRules(ctx)
	if m.WireGuardPort.IsNull() || m.WireGuardPort.IsUnknown() {
		return extras, diags
	}
	return append([]cloudfw.Rule{cloudfw.WireGuard(int(m.WireGuardPort.ValueInt64()))}, extras...), diags
}

// sameRules compares rules as sets: canonical CIDRs and ports, plus the
// description (so a description changed outside shows as drift too).
func sameRules(a, b []cloudfw.Rule) bool { return cloudfw.SameSetWithDescriptions(a, b) }

func toAPIRules(rules []cloudfw.Rule) []hcloud.FirewallRule {
	out := make([]hcloud.FirewallRule, 0, len(rules))
	for _, r := range rules {
		c := r.Canonical()
		fr := hcloud.FirewallRule{Direction: hcloud.FirewallRuleDirection(c.Direction), Protocol: hcloud.FirewallRuleProtocol(c.Protocol)}
		if cloudfw.HasPorts(c.Protocol) {
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

// fromAPIRules converts rules read from the API.
func fromAPIRules(in []hcloud.FirewallRule) []cloudfw.Rule {
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

func targetsOf(ctx context.Context, m firewallModel) ([]hcloud.FirewallResource, diag.Diagnostics) {
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
