package digitalocean

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
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
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/provider/cloudhttp"
	"github.com/meshspan/terraform-provider-meshspan/provider/cloudres"
)

var (
	_ resource.Resource                   = (*firewallResource)(nil)
	_ resource.ResourceWithConfigure      = (*firewallResource)(nil)
	_ resource.ResourceWithImportState    = (*firewallResource)(nil)
	_ resource.ResourceWithValidateConfig = (*firewallResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*firewallResource)(nil)
)

var (
	nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9\.-]+$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9:\-_]{1,255}$`)
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// DigitalOcean limits.
const (
	maxRules    = 50
	maxDroplets = 10
	maxTags     = 5
	maxTargets  = 1000 // sources or destinations of one rule
)

// NewFirewallResource is the meshspan_digitalocean_firewall resource.
func NewFirewallResource() resource.Resource {
	return &firewallResource{pollStart: 100 * time.Millisecond, pollMax: 5 * time.Second}
}

type firewallResource struct {
	data *Config
	// Status polling after each change: from pollStart doubling to pollMax,
	// within the operation's timeout.
	pollStart, pollMax time.Duration
}

type firewallModel struct {
	ID            types.String   `tfsdk:"id"`
	Name          types.String   `tfsdk:"name"`
	WireGuardPort types.Int64    `tfsdk:"wireguard_port"`
	ExtraInbound  types.Set      `tfsdk:"extra_inbound_rules"`
	ExtraOutbound types.Set      `tfsdk:"extra_outbound_rules"`
	DropletIDs    types.Set      `tfsdk:"droplet_ids"`
	Tags          types.Set      `tfsdk:"tags"`
	Status        types.String   `tfsdk:"status"`
	CreatedAt     types.String   `tfsdk:"created_at"`
	Timeouts      timeouts.Value `tfsdk:"timeouts"`
}

type inboundModel struct {
	Protocol         types.String `tfsdk:"protocol"`
	PortRange        types.String `tfsdk:"port_range"`
	Action           types.String `tfsdk:"action"`
	Addresses        types.Set    `tfsdk:"source_addresses"`
	Tags             types.Set    `tfsdk:"source_tags"`
	DropletIDs       types.Set    `tfsdk:"source_droplet_ids"`
	LoadBalancerUIDs types.Set    `tfsdk:"source_load_balancer_uids"`
	KubernetesIDs    types.Set    `tfsdk:"source_kubernetes_ids"`
}

// outboundModel differs from inboundModel only in its attribute names.
type outboundModel struct {
	Protocol         types.String `tfsdk:"protocol"`
	PortRange        types.String `tfsdk:"port_range"`
	Action           types.String `tfsdk:"action"`
	Addresses        types.Set    `tfsdk:"destination_addresses"`
	Tags             types.Set    `tfsdk:"destination_tags"`
	DropletIDs       types.Set    `tfsdk:"destination_droplet_ids"`
	LoadBalancerUIDs types.Set    `tfsdk:"destination_load_balancer_uids"`
	KubernetesIDs    types.Set    `tfsdk:"destination_kubernetes_ids"`
}

// targetsOf is the attribute prefix of a direction's targets.
func targetsOf(dir string) string {
	if dir == cloudfw.Out {
		return "destination"
	}
	return "source"
}

func ruleAttrTypes(targets string) map[string]attr.Type {
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

func ruleType(dir string) types.ObjectType {
	return types.ObjectType{AttrTypes: ruleAttrTypes(targetsOf(dir))}
}

func (r *firewallResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_digitalocean_firewall"
}

func tagValidator() validator.String {
	return stringvalidator.RegexMatches(tagRE, "must be a tag name: up to 255 letters, digits, ':', '-' or '_'")
}

func ruleSchema(dir, example string, max int) schema.SetNestedAttribute {
	targets := targetsOf(dir)
	word := map[string]string{cloudfw.In: "inbound", cloudfw.Out: "outbound"}[dir]
	verb := map[string]string{cloudfw.In: "admits traffic from", cloudfw.Out: "allows traffic to"}[dir]
	return schema.SetNestedAttribute{
		MarkdownDescription: fmt.Sprintf("Extra %s rules, compared as a set (order never matters). %s At most %d.", word, example, max),
		Optional:            true,
		Computed:            true,
		Default:             setdefault.StaticValue(types.SetValueMust(ruleType(dir), []attr.Value{})),
		Validators:          []validator.Set{setvalidator.SizeAtMost(max)},
		NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
			"protocol": schema.StringAttribute{
				MarkdownDescription: "`tcp`, `udp` or `icmp`.",
				Required:            true,
				Validators:          []validator.String{stringvalidator.OneOf(protocols...)},
			},
			"port_range": schema.StringAttribute{
				MarkdownDescription: "Required for `tcp` and `udp`: a port (`\"6443\"`), a range (`\"30000-32767\"`) or `\"all\"` " +
					"(the API stores all ports as `\"0\"`; `\"all\"` and `\"1-65535\"` compare equal). Must be unset for `icmp`.",
				Optional:   true,
				Validators: []validator.String{cloudfw.PortValidator()},
			},
			"action": schema.StringAttribute{
				MarkdownDescription: "`allow` (the default when unset) or `deny`. A rule switched in the console shows in the next plan.",
				Optional:            true,
				Validators:          []validator.String{stringvalidator.OneOf(cloudfw.Allow, cloudfw.Deny)},
			},
			targets + "_addresses": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IPv4/IPv6 addresses or CIDRs the rule %s (host bits must be zero; `0.0.0.0/0` and `::/0` for anywhere).", verb),
				ElementType:         types.StringType,
				Optional:            true,
				Validators:          []validator.Set{setvalidator.ValueStringsAre(cloudfw.CIDRValidator())},
			},
			targets + "_tags": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("Names of DigitalOcean tags whose droplets are %ss of the rule (the tags must exist).", targets),
				ElementType:         types.StringType,
				Optional:            true,
				Validators:          []validator.Set{setvalidator.ValueStringsAre(tagValidator())},
			},
			targets + "_droplet_ids": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IDs of droplets that are %ss of the rule.", targets),
				ElementType:         types.Int64Type,
				Optional:            true,
				Validators:          []validator.Set{setvalidator.ValueInt64sAre(int64validator.AtLeast(1))},
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
		}},
	}
}

