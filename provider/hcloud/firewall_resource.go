package hcloud

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

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

// NewFirewallResource returns the meshspan_hcloud_firewall resource.
func NewFirewallResource() resource.Resource { return &firewallResource{} }

type firewallResource struct {
	data *Config
}

func (r *firewallResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_hcloud_firewall"
}

func (r *firewallResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	cidrSet := func(what string) schema.SetAttribute {
		return schema.SetAttribute{
			ElementType: types.StringType,
			Optional:    true,
			Validators:  []validator.Set{setvalidator.SizeAtMost(100), setvalidator.ValueStringsAre(cloudfw.CIDRValidator())},
			MarkdownDescription: "CIDRs " + what + ". A bare IP means one host (`/32` or `/128`); host bits " +
				"(`10.0.0.1/8`) are rejected at plan; IPv6 is compared canonically, so `::0/0` equals `::/0`. At most 100.",
		}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A Hetzner Cloud firewall that admits only WireGuard: one inbound rule for the mesh's " +
			"WireGuard port over UDP from `0.0.0.0/0` and `::/0`, plus any `extra_rules` you add (for example the " +
			"Kubernetes API from a management range). Outbound traffic is unrestricted unless you add `out` rules. " +
			"Rules are compared as a set, so their order or spelling (a bare IP, `::0/0`, `any`) never causes a diff, " +
			"after an import too; rules changed outside Terraform show up in the next plan and are put back on apply. " +
			"`[]`, `null` and an omitted attribute mean the same.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The firewall's numeric Hetzner Cloud ID.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				Validators:          []validator.String{stringvalidator.LengthBetween(1, 128)},
				MarkdownDescription: "Firewall name, 1 to 128 characters, unique within the Hetzner Cloud project. Changing it renames the firewall in place.",
			},
			"labels": schema.MapAttribute{
				ElementType:         types.StringType,
				Optional:            true,
				Computed:            true,
				Default:             mapdefault.StaticValue(types.MapValueMust(types.StringType, map[string]attr.Value{})),
				Validators:          []validator.Map{labelsValidator{}},
				MarkdownDescription: "Labels on the firewall (Hetzner label syntax; the `hetzner.cloud/` prefix is reserved). Replaces all labels on change.",
			},
			"wireguard_port": schema.Int64Attribute{
				Optional:   true,
				Computed:   true,
				Default:    int64default.StaticInt64(config.DefaultListenPort),
				Validators: []validator.Int64{int64validator.Between(1, 65535)},
				MarkdownDescription: fmt.Sprintf("UDP port WireGuard listens on; the firewall admits it from anywhere. "+
					"Pass the cluster's value, e.g. `data.meshspan_machine_config.node.listen_port`. Default `%d`.", config.DefaultListenPort),
			},
			"extra_rules": schema.SetNestedAttribute{
				Optional: true,
				Computed: true,
				Default:  setdefault.StaticValue(types.SetValueMust(ruleType, []attr.Value{})),
				// 50 rules per firewall, one of them the WireGuard rule.
				Validators: []validator.Set{setvalidator.SizeAtMost(49)},
				MarkdownDescription: "Rules besides the WireGuard one, e.g. TCP 6443 and 50000 from `100.64.0.0/10` only. " +
					"Without `out` rules all outbound traffic is allowed; with one, only what the `out` rules allow. At most 49.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"direction": schema.StringAttribute{
						Required:            true,
						Validators:          []validator.String{stringvalidator.OneOf(cloudfw.In, cloudfw.Out)},
						MarkdownDescription: "`in` (traffic to the servers, matched on `source_ips`) or `out` (from them, matched on `destination_ips`).",
					},
					"protocol": schema.StringAttribute{
						Required:            true,
						Validators:          []validator.String{stringvalidator.OneOf(protocols...)},
						MarkdownDescription: "One of `tcp`, `udp`, `icmp`, `esp`, `gre`.",
					},
					"port": schema.StringAttribute{
						Optional:   true,
						Validators: []validator.String{cloudfw.PortValidator()},
						MarkdownDescription: "For `tcp` and `udp`: a port (`6443`) or an inclusive range (`30000-32767`); " +
							"omit it (or write `any`) for all ports. Must be omitted for `icmp`, `esp` and `gre`.",
					},
					"source_ips":      cidrSet("the `in` rule admits traffic from"),
					"destination_ips": cidrSet("the `out` rule allows traffic to"),
					"description": schema.StringAttribute{
						Optional:            true,
						Validators:          []validator.String{stringvalidator.LengthAtMost(255)},
						MarkdownDescription: "Free text shown in the Cloud Console, at most 255 characters.",
					},
				}},
			},
			"server_ids": schema.SetAttribute{
				ElementType:         types.Int64Type,
				Optional:            true,
				Computed:            true,
				Default:             setdefault.StaticValue(types.SetValueMust(types.Int64Type, []attr.Value{})),
				Validators:          []validator.Set{setvalidator.ValueInt64sAre(int64validator.AtLeast(1))},
				MarkdownDescription: "IDs of servers the firewall is applied to directly (e.g. `hcloud_server.node.id`).",
			},
			"label_selectors": schema.SetAttribute{
				ElementType: types.StringType,
				Optional:    true,
				Computed:    true,
				Default:     setdefault.StaticValue(types.SetValueMust(types.StringType, []attr.Value{})),
				Validators:  []validator.Set{setvalidator.ValueStringsAre(selectorValidator{})},
				MarkdownDescription: "Label selectors (`role=worker`, `env in (prod,staging)`); the firewall applies to every " +
					"server whose labels match, including servers created later.",
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": cloudres.TimeoutsBlock(ctx, "waiting for Hetzner Cloud actions"),
		},
	}
}

