package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var (
	_ resource.Resource                   = (*digitalOceanFirewallResource)(nil)
	_ resource.ResourceWithConfigure      = (*digitalOceanFirewallResource)(nil)
	_ resource.ResourceWithImportState    = (*digitalOceanFirewallResource)(nil)
	_ resource.ResourceWithValidateConfig = (*digitalOceanFirewallResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*digitalOceanFirewallResource)(nil)
)

var (
	doNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9\.-]+$`)
	doTagRE  = regexp.MustCompile(`^[a-zA-Z0-9:\-_]{1,255}$`)
	doUUIDRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// DigitalOcean limits (spec B3, D).
const (
	doMaxRules    = 50
	doMaxDroplets = 10
	doMaxTags     = 5
	doMaxTargets  = 1000 // sources or destinations of one rule
	doDefaultPort = 51820
)

// NewDigitalOceanFirewallResource is the meshspan_digitalocean_firewall resource.
func NewDigitalOceanFirewallResource() resource.Resource {
	return &digitalOceanFirewallResource{pollTimeout: 5 * time.Minute, pollStart: 100 * time.Millisecond, pollMax: 5 * time.Second}
}

type digitalOceanFirewallResource struct {
	data *providerData
	// Status polling after each change: from pollStart doubling to pollMax,
	// for at most pollTimeout.
	pollTimeout, pollStart, pollMax time.Duration
}

type doFirewallModel struct {
	ID            types.String `tfsdk:"id"`
	Name          types.String `tfsdk:"name"`
	WireGuardPort types.Int64  `tfsdk:"wireguard_port"`
	ExtraInbound  types.Set    `tfsdk:"extra_inbound_rules"`
	ExtraOutbound types.Set    `tfsdk:"extra_outbound_rules"`
	DropletIDs    types.Set    `tfsdk:"droplet_ids"`
	Tags          types.Set    `tfsdk:"tags"`
	Status        types.String `tfsdk:"status"`
	CreatedAt     types.String `tfsdk:"created_at"`
}

type doInboundModel struct {
	Protocol         types.String `tfsdk:"protocol"`
	PortRange        types.String `tfsdk:"port_range"`
	Action           types.String `tfsdk:"action"`
	Addresses        types.Set    `tfsdk:"source_addresses"`
	Tags             types.Set    `tfsdk:"source_tags"`
	DropletIDs       types.Set    `tfsdk:"source_droplet_ids"`
	LoadBalancerUIDs types.Set    `tfsdk:"source_load_balancer_uids"`
	KubernetesIDs    types.Set    `tfsdk:"source_kubernetes_ids"`
}

type doOutboundModel struct {
	Protocol         types.String `tfsdk:"protocol"`
	PortRange        types.String `tfsdk:"port_range"`
	Action           types.String `tfsdk:"action"`
	Addresses        types.Set    `tfsdk:"destination_addresses"`
	Tags             types.Set    `tfsdk:"destination_tags"`
	DropletIDs       types.Set    `tfsdk:"destination_droplet_ids"`
	LoadBalancerUIDs types.Set    `tfsdk:"destination_load_balancer_uids"`
	KubernetesIDs    types.Set    `tfsdk:"destination_kubernetes_ids"`
}

func doRuleAttrTypes(targets string) map[string]attr.Type {
	return map[string]attr.Type{
		"protocol":                      types.StringType,
		"port_range":                    types.StringType,
		"action":                        types.StringType,
		targets + "_addresses":          types.SetType{ElemType: types.StringType},
		targets + "_tags":               types.SetType{ElemType: types.StringType},
		targets + "_droplet_ids":        types.SetType{ElemType: types.Int64Type},
		targets + "_load_balancer_uids": types.SetType{ElemType: types.StringType},
		targets + "_kubernetes_ids":     types.SetType{ElemType: types.StringType},
	}
}

func (r *digitalOceanFirewallResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_digitalocean_firewall"
}

func doRuleSchema(dir, targets, example string) schema.SetNestedAttribute {
	return schema.SetNestedAttribute{
		MarkdownDescription: fmt.Sprintf("Extra %s rules, compared as a set (order never matters). %s", dir, example),
		Optional:            true,
		Computed:            true,
		Default:             setdefault.StaticValue(types.SetValueMust(types.ObjectType{AttrTypes: doRuleAttrTypes(targets)}, []attr.Value{})),
		NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
			"protocol": schema.StringAttribute{
				MarkdownDescription: "`tcp`, `udp` or `icmp`.",
				Required:            true,
			},
			"port_range": schema.StringAttribute{
				MarkdownDescription: "Required for `tcp` and `udp`: a port (`\"6443\"`), a range (`\"30000-32767\"`) or `\"all\"` " +
					"(the API stores all ports as `\"0\"`; `\"all\"`, `\"0\"` and `\"1-65535\"` compare equal). Must be unset for `icmp`.",
				Optional: true,
			},
			targets + "_addresses": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IPv4/IPv6 addresses or CIDRs the rule %s (host bits must be zero; `0.0.0.0/0` and `::/0` for anywhere).", map[string]string{"source": "admits traffic from", "destination": "allows traffic to"}[targets]),
				ElementType:         types.StringType,
				Optional:            true,
			},
			"action": schema.StringAttribute{
				MarkdownDescription: "`allow` (the default when unset) or `deny`. A rule switched in the console shows in the next plan.",
				Optional:            true,
				Validators:          []validator.String{stringvalidator.OneOf("allow", "deny")},
			},
			targets + "_load_balancer_uids": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("UUIDs of load balancers that are %ss of the rule.", targets),
				ElementType:         types.StringType,
				Optional:            true,
			},
			targets + "_kubernetes_ids": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IDs of Kubernetes clusters whose nodes are %ss of the rule.", targets),
				ElementType:         types.StringType,
				Optional:            true,
			},
			targets + "_tags": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("Names of DigitalOcean tags whose droplets are %ss of the rule.", targets),
				ElementType:         types.StringType,
				Optional:            true,
			},
			targets + "_droplet_ids": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IDs of droplets that are %ss of the rule.", targets),
				ElementType:         types.Int64Type,
				Optional:            true,
			},
		}},
	}
}