func (r *firewallResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A DigitalOcean cloud firewall that admits only WireGuard: one inbound rule for the mesh's " +
			"WireGuard port over UDP from `0.0.0.0/0` and `::/0`, plus any `extra_inbound_rules`. " +
			"DigitalOcean blocks all traffic no rule permits, outbound included, so unless `extra_outbound_rules` lists rules the " +
			"provider sends allow-all outbound rules (tcp, udp and icmp to `0.0.0.0/0` and `::/0`). " +
			"`[]`, `null` and an omitted attribute mean the same. " +
			"Rules added, removed or switched to deny outside Terraform show up as a diff; a firewall deleted outside Terraform is created again. " +
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
				Validators: []validator.String{stringvalidator.RegexMatches(nameRE,
					"must be at least two letters, digits, '.' or '-', starting with a letter or digit")},
			},
			"wireguard_port": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("UDP port WireGuard listens on; the only port open to the internet. Pass "+
					"`data.meshspan_machine_config.<name>.listen_port` so firewall and nodes agree. Defaults to `%d`.", config.DefaultListenPort),
				Optional:   true,
				Computed:   true,
				Default:    int64default.StaticInt64(config.DefaultListenPort),
				Validators: []validator.Int64{int64validator.Between(1, 65535)},
			},
			"extra_inbound_rules": ruleSchema(cloudfw.In,
				"Use them for management access, e.g. TCP 6443 and 50000 from `100.64.0.0/10` only.", maxRules-1),
			"extra_outbound_rules": ruleSchema(cloudfw.Out,
				"When it lists rules, outbound traffic is limited to exactly these; when empty or unset, all outbound traffic is allowed.", maxRules),
			"droplet_ids": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("IDs of droplets the firewall applies to (at most %d; use `tags` for more).", maxDroplets),
				ElementType:         types.Int64Type,
				Optional:            true,
				Computed:            true,
				Default:             setdefault.StaticValue(types.SetValueMust(types.Int64Type, []attr.Value{})),
				Validators:          []validator.Set{setvalidator.SizeAtMost(maxDroplets), setvalidator.ValueInt64sAre(int64validator.AtLeast(1))},
			},
			"tags": schema.SetAttribute{
				MarkdownDescription: fmt.Sprintf("Tags whose droplets the firewall applies to (at most %d). The tags must exist "+
					"(e.g. `digitalocean_tag`). Not to be confused with `source_tags` inside a rule.", maxTags),
				ElementType: types.StringType,
				Optional:    true,
				Computed:    true,
				Default:     setdefault.StaticValue(types.SetValueMust(types.StringType, []attr.Value{})),
				Validators:  []validator.Set{setvalidator.SizeAtMost(maxTags), setvalidator.ValueStringsAre(tagValidator())},
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
		Blocks: map[string]schema.Block{
			"timeouts": cloudres.TimeoutsBlock(ctx, "waiting until DigitalOcean has applied the change"),
		},
	}
}