func (r *firewallResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	src, ok := req.ProviderData.(ConfigSource)
	if !ok {
		resp.Diagnostics.AddError("Provider bug", fmt.Sprintf("meshspan_hcloud_firewall got provider data of type %T; please report this", req.ProviderData))
		return
	}
	cfg := src.HcloudConfig()
	r.data = &cfg
}

func (r *firewallResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m firewallModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// Single attributes are checked by their validators; this checks how
	// they fit together.
	port := int64(0)
	if m.WireGuardPort.IsNull() {
		port = config.DefaultListenPort // the schema default, applied after validation
	}
	if !m.WireGuardPort.IsNull() && !m.WireGuardPort.IsUnknown() {
		port = m.WireGuardPort.ValueInt64()
	}
	if !m.ExtraRules.IsNull() && !m.ExtraRules.IsUnknown() {
		for _, e := range m.ExtraRules.Elements() {
			obj, ok := e.(types.Object)
			if !ok || obj.IsUnknown() || cloudres.HasUnknown(obj.Attributes()) {
				continue
			}
			var rm ruleModel
			resp.Diagnostics.Append(obj.As(ctx, &rm, basetypes.ObjectAsOptions{})...)
			rule, attrName, err := rm.toRule(ctx)
			at := path.Root("extra_rules").AtSetValue(e)
			if err != nil {
				resp.Diagnostics.AddAttributeError(at.AtName(attrName), "Invalid firewall rule", err.Error())
				continue
			}
			if port > 0 && rule.Key() == cloudfw.WireGuard(int(port)).Key() {
				resp.Diagnostics.AddAttributeError(at, "Duplicate of the WireGuard rule",
					"this rule is the WireGuard rule the resource always adds (UDP wireguard_port from 0.0.0.0/0 and ::/0); remove it from extra_rules")
			}
		}
	}
}

// begin builds the client and a context bounded by the operation's timeout.
func (r *firewallResource) begin(ctx context.Context, m firewallModel, op cloudres.Op, diags *diag.Diagnostics) (*hcloud.Client, time.Duration, context.Context, context.CancelFunc) {
	c, poll, err := newClient(r.data)
	if err != nil {
		diags.AddError("Hetzner Cloud client", err.Error())
		return nil, 0, ctx, func() {}
	}
	ctx, cancel, ok := cloudres.WithTimeout(ctx, m.Timeouts, op, diags)
	if !ok {
		return nil, 0, ctx, cancel
	}
	return c, poll, ctx, cancel
}

func parseFirewallID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, fmt.Errorf("%q is not a Hetzner Cloud firewall ID; IDs are positive integers (see `hcloud firewall list`)", s)
	}
	return id, nil
}

func labelsOf(ctx context.Context, m types.Map, diags *diag.Diagnostics) map[string]string {
	out := map[string]string{}
	if !m.IsNull() && !m.IsUnknown() {
		diags.Append(m.ElementsAs(ctx, &out, false)...)
	}
	return out
}