func (r *digitalOceanFirewallResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A DigitalOcean cloud firewall that admits only WireGuard: one inbound rule for the mesh's " +
			"WireGuard port over UDP from `0.0.0.0/0` and `::/0`, plus any `extra_inbound_rules`. " +
			"DigitalOcean blocks all traffic no rule permits, outbound included, so unless `extra_outbound_rules` is set the " +
			"provider sends allow-all outbound rules (tcp, udp and icmp to `0.0.0.0/0` and `::/0`). " +
			"Rules added or removed outside Terraform show up as a diff; a firewall deleted outside Terraform is created again. " +
			"Requires `digitalocean_token` with write scope.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The firewall's UUID; `terraform import` takes it.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "Firewall name, unique in the account: letters, digits, `.` and `-`, starting with a letter or digit.",
				Required:            true,
			},
			"wireguard_port": schema.Int64Attribute{
				MarkdownDescription: "UDP port WireGuard listens on; the only port open to the internet. Pass " +
					"`data.meshspan_machine_config.<name>.listen_port` so firewall and nodes agree. Defaults to `51820`.",
				Optional: true,
				Computed: true,
				Default:  int64default.StaticInt64(doDefaultPort),
			},
			"extra_inbound_rules": doRuleSchema("inbound", "source",
				"Use them for management access, e.g. TCP 6443 and 50000 from `100.64.0.0/10` only."),
			"extra_outbound_rules": doRuleSchema("outbound", "destination",
				"When set, outbound traffic is limited to exactly these rules; when unset, all outbound traffic is allowed."),
			"droplet_ids": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IDs of droplets the firewall applies to (at most %d; use `tags` for more).", doMaxDroplets),
				ElementType:         types.Int64Type,
				Optional:            true,
				Computed:            true,
				Default:             setdefault.StaticValue(types.SetValueMust(types.Int64Type, []attr.Value{})),
			},
			"tags": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("Tags whose droplets the firewall applies to (at most %d). The tags must exist "+
					"(e.g. `digitalocean_tag`). Not to be confused with `source_tags` inside a rule.", doMaxTags),
				ElementType: types.StringType,
				Optional:    true,
				Computed:    true,
				Default:     setdefault.StaticValue(types.SetValueMust(types.StringType, []attr.Value{})),
			},
			"status": schema.StringAttribute{
				MarkdownDescription: "`waiting` while DigitalOcean applies a change, then `succeeded` (or `failed`). The provider waits for it after each change.",
				// No UseStateForUnknown: a refresh may have stored "waiting",
				// and an update ends in "succeeded".
				Computed: true,
			},
			"created_at": schema.StringAttribute{
				MarkdownDescription: "When the firewall was created (RFC 3339).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (r *digitalOceanFirewallResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("expected *providerData, got %T; this is a provider bug", req.ProviderData))
		return
	}
	r.data = data
}