func (r *firewallResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	src, ok := req.ProviderData.(ConfigSource)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("expected the provider's configuration, got %T; this is a provider bug", req.ProviderData))
		return
	}
	cfg := src.DigitalOceanConfig()
	r.data = &cfg
}

// begin builds the client and a context bounded by the operation's timeout.
func (r *firewallResource) begin(ctx context.Context, m firewallModel, op cloudres.Op, diags *diag.Diagnostics) (*godo.Client, context.Context, context.CancelFunc) {
	if r.data == nil {
		diags.AddError("Provider not configured", "meshspan_digitalocean_firewall needs the provider to be configured; this is a provider bug")
		return nil, ctx, func() {}
	}
	c, err := NewClient(*r.data)
	if err != nil {
		diags.AddError("DigitalOcean client", err.Error())
		return nil, ctx, func() {}
	}
	ctx, cancel, ok := cloudres.WithTimeout(ctx, m.Timeouts, op, diags)
	if !ok {
		return nil, ctx, cancel
	}
	return c, ctx, cancel
}

// elems reads a set's elements (none when null or unknown).
func elems[T any](ctx context.Context, s types.Set, diags *diag.Diagnostics) []T {
	var out []T
	if s.IsNull() || s.IsUnknown() {
		return out
	}
	diags.Append(s.ElementsAs(ctx, &out, false)...)
	return out
}

// configured is one configured rule: the shared model, and the object as
// written (so state can keep the user's spelling).
type configured struct {
	rule cloudfw.Rule
	obj  attr.Value
}

// rulesOf reads extra inbound or outbound rules into the shared model.
// Addresses the CIDR validator refuses are left out (it reports them).
func rulesOf(ctx context.Context, dir string, set types.Set, diags *diag.Diagnostics) []configured {
	if set.IsNull() || set.IsUnknown() {
		return nil
	}
	var out []configured
	for _, e := range set.Elements() {
		obj, ok := e.(types.Object)
		if !ok || obj.IsUnknown() {
			continue
		}
		var m inboundModel
		if dir == cloudfw.Out {
			var o outboundModel
			diags.Append(obj.As(ctx, &o, objectAs)...)
			m = inboundModel(o)
		} else {
			diags.Append(obj.As(ctx, &m, objectAs)...)
		}
		r := cloudfw.Rule{Direction: dir, Protocol: m.Protocol.ValueString(), Port: m.PortRange.ValueString(), Action: m.Action.ValueString(),
			Tags: elems[string](ctx, m.Tags, diags), DropletIDs: elems[int64](ctx, m.DropletIDs, diags),
			LoadBalancerUIDs: elems[string](ctx, m.LoadBalancerUIDs, diags), KubernetesIDs: elems[string](ctx, m.KubernetesIDs, diags)}
		for _, a := range elems[string](ctx, m.Addresses, diags) {
			if p, err := cloudfw.ParseCIDR(a); err == nil {
				r.CIDRs = append(r.CIDRs, p)
			}
		}
		out = append(out, configured{rule: r, obj: obj})
	}
	return out
}

