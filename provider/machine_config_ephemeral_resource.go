package provider

import (
	"context"
	"fmt"

	dsschema "github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral/schema"
)

var (
	_ ephemeral.EphemeralResource                   = (*machineConfigEphemeral)(nil)
	_ ephemeral.EphemeralResourceWithValidateConfig = (*machineConfigEphemeral)(nil)
)

// NewMachineConfigEphemeralResource returns the ephemeral meshspan_machine_config:
// the data source's inputs and outputs, never stored in plan or state.
func NewMachineConfigEphemeralResource() ephemeral.EphemeralResource {
	return &machineConfigEphemeral{}
}

type machineConfigEphemeral struct{}

func (e *machineConfigEphemeral) Metadata(_ context.Context, req ephemeral.MetadataRequest, resp *ephemeral.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine_config"
}

func (e *machineConfigEphemeral) Schema(_ context.Context, _ ephemeral.SchemaRequest, resp *ephemeral.SchemaResponse) {
	ds := machineConfigSchema()
	resp.Schema = schema.Schema{
		MarkdownDescription: "The `meshspan_machine_config` data source as an ephemeral resource (Terraform 1.10+): the " +
			"same inputs, checks and outputs, but nothing is written to the plan or the state. It accepts ephemeral " +
			"inputs, such as the ephemeral `meshspan_cluster_secrets`, so the cluster secret never reaches the state.\n\n" +
			"Terraform allows ephemeral values only in provisioner and connection blocks, provider blocks, write-only " +
			"arguments, other ephemeral resources and ephemeral outputs. That fits bare metal: run `bundle_script` " +
			"with a `remote-exec` provisioner. A cloud server's `user_data` is a normal, stored argument, so cloud " +
			"nodes need the data source (and the secret is in their state anyway).\n\n" + ds.MarkdownDescription,
		Attributes: toEphemeralAttrs(ds.Attributes),
	}
}

func (e *machineConfigEphemeral) ValidateConfig(ctx context.Context, req ephemeral.ValidateConfigRequest, resp *ephemeral.ValidateConfigResponse) {
	var m machineConfigModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	validateMachineConfig(&m, &resp.Diagnostics)
}

func (e *machineConfigEphemeral) Open(ctx context.Context, req ephemeral.OpenRequest, resp *ephemeral.OpenResponse) {
	var m machineConfigModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(m.compute(ctx)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.Result.Set(ctx, &m)...)
}

// toEphemeralAttrs converts the data source schema, so both stay identical.
func toEphemeralAttrs(in map[string]dsschema.Attribute) map[string]schema.Attribute {
	out := make(map[string]schema.Attribute, len(in))
	for name, a := range in {
		out[name] = toEphemeralAttr(name, a)
	}
	return out
}

func toEphemeralAttr(name string, a dsschema.Attribute) schema.Attribute {
	switch a := a.(type) {
	case dsschema.StringAttribute:
		return schema.StringAttribute{MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive}
	case dsschema.Int64Attribute:
		return schema.Int64Attribute{MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive}
	case dsschema.BoolAttribute:
		return schema.BoolAttribute{MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive}
	case dsschema.ListAttribute:
		return schema.ListAttribute{ElementType: a.ElementType, MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive}
	case dsschema.MapAttribute:
		return schema.MapAttribute{ElementType: a.ElementType, MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive}
	case dsschema.ListNestedAttribute:
		return schema.ListNestedAttribute{
			NestedObject:        schema.NestedAttributeObject{Attributes: toEphemeralAttrs(a.NestedObject.Attributes)},
			MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive,
		}
	case dsschema.SingleNestedAttribute:
		return schema.SingleNestedAttribute{
			Attributes:          toEphemeralAttrs(a.Attributes),
			MarkdownDescription: a.MarkdownDescription, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive,
		}
	}
	panic(fmt.Sprintf("provider: attribute %q has type %T, which toEphemeralAttr does not convert", name, a))
}