func (r *digitalOceanFirewallResource) client(diags *diag.Diagnostics) *godo.Client {
	if r.data == nil {
		diags.AddError("Provider not configured", "meshspan_digitalocean_firewall needs the provider to be configured; this is a provider bug")
		return nil
	}
	c, err := newDigitalOceanClient(r.data)
	if err != nil {
		diags.AddError("DigitalOcean client", err.Error())
		return nil
	}
	return c
}

// doDesired is the configuration in plain Go.
type doDesired struct {
	name       string
	port       int64
	extraIn    []doRule
	extraOut   []doRule
	dropletIDs []int64
	tags       []string
}

func (m *doFirewallModel) doDesired(ctx context.Context, diags *diag.Diagnostics) doDesired {
	d := doDesired{name: m.Name.ValueString(), port: m.WireGuardPort.ValueInt64()}
	if m.WireGuardPort.IsNull() || m.WireGuardPort.IsUnknown() {
		d.port = doDefaultPort
	}
	d.extraIn = doRulesFrom[doInboundModel](ctx, m.ExtraInbound, diags)
	d.extraOut = doRulesFrom[doOutboundModel](ctx, m.ExtraOutbound, diags)
	diags.Append(m.DropletIDs.ElementsAs(ctx, &d.dropletIDs, false)...)
	diags.Append(m.Tags.ElementsAs(ctx, &d.tags, false)...)
	return d
}

func (d doDesired) request() *godo.FirewallRequest {
	return doFirewallRequest(d.name, d.port, d.extraIn, d.extraOut, d.dropletIDs, d.tags)
}

// doElems reads a set's elements (none when null).
func doElems[T any](ctx context.Context, s types.Set, diags *diag.Diagnostics) []T {
	var out []T
	diags.Append(s.ElementsAs(ctx, &out, false)...)
	return out
}

// doRulesFrom reads extra inbound or outbound rules: the two models differ
// only in their attribute names, so one converts to the other.
func doRulesFrom[M doInboundModel | doOutboundModel](ctx context.Context, set types.Set, diags *diag.Diagnostics) []doRule {
	ms := doElems[M](ctx, set, diags)
	out := make([]doRule, 0, len(ms))
	for _, m := range ms {
		m := doInboundModel(m)
		out = append(out, doRule{Protocol: m.Protocol.ValueString(), Ports: m.PortRange.ValueString(), Action: m.Action.ValueString(),
			Addresses: doElems[string](ctx, m.Addresses, diags), Tags: doElems[string](ctx, m.Tags, diags),
			DropletIDs:       doElems[int64](ctx, m.DropletIDs, diags),
			LoadBalancerUIDs: doElems[string](ctx, m.LoadBalancerUIDs, diags),
			KubernetesIDs:    doElems[string](ctx, m.KubernetesIDs, diags)})
	}
	return out
}

// doSetOf returns a set value, null when empty so it matches an unset
// attribute (configured sets must not be empty, see ValidateConfig).
func doSetOf[T any](ctx context.Context, elem attr.Type, v []T, diags *diag.Diagnostics) types.Set {
	if len(v) == 0 {
		return types.SetNull(elem)
	}
	s, d := types.SetValueFrom(ctx, elem, v)
	diags.Append(d...)
	return s
}

// doRuleSet is rules as a set value; none is the empty set.
// doEmptySetOf is v as a set, the empty set when v is empty.
func doEmptySetOf[T any](ctx context.Context, elem attr.Type, v []T, diags *diag.Diagnostics) types.Set {
	if len(v) == 0 {
		return types.SetValueMust(elem, []attr.Value{})
	}
	return doSetOf(ctx, elem, v, diags)
}