var objectAs = basetypes.ObjectAsOptions{}

func rulesIn(cs []configured) []cloudfw.Rule {
	out := make([]cloudfw.Rule, len(cs))
	for i, c := range cs {
		out[i] = c.rule
	}
	return out
}

// setOf is v as a set value; empty is the empty set.
func setOf[T any](ctx context.Context, elem attr.Type, v []T, diags *diag.Diagnostics) types.Set {
	if len(v) == 0 {
		return types.SetValueMust(elem, []attr.Value{})
	}
	s, d := types.SetValueFrom(ctx, elem, v)
	diags.Append(d...)
	return s
}

// nullIfEmpty is v as a set value, null when empty: inside a rule, unset
// target lists read back as null.
func nullIfEmpty[T any](ctx context.Context, elem attr.Type, v []T, diags *diag.Diagnostics) types.Set {
	if len(v) == 0 {
		return types.SetNull(elem)
	}
	return setOf(ctx, elem, v, diags)
}

// ruleObject is a rule as the resource's attributes write it.
func ruleObject(ctx context.Context, r cloudfw.Rule, diags *diag.Diagnostics) attr.Value {
	targets := targetsOf(r.Direction)
	str := func(s string) types.String {
		if s == "" {
			return types.StringNull()
		}
		return types.StringValue(s)
	}
	obj, d := types.ObjectValue(ruleAttrTypes(targets), map[string]attr.Value{
		"protocol":                      types.StringValue(r.Protocol),
		"port_range":                    str(r.Port),
		"action":                        str(r.Action),
		targets + "_addresses":          nullIfEmpty(ctx, types.StringType, addresses(r.CIDRs), diags),
		targets + "_tags":               nullIfEmpty(ctx, types.StringType, r.Tags, diags),
		targets + "_droplet_ids":        nullIfEmpty(ctx, types.Int64Type, r.DropletIDs, diags),
		targets + "_load_balancer_uids": nullIfEmpty(ctx, types.StringType, r.LoadBalancerUIDs, diags),
		targets + "_kubernetes_ids":     nullIfEmpty(ctx, types.StringType, r.KubernetesIDs, diags),
	})
	diags.Append(d...)
	return obj
}

// ruleSet is rules from the API as a set, each rule that means the same as
// one in prior written as prior wrote it.
func ruleSet(ctx context.Context, dir string, rules []cloudfw.Rule, prior []configured, diags *diag.Diagnostics) types.Set {
	elemsOut := make([]attr.Value, 0, len(rules))
	seen := map[string]bool{}
	for _, r := range rules {
		k := r.Key()
		if seen[k] {
			continue
		}
		seen[k] = true
		obj := ruleObject(ctx, r, diags)
		for _, p := range prior {
			if p.rule.Key() == k {
				obj = p.obj
				break
			}
		}
		elemsOut = append(elemsOut, obj)
	}
	s, d := types.SetValue(ruleType(dir), elemsOut)
	diags.Append(d...)
	return s
}