func (r *firewallResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan firewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, _, ctx, cancel := r.begin(ctx, plan, cloudres.Create, &resp.Diagnostics)
	defer cancel()
	rules, d := plan.desiredRules(ctx)
	resp.Diagnostics.Append(d...)
	targets, d := targetsOf(ctx, plan)
	resp.Diagnostics.Append(d...)
	labels := labelsOf(ctx, plan.Labels, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	step := fmt.Sprintf("create firewall %q", plan.Name.ValueString())
	res, _, err := c.Firewall.Create(ctx, hcloud.FirewallCreateOpts{
		Name: plan.Name.ValueString(), Labels: labels, Rules: toAPIRules(rules), ApplyTo: targets,
	})
	if err != nil {
		addError(&resp.Diagnostics, step, "create", err)
		return
	}
	// Record the ID before waiting: if an action fails, Terraform keeps the
	// firewall as tainted instead of losing track of it.
	plan.ID = types.StringValue(strconv.FormatInt(res.Firewall.ID, 10))
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if err := c.Action.WaitFor(ctx, res.Actions...); err != nil {
		addError(&resp.Diagnostics, step+": wait for actions", "create", err)
	}
}

func (r *firewallResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state firewallModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id, err := parseFirewallID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("id"), "Invalid firewall ID", err.Error())
		return
	}
	c, _, ctx, cancel := r.begin(ctx, state, cloudres.Read, &resp.Diagnostics)
	defer cancel()
	if resp.Diagnostics.HasError() {
		return
	}
	fw, _, err := c.Firewall.GetByID(ctx, id)
	if err != nil {
		addError(&resp.Diagnostics, fmt.Sprintf("read firewall %d", id), "read", err)
		return
	}
	if fw == nil {
		// Deleted outside Terraform: forget it so the next apply recreates it.
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(state.refresh(ctx, fw)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// refresh folds what the API holds into m. Values the API holds equally
// (same rule set, same attachments) keep the user's spelling, so only real
// drift makes a diff.
func (m *firewallModel) refresh(ctx context.Context, fw *hcloud.Firewall) diag.Diagnostics {
	var diags diag.Diagnostics
	m.ID = types.StringValue(strconv.FormatInt(fw.ID, 10))
	m.Name = types.StringValue(fw.Name)
	// Empty is written as an empty collection, never null: `[]`, `{}`, null
	// and an omitted attribute all plan as empty (the schema defaults).
	labels := map[string]attr.Value{}
	for k, v := range fw.Labels {
		labels[k] = types.StringValue(v)
	}
	m.Labels = types.MapValueMust(types.StringType, labels)

	api := fromAPIRules(fw.Rules)
	desired, d := m.desiredRules(ctx)
	if d.HasError() || !sameRules(desired, api) {
		port := int64(0)
		if !m.WireGuardPort.IsNull() && !m.WireGuardPort.IsUnknown() {
			port = m.WireGuardPort.ValueInt64()
		}
		found, rest := cloudfw.FindWireGuard(api, int(port))
		m.WireGuardPort = types.Int64Null()
		if found > 0 {
			m.WireGuardPort = types.Int64Value(int64(found))
		}
		models := make([]ruleModel, len(rest))
		for i, r := range rest {
			models[i] = ruleToModel(r)
		}
		v, d := types.SetValueFrom(ctx, ruleType, models)
		diags.Append(d...)
		m.ExtraRules = v
	}

	var ids []int64
	var sels []string
	for _, t := range fw.AppliedTo {
		switch {
		case t.Type == hcloud.FirewallResourceTypeServer && t.Server != nil:
			ids = append(ids, t.Server.ID)
		case t.Type == hcloud.FirewallResourceTypeLabelSelector && t.LabelSelector != nil:
			sels = append(sels, t.LabelSelector.Selector)
		}
	}
	idVals := make([]attr.Value, len(ids))
	for i, id := range ids {
		idVals[i] = types.Int64Value(id)
	}
	selVals := make([]attr.Value, len(sels))
	for i, s := range sels {
		selVals[i] = types.StringValue(s)
	}
	m.ServerIDs = types.SetValueMust(types.Int64Type, idVals)
	m.LabelSelectors = types.SetValueMust(types.StringType, selVals)
	return diags
}

func (r *firewallResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state firewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id, err := parseFirewallID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("id"), "Invalid firewall ID", err.Error())
		return
	}
	c, _, ctx, cancel := r.begin(ctx, plan, cloudres.Update, &resp.Diagnostics)
	defer cancel()
	if resp.Diagnostics.HasError() {
		return
	}
	fw := &hcloud.Firewall{ID: id}
	step := fmt.Sprintf("update firewall %d (%q)", id, plan.Name.ValueString())
	wait := func(what string, actions []*hcloud.Action, err error) bool {
		if err == nil {
			err = c.Action.WaitFor(ctx, actions...)
		}
		if err != nil {
			addError(&resp.Diagnostics, step+": "+what, "update", err)
			return false
		}
		return true
	}

	if !plan.Name.Equal(state.Name) || !plan.Labels.Equal(state.Labels) {
		labels := labelsOf(ctx, plan.Labels, &resp.Diagnostics)
		if _, _, err := c.Firewall.Update(ctx, fw, hcloud.FirewallUpdateOpts{Name: plan.Name.ValueString(), Labels: labels}); err != nil {
			addError(&resp.Diagnostics, step+": rename/relabel", "update", err)
			return
		}
	}

	want, d := plan.desiredRules(ctx)
	resp.Diagnostics.Append(d...)
	have, _ := state.desiredRules(ctx)
	if resp.Diagnostics.HasError() {
		return
	}
	if !sameRules(want, have) || plan.WireGuardPort.IsNull() != state.WireGuardPort.IsNull() {
		actions, _, err := c.Firewall.SetRules(ctx, fw, hcloud.FirewallSetRulesOpts{Rules: toAPIRules(want)})
		if !wait("set rules", actions, err) {
			return
		}
	}

	wantT, d := targetsOf(ctx, plan)
	resp.Diagnostics.Append(d...)
	haveT, d := targetsOf(ctx, state)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	if gone := targetDiff(haveT, wantT); len(gone) > 0 {
		actions, _, err := c.Firewall.RemoveResources(ctx, fw, gone)
		if !wait("remove from resources", actions, err) {
			return
		}
	}
	if added := targetDiff(wantT, haveT); len(added) > 0 {
		actions, _, err := c.Firewall.ApplyResources(ctx, fw, added)
		if hcloud.IsError(err, hcloud.ErrorCodeFirewallAlreadyApplied) {
			// Someone applied part of it already: apply the rest one by one.
			actions, err = nil, nil
			for _, t := range added {
				a, _, e := c.Firewall.ApplyResources(ctx, fw, []hcloud.FirewallResource{t})
				if e != nil && !hcloud.IsError(e, hcloud.ErrorCodeFirewallAlreadyApplied) {
					err = e
					break
				}
				actions = append(actions, a...)
			}
		}
		if !wait("apply to resources", actions, err) {
			return
		}
	}
	plan.ID = state.ID
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *firewallResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state firewallModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id, err := parseFirewallID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("id"), "Invalid firewall ID", err.Error())
		return
	}
	c, poll, ctx, cancel := r.begin(ctx, state, cloudres.Delete, &resp.Diagnostics)
	defer cancel()
	if resp.Diagnostics.HasError() {
		return
	}
	step := fmt.Sprintf("delete firewall %d", id)
	fw, _, err := c.Firewall.GetByID(ctx, id)
	if err != nil {
		addError(&resp.Diagnostics, step, "delete", err)
		return
	}
	if fw == nil {
		return // already gone
	}
	// Detach first: the API refuses to delete a firewall still applied.
	if len(fw.AppliedTo) > 0 {
		actions, _, err := c.Firewall.RemoveResources(ctx, fw, directTargets(fw.AppliedTo))
		if err == nil {
			err = c.Action.WaitFor(ctx, actions...)
		}
		if err != nil {
			addError(&resp.Diagnostics, step+": detach from servers", "delete", err)
			return
		}
	}
	// Detaching settles asynchronously; retry while the API still says in use.
	for {
		_, err := c.Firewall.Delete(ctx, fw)
		if err == nil || hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
			return
		}
		if !hcloud.IsError(err, hcloud.ErrorCodeResourceInUse, hcloud.ErrorCodeConflict) {
			addError(&resp.Diagnostics, step, "delete", err)
			return
		}
		tflog.Debug(ctx, "firewall still in use after detaching; retrying delete", map[string]any{"id": id, "error": err.Error(), "wait": poll.String()})
		if serr := cloudhttp.Sleep(ctx, poll); serr != nil {
			addError(&resp.Diagnostics, step+" (still in use)", "delete", fmt.Errorf("%w; last answer: %v", serr, err))
			return
		}
	}
}