func doRuleSet(ctx context.Context, targets string, rules []doRule, diags *diag.Diagnostics) types.Set {
	objType := types.ObjectType{AttrTypes: doRuleAttrTypes(targets)}
	elems := make([]attr.Value, 0, len(rules))
	for _, r := range rules {
		ports := types.StringNull()
		if r.Ports != "" {
			ports = types.StringValue(r.Ports)
		}
		action := types.StringNull()
		if r.Action != "" {
			action = types.StringValue(r.Action)
		}
		obj, d := types.ObjectValue(objType.AttrTypes, map[string]attr.Value{
			"protocol":                      types.StringValue(r.Protocol),
			"port_range":                    ports,
			"action":                        action,
			targets + "_addresses":          doSetOf(ctx, types.StringType, r.Addresses, diags),
			targets + "_tags":               doSetOf(ctx, types.StringType, r.Tags, diags),
			targets + "_droplet_ids":        doSetOf(ctx, types.Int64Type, r.DropletIDs, diags),
			targets + "_load_balancer_uids": doSetOf(ctx, types.StringType, r.LoadBalancerUIDs, diags),
			targets + "_kubernetes_ids":     doSetOf(ctx, types.StringType, r.KubernetesIDs, diags),
		})
		diags.Append(d...)
		elems = append(elems, obj)
	}
	s, d := types.SetValue(objType, elems)
	diags.Append(d...)
	return s
}

// ValidateConfig rejects at plan time what the API would refuse, naming the
// attribute and the fix.
func (r *digitalOceanFirewallResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m doFirewallModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if n := m.Name; !n.IsNull() && !n.IsUnknown() && !doNameRE.MatchString(n.ValueString()) {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Invalid firewall name",
			fmt.Sprintf("name %q: use at least two characters of letters, digits, '.' and '-', starting with a letter or digit", n.ValueString()))
	}
	if p := m.WireGuardPort; !p.IsNull() && !p.IsUnknown() && (p.ValueInt64() < 1 || p.ValueInt64() > 65535) {
		resp.Diagnostics.AddAttributeError(path.Root("wireguard_port"), "Invalid WireGuard port",
			fmt.Sprintf("wireguard_port %d is not a UDP port; use 1..65535 (the machine config's listen_port)", p.ValueInt64()))
	}
	for _, s := range []struct {
		name string
		set  types.Set
		max  int
	}{{"droplet_ids", m.DropletIDs, doMaxDroplets}, {"tags", m.Tags, doMaxTags},
		{"extra_inbound_rules", m.ExtraInbound, doMaxRules - 1}, {"extra_outbound_rules", m.ExtraOutbound, doMaxRules}} {
		if s.set.IsNull() || s.set.IsUnknown() {
			continue
		}
		if n := len(s.set.Elements()); n > s.max {
			resp.Diagnostics.AddAttributeError(path.Root(s.name), "Too many entries",
				fmt.Sprintf("%s has %d entries; DigitalOcean allows at most %d here", s.name, n, s.max))
		}
	}
	if !m.Tags.IsUnknown() {
		for _, t := range doElems[string](ctx, m.Tags, &resp.Diagnostics) {
			if !doTagRE.MatchString(t) {
				resp.Diagnostics.AddAttributeError(path.Root("tags"), "Invalid tag",
					fmt.Sprintf("tag %q: use up to 255 letters, digits, ':', '-' or '_'", t))
			}
		}
	}
	if m.ExtraInbound.IsUnknown() || m.ExtraOutbound.IsUnknown() || resp.Diagnostics.HasError() {
		return
	}
	in := doRulesFrom[doInboundModel](ctx, m.ExtraInbound, &resp.Diagnostics)
	out := doRulesFrom[doOutboundModel](ctx, m.ExtraOutbound, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	if len(in)+1+max(len(out), len(doAllowAllOutbound())) > doMaxRules {
		resp.Diagnostics.AddError("Too many rules", fmt.Sprintf("the WireGuard rule plus %d inbound and %d outbound rules exceed DigitalOcean's %d rules per firewall", len(in), len(out), doMaxRules))
	}
	for _, rule := range in {
		if err := rule.validate("extra_inbound_rules", "source"); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("extra_inbound_rules"), "Invalid inbound rule", err.Error())
		}
		if p := m.WireGuardPort; !p.IsUnknown() {
			port := int64(doDefaultPort)
			if !p.IsNull() {
				port = p.ValueInt64()
			}
			if rule.key() == wireGuardDORule(port).key() {
				resp.Diagnostics.AddAttributeError(path.Root("extra_inbound_rules"), "Duplicate WireGuard rule",
					fmt.Sprintf("extra_inbound_rules repeats the WireGuard rule (udp %d from anywhere) the resource always adds; remove it", port))
			}
		}
	}
	for _, rule := range out {
		if err := rule.validate("extra_outbound_rules", "destination"); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("extra_outbound_rules"), "Invalid outbound rule", err.Error())
		}
	}
}