// ValidateConfig checks how the attributes fit together; single attributes
// are checked by their validators. Errors name the attribute and the fix.
func (r *firewallResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m firewallModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	// Terraform validates before variables are known: a rule whose
	// addresses come from a variable is checked at plan time instead.
	if resp.Diagnostics.HasError() || !fullyKnown(ctx, m.ExtraInbound) || !fullyKnown(ctx, m.ExtraOutbound) {
		return
	}
	in := rulesOf(ctx, cloudfw.In, m.ExtraInbound, &resp.Diagnostics)
	out := rulesOf(ctx, cloudfw.Out, m.ExtraOutbound, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	if len(in)+1+max(len(out), len(cloudfw.AllowAllOutbound())) > maxRules {
		resp.Diagnostics.AddError("Too many rules", fmt.Sprintf("the WireGuard rule plus %d inbound and %d outbound rules exceed DigitalOcean's %d rules per firewall; merge rules or use a second firewall", len(in), len(out), maxRules))
	}
	port := int64(config.DefaultListenPort)
	if !m.WireGuardPort.IsNull() {
		port = m.WireGuardPort.ValueInt64()
	}
	for _, group := range []struct {
		attr  string
		rules []configured
	}{{"extra_inbound_rules", in}, {"extra_outbound_rules", out}} {
		for _, c := range group.rules {
			at := path.Root(group.attr).AtSetValue(c.obj)
			if err := checkRule(c.rule); err != nil {
				resp.Diagnostics.AddAttributeError(at, "Invalid firewall rule", group.attr+": "+err.Error())
			}
			if !m.WireGuardPort.IsUnknown() && c.rule.Key() == cloudfw.WireGuard(int(port)).Key() {
				resp.Diagnostics.AddAttributeError(at, "Duplicate WireGuard rule",
					fmt.Sprintf("%s repeats the WireGuard rule (udp %d from anywhere) the resource always adds; remove it", group.attr, port))
			}
		}
	}
}

// fullyKnown reports whether v holds no unknown value, however deep.
func fullyKnown(ctx context.Context, v attr.Value) bool {
	tv, err := v.ToTerraformValue(ctx)
	return err == nil && tv.IsFullyKnown()
}

// checkRule is what DigitalOcean asks of a rule beyond each attribute's
// own validator.
func checkRule(r cloudfw.Rule) error {
	if !slices.Contains(protocols, r.Protocol) {
		return nil // the protocol's validator says so
	}
	targets := targetsOf(r.Direction)
	switch {
	case !cloudfw.HasPorts(r.Protocol) && r.Port != "":
		return fmt.Errorf("port_range %q is set on an %s rule, which has no ports; remove it", r.Port, r.Protocol)
	case cloudfw.HasPorts(r.Protocol) && r.Port == "":
		return fmt.Errorf("port_range is required for %s; write \"22\", \"30000-32767\" or \"all\"", r.Protocol)
	}
	n := len(r.CIDRs) + len(r.Tags) + len(r.DropletIDs) + len(r.LoadBalancerUIDs) + len(r.KubernetesIDs)
	switch {
	case n == 0:
		return fmt.Errorf("a %s rule needs at least one of %[2]s_addresses, %[2]s_tags, %[2]s_droplet_ids, %[2]s_load_balancer_uids or %[2]s_kubernetes_ids (0.0.0.0/0 and ::/0 for anywhere)", r.Protocol, targets)
	case n > maxTargets:
		return fmt.Errorf("a rule has %d %ss; DigitalOcean allows at most %d per rule, split the rule", n, targets, maxTargets)
	}
	return r.Validate(protocols...)
}

// ModifyPlan keeps the state's spelling of the extra rules when the
// configured ones mean the same ("1-65535" for all ports, a bare IP, a
// source_tags = [] the API leaves out): after an import the state holds
// only the API's spelling. Terraform accepts a planned value equal to the
// prior state.
func (r *firewallResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var plan, state firewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	keep := func(name, dir string, p, s types.Set) {
		if p.IsUnknown() || p.IsNull() || s.IsNull() || p.Equal(s) || len(p.Elements()) != len(s.Elements()) {
			return
		}
		for _, e := range p.Elements() {
			if obj, ok := e.(types.Object); !ok || cloudres.HasUnknown(obj.Attributes()) {
				return
			}
		}
		var d diag.Diagnostics
		want, have := rulesOf(ctx, dir, p, &d), rulesOf(ctx, dir, s, &d)
		if d.HasError() || len(want) != len(have) || !cloudfw.SameSet(rulesIn(want), rulesIn(have)) {
			return
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root(name), s)...)
	}
	keep("extra_inbound_rules", cloudfw.In, plan.ExtraInbound, state.ExtraInbound)
	keep("extra_outbound_rules", cloudfw.Out, plan.ExtraOutbound, state.ExtraOutbound)
	// The framework marked status unknown because the configuration's
	// spelling differed; if nothing else changes, there is no update.
	var now firewallModel
	resp.Diagnostics.Append(resp.Plan.Get(ctx, &now)...)
	if !resp.Diagnostics.HasError() && now.Status.IsUnknown() && now.Name.Equal(state.Name) && now.WireGuardPort.Equal(state.WireGuardPort) &&
		now.ExtraInbound.Equal(state.ExtraInbound) && now.ExtraOutbound.Equal(state.ExtraOutbound) &&
		now.DropletIDs.Equal(state.DropletIDs) && now.Tags.Equal(state.Tags) && now.Timeouts.Equal(state.Timeouts) {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("status"), state.Status)...)
	}
}