// ModifyPlan keeps the state's spelling of extra_rules when the configured
// rules mean the same (a bare IP, upper-case IPv6, `any` or `1-65535`): the
// API stores the canonical form, and after an import the state holds only
// that. Terraform accepts a planned value equal to the prior state.
func (r *firewallResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var plan, state firewallModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || plan.ExtraRules.IsUnknown() || plan.ExtraRules.Equal(state.ExtraRules) ||
		plan.ExtraRules.IsNull() || state.ExtraRules.IsNull() || !plan.WireGuardPort.Equal(state.WireGuardPort) ||
		len(plan.ExtraRules.Elements()) != len(state.ExtraRules.Elements()) {
		return
	}
	for _, e := range plan.ExtraRules.Elements() {
		if obj, ok := e.(types.Object); !ok || cloudres.HasUnknown(obj.Attributes()) {
			return
		}
	}
	var d diag.Diagnostics
	want, d1 := plan.extraRules(ctx)
	have, d2 := state.extraRules(ctx)
	d.Append(d1...)
	d.Append(d2...)
	if d.HasError() || !sameRules(want, have) {
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("extra_rules"), state.ExtraRules)...)
}

func (r *firewallResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if _, err := parseFirewallID(req.ID); err != nil {
		resp.Diagnostics.AddError("Invalid import ID", "terraform import meshspan_hcloud_firewall.<name> <id>: "+err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
}