func (r *digitalOceanFirewallResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan doFirewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.client(&resp.Diagnostics)
	want := plan.doDesired(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	fw, _, err := c.Firewalls.Create(ctx, want.request())
	if err != nil {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("create firewall %q", want.name), err)
		return
	}
	// Record the firewall before waiting, so a failed wait leaves it in
	// state (tainted) instead of orphaned.
	r.setState(ctx, fw, &plan, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if fw, err = r.waitApplied(ctx, c, fw.ID); err != nil {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("wait for firewall %q to apply", want.name), err)
		return
	}
	r.setState(ctx, fw, &plan, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *digitalOceanFirewallResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state doFirewallModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.client(&resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	fw, _, err := c.Firewalls.Get(ctx, state.ID.ValueString())
	if isDigitalOceanNotFound(err) {
		// Deleted outside Terraform: forget it, the next apply creates it.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("read firewall %q", state.ID.ValueString()), err)
		return
	}
	r.setState(ctx, fw, &state, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *digitalOceanFirewallResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state doFirewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.client(&resp.Diagnostics)
	want := plan.doDesired(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	// PUT replaces the whole object: rules, droplets and tags in one call.
	fw, _, err := c.Firewalls.Update(ctx, id, want.request())
	if err != nil {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("update firewall %q", want.name), err)
		return
	}
	if fw, err = r.waitApplied(ctx, c, fw.ID); err != nil {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("wait for firewall %q to apply", want.name), err)
		return
	}
	r.setState(ctx, fw, &plan, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *digitalOceanFirewallResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state doFirewallModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.client(&resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	fw, _, err := c.Firewalls.Get(ctx, id)
	if isDigitalOceanNotFound(err) {
		return
	}
	if err != nil {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("read firewall %q before delete", id), err)
		return
	}
	// Detach first, using what the API says is attached (it may differ
	// from state), so droplets are never left half-configured.
	if len(fw.DropletIDs) > 0 {
		if _, err := c.Firewalls.RemoveDroplets(ctx, id, fw.DropletIDs...); err != nil && !isDigitalOceanNotFound(err) {
			addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("detach droplets %v from firewall %q", fw.DropletIDs, id), err)
			return
		}
	}
	if len(fw.Tags) > 0 {
		if _, err := c.Firewalls.RemoveTags(ctx, id, fw.Tags...); err != nil && !isDigitalOceanNotFound(err) {
			addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("detach tags %v from firewall %q", fw.Tags, id), err)
			return
		}
	}
	if _, err := c.Firewalls.Delete(ctx, id); err != nil && !isDigitalOceanNotFound(err) {
		addDigitalOceanError(&resp.Diagnostics, fmt.Sprintf("delete firewall %q", id), err)
	}
}

// ModifyPlan keeps the state's spelling of the extra rules when the
// configured ones mean the same ("1-65535" for all ports, a source_tags = []
// the API leaves out): after an import the state holds only the API's
// spelling. Terraform accepts a planned value equal to the prior state.
func (r *digitalOceanFirewallResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var plan, state doFirewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	keep := func(name string, p, s types.Set, read func(types.Set, *diag.Diagnostics) []doRule) {
		if p.IsUnknown() || p.IsNull() || s.IsNull() || p.Equal(s) || len(p.Elements()) != len(s.Elements()) {
			return
		}
		for _, e := range p.Elements() {
			if obj, ok := e.(types.Object); !ok || hasUnknown(obj.Attributes()) {
				return
			}
		}
		var d diag.Diagnostics
		want, have := read(p, &d), read(s, &d)
		if d.HasError() || !doSameRules(want, have) {
			return
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root(name), s)...)
	}
	keep("extra_inbound_rules", plan.ExtraInbound, state.ExtraInbound, func(s types.Set, d *diag.Diagnostics) []doRule {
		return doRulesFrom[doInboundModel](ctx, s, d)
	})
	keep("extra_outbound_rules", plan.ExtraOutbound, state.ExtraOutbound, func(s types.Set, d *diag.Diagnostics) []doRule {
		return doRulesFrom[doOutboundModel](ctx, s, d)
	})
}