// desired is the configuration in plain Go.
type desired struct {
	name       string
	port       int
	extraIn    []cloudfw.Rule
	extraOut   []cloudfw.Rule
	dropletIDs []int64
	tags       []string
}

func (m *firewallModel) desired(ctx context.Context, diags *diag.Diagnostics) desired {
	d := desired{name: m.Name.ValueString(), port: int(m.WireGuardPort.ValueInt64())}
	if m.WireGuardPort.IsNull() || m.WireGuardPort.IsUnknown() {
		d.port = config.DefaultListenPort
	}
	d.extraIn = rulesIn(rulesOf(ctx, cloudfw.In, m.ExtraInbound, diags))
	d.extraOut = rulesIn(rulesOf(ctx, cloudfw.Out, m.ExtraOutbound, diags))
	d.dropletIDs = elems[int64](ctx, m.DropletIDs, diags)
	d.tags = elems[string](ctx, m.Tags, diags)
	return d
}

func (d desired) request() *godo.FirewallRequest {
	return firewallRequest(d.name, d.port, d.extraIn, d.extraOut, d.dropletIDs, d.tags)
}

func (r *firewallResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan firewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, ctx, cancel := r.begin(ctx, plan, cloudres.Create, &resp.Diagnostics)
	defer cancel()
	want := plan.desired(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	fw, _, err := c.Firewalls.Create(ctx, want.request())
	if err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("create firewall %q", want.name), err)
		return
	}
	// Record the firewall before waiting, so a failed wait leaves it in
	// state (tainted) instead of orphaned.
	r.setState(ctx, fw, &plan, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if fw, err = r.waitApplied(ctx, c, fw.ID, cloudres.Create); err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("wait for firewall %q to apply", want.name), err)
		return
	}
	r.setState(ctx, fw, &plan, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *firewallResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state firewallModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, ctx, cancel := r.begin(ctx, state, cloudres.Read, &resp.Diagnostics)
	defer cancel()
	if resp.Diagnostics.HasError() {
		return
	}
	fw, _, err := c.Firewalls.Get(ctx, state.ID.ValueString())
	if isNotFound(err) {
		// Deleted outside Terraform: forget it, the next apply creates it.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("read firewall %q", state.ID.ValueString()), err)
		return
	}
	r.setState(ctx, fw, &state, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *firewallResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state firewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, ctx, cancel := r.begin(ctx, plan, cloudres.Update, &resp.Diagnostics)
	defer cancel()
	want := plan.desired(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	// PUT replaces the whole object: rules, droplets and tags in one call.
	fw, _, err := c.Firewalls.Update(ctx, id, want.request())
	if err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("update firewall %q", want.name), err)
		return
	}
	if fw, err = r.waitApplied(ctx, c, fw.ID, cloudres.Update); err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("wait for firewall %q to apply", want.name), err)
		return
	}
	r.setState(ctx, fw, &plan, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *firewallResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state firewallModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, ctx, cancel := r.begin(ctx, state, cloudres.Delete, &resp.Diagnostics)
	defer cancel()
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	fw, _, err := c.Firewalls.Get(ctx, id)
	if isNotFound(err) {
		return
	}
	if err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("read firewall %q before delete", id), err)
		return
	}
	// Detach first, using what the API says is attached (it may differ
	// from state), so droplets are never left half-configured.
	if len(fw.DropletIDs) > 0 {
		if _, err := c.Firewalls.RemoveDroplets(ctx, id, fw.DropletIDs...); err != nil && !isNotFound(err) {
			addError(&resp.Diagnostics, fmt.Sprintf("detach droplets %v from firewall %q", fw.DropletIDs, id), err)
			return
		}
	}
	if len(fw.Tags) > 0 {
		if _, err := c.Firewalls.RemoveTags(ctx, id, fw.Tags...); err != nil && !isNotFound(err) {
			addError(&resp.Diagnostics, fmt.Sprintf("detach tags %v from firewall %q", fw.Tags, id), err)
			return
		}
	}
	if _, err := c.Firewalls.Delete(ctx, id); err != nil && !isNotFound(err) {
		addError(&resp.Diagnostics, fmt.Sprintf("delete firewall %q", id), err)
	}
}

func (r *firewallResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if !uuidRE.MatchString(req.ID) {
		resp.Diagnostics.AddError("Invalid import ID",
			fmt.Sprintf("%q is not a DigitalOcean firewall ID; import by UUID, e.g. terraform import meshspan_digitalocean_firewall.mesh 0d7d9d4c-5a43-4c6e-9a3c-0f2b8e1d6a11 (doctl compute firewall list shows them)", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
}

// waitApplied polls the firewall until DigitalOcean has applied it, within
// the operation's timeout (op names it).
func (r *firewallResource) waitApplied(ctx context.Context, c *godo.Client, id string, op cloudres.Op) (*godo.Firewall, error) {
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
			tflog.Debug(ctx, "firewall still being applied", map[string]any{"id": id, "pending_changes": len(fw.PendingChanges), "next_poll": wait.String()})
		default:
			return fw, nil
		}
		if err := cloudhttp.Sleep(ctx, wait); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("firewall %q still \"waiting\" when timeouts.%s ran out: DigitalOcean has not finished applying it; check its droplets and tags in the DigitalOcean console, raise timeouts { %s = \"...\" } or run terraform again", id, op, op)
			}
			return nil, err
		}
		wait = min(wait*2, r.pollMax)
	}
}

// setState writes what the API holds into m, keeping m's spelling for rules
// that mean the same. Empty is the empty set, as `[]`, null and omitted all
// plan (the schema defaults). The one null: a firewall with no outbound
// rule at all, which no configuration plans, so the drift shows.
func (r *firewallResource) setState(ctx context.Context, fw *godo.Firewall, m *firewallModel, diags *diag.Diagnostics) {
	priorPort := 0
	if !m.WireGuardPort.IsNull() && !m.WireGuardPort.IsUnknown() {
		priorPort = int(m.WireGuardPort.ValueInt64())
	}
	priorIn := rulesOf(ctx, cloudfw.In, m.ExtraInbound, diags)
	priorOut := rulesOf(ctx, cloudfw.Out, m.ExtraOutbound, diags)
	obs := splitRules(fw, priorPort, len(priorOut) > 0)

	m.ID = types.StringValue(fw.ID)
	m.Name = types.StringValue(fw.Name)
	m.Status = types.StringValue(fw.Status)
	m.CreatedAt = types.StringValue(fw.Created)
	// No WireGuard rule: null differs from the configured port, so the plan
	// shows the rule being put back.
	m.WireGuardPort = types.Int64Null()
	if obs.WireGuardPort > 0 {
		m.WireGuardPort = types.Int64Value(int64(obs.WireGuardPort))
	}
	m.ExtraInbound = ruleSet(ctx, cloudfw.In, obs.ExtraIn, priorIn, diags)
	switch {
	case obs.ExtraOut == nil:
		m.ExtraOutbound = ruleSet(ctx, cloudfw.Out, nil, nil, diags)
	case len(obs.ExtraOut) == 0:
		m.ExtraOutbound = types.SetNull(ruleType(cloudfw.Out))
	default:
		m.ExtraOutbound = ruleSet(ctx, cloudfw.Out, obs.ExtraOut, priorOut, diags)
	}
	m.DropletIDs = setOf(ctx, types.Int64Type, int64s(fw.DropletIDs), diags)
	m.Tags = setOf(ctx, types.StringType, fw.Tags, diags)
}