func (r *digitalOceanFirewallResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if !doUUIDRE.MatchString(req.ID) {
		resp.Diagnostics.AddError("Invalid import ID",
			fmt.Sprintf("%q is not a DigitalOcean firewall ID; import by UUID, e.g. terraform import meshspan_digitalocean_firewall.mesh 0d7d9d4c-5a43-4c6e-9a3c-0f2b8e1d6a11 (doctl compute firewall list shows them)", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
}

// waitApplied polls the firewall until DigitalOcean has applied it.
func (r *digitalOceanFirewallResource) waitApplied(ctx context.Context, c *godo.Client, id string) (*godo.Firewall, error) {
	ctx, cancel := context.WithTimeout(ctx, r.pollTimeout)
	defer cancel()
	wait := r.pollStart
	for {
		fw, _, err := c.Firewalls.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		switch fw.Status {
		case "failed":
			return nil, fmt.Errorf("DigitalOcean reports status \"failed\" for firewall %q (pending changes %+v); check the droplets and tags it applies to", id, fw.PendingChanges)
		case "waiting":
		default:
			return fw, nil
		}
		if err := sleepCtx(ctx, wait); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("firewall %q still \"waiting\" after %s: DigitalOcean has not finished applying it; check its droplets and tags in the DigitalOcean console, then run terraform again", id, r.pollTimeout)
			}
			return nil, err
		}
		wait = min(wait*2, r.pollMax)
	}
}

// setState writes what the API holds into m, keeping m's spelling for rules
// that mean the same.
func (r *digitalOceanFirewallResource) setState(ctx context.Context, fw *godo.Firewall, m *doFirewallModel, diags *diag.Diagnostics) {
	var priorPort *int64
	if !m.WireGuardPort.IsNull() && !m.WireGuardPort.IsUnknown() {
		p := m.WireGuardPort.ValueInt64()
		priorPort = &p
	}
	var priorIn, priorOut []doRule
	if !m.ExtraInbound.IsUnknown() {
		priorIn = doRulesFrom[doInboundModel](ctx, m.ExtraInbound, diags)
	}
	if !m.ExtraOutbound.IsUnknown() {
		priorOut = doRulesFrom[doOutboundModel](ctx, m.ExtraOutbound, diags)
	}
	obs := doSplitRules(fw, priorPort, priorIn, priorOut, !m.ExtraOutbound.IsNull() && len(priorOut) > 0)

	m.ID = types.StringValue(fw.ID)
	m.Name = types.StringValue(fw.Name)
	m.Status = types.StringValue(fw.Status)
	m.CreatedAt = types.StringValue(fw.Created)
	if obs.WireGuardPort != nil {
		m.WireGuardPort = types.Int64Value(*obs.WireGuardPort)
	} else {
		// No WireGuard rule: null differs from the configured port, so
		// the plan shows the rule being put back.
		m.WireGuardPort = types.Int64Null()
	}
	// Empty is the empty set, as `[]`, null and omitted all plan (the
	// schema defaults). The one null: a firewall with no outbound rule at
	// all, which no configuration plans, so the drift shows.
	m.ExtraInbound = doRuleSet(ctx, "source", obs.ExtraIn, diags)
	switch {
	case obs.ExtraOut == nil:
		m.ExtraOutbound = doRuleSet(ctx, "destination", nil, diags)
	case len(obs.ExtraOut) == 0:
		m.ExtraOutbound = types.SetNull(types.ObjectType{AttrTypes: doRuleAttrTypes("destination")})
	default:
		m.ExtraOutbound = doRuleSet(ctx, "destination", obs.ExtraOut, diags)
	}
	m.DropletIDs = doEmptySetOf(ctx, types.Int64Type, doInt64s(fw.DropletIDs), diags)
	m.Tags = doEmptySetOf(ctx, types.StringType, fw.Tags, diags)
}
