package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

var _ ephemeral.EphemeralResource = (*clusterSecretsEphemeral)(nil)

// NewClusterSecretsEphemeralResource returns the ephemeral meshspan_cluster_secrets.
func NewClusterSecretsEphemeralResource() ephemeral.EphemeralResource {
	return &clusterSecretsEphemeral{}
}

type clusterSecretsEphemeral struct{}

type clusterSecretsEphemeralModel struct {
	ClusterID     types.String `tfsdk:"cluster_id"`
	ClusterSecret types.String `tfsdk:"cluster_secret"`
	MeshPrefix    types.String `tfsdk:"mesh_prefix"`
	Generated     types.Bool   `tfsdk:"generated"`
}

func (e *clusterSecretsEphemeral) Metadata(_ context.Context, req ephemeral.MetadataRequest, resp *ephemeral.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cluster_secrets"
}

func (e *clusterSecretsEphemeral) Schema(_ context.Context, _ ephemeral.SchemaRequest, resp *ephemeral.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Cluster secrets that never enter the Terraform state (Terraform 1.10+).\n\n" +
			"With `cluster_id` and `cluster_secret` set (for example from a secret manager's ephemeral resource or an " +
			"`ephemeral = true` variable), it checks them and passes them on, adding `mesh_prefix`. Left empty, it " +
			"**generates new values on every plan and apply**: use that only to seed a secret store once, through a " +
			"write-only argument (such as `secret_string_wo` of `aws_secretsmanager_secret_version`), then read them " +
			"back from the store on later runs.\n\n" +
			"**Trade-off.** Terraform allows ephemeral values only in provisioner and connection blocks, provider " +
			"blocks, write-only arguments, other ephemeral resources (such as the ephemeral `meshspan_machine_config`) " +
			"and ephemeral outputs. That covers bare metal configured over SSH: ephemeral secrets, an ephemeral machine " +
			"config, and its `bundle_script` run by `remote-exec`, with no secret in the state. It does not cover cloud " +
			"servers: their `user_data` is a stored argument, so the secret lands in the state through the server " +
			"resource whatever you do, and the `meshspan_cluster_secrets` resource with an encrypted state backend is " +
			"the simpler, honest choice there. Generated values change on every run: never feed them to anything that " +
			"persists without a version guard (write-only arguments are applied only when their version changes).",
		Attributes: map[string]schema.Attribute{
			"cluster_id": schema.StringAttribute{
				MarkdownDescription: "Existing cluster ID (32 bytes, padded base64), or empty to generate one. Set it together with `cluster_secret`.",
				Optional:            true,
				Computed:            true,
				Sensitive:           true,
			},
			"cluster_secret": schema.StringAttribute{
				MarkdownDescription: "Existing cluster secret (32 bytes, padded standard base64), or empty to generate one. Set it together with `cluster_id`.",
				Optional:            true,
				Computed:            true,
				Sensitive:           true,
			},
			"mesh_prefix": schema.StringAttribute{
				MarkdownDescription: "The cluster's mesh IPv6 /64 derived from `cluster_id`.",
				Computed:            true,
			},
			"generated": schema.BoolAttribute{
				MarkdownDescription: "True when the values were generated in this run (and so differ from the previous run's).",
				Computed:            true,
			},
		},
	}
}

func (e *clusterSecretsEphemeral) Open(ctx context.Context, req ephemeral.OpenRequest, resp *ephemeral.OpenResponse) {
	var m clusterSecretsEphemeralModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id, secret := m.ClusterID.ValueString(), m.ClusterSecret.ValueString()
	switch {
	case id == "" && secret == "":
		s, err := clusterkey.Generate()
		if err != nil {
			resp.Diagnostics.AddError("Cannot generate cluster secrets", err.Error())
			return
		}
		id, secret = s.ID, s.Secret
		m.Generated = types.BoolValue(true)
	case id == "":
		resp.Diagnostics.AddAttributeError(path.Root("cluster_id"), "Missing cluster_id",
			"cluster_secret is set but cluster_id is not; set both (to use existing values) or neither (to generate new ones).")
		return
	case secret == "":
		resp.Diagnostics.AddAttributeError(path.Root("cluster_secret"), "Missing cluster_secret",
			"cluster_id is set but cluster_secret is not; set both (to use existing values) or neither (to generate new ones).")
		return
	default:
		if err := config.ValidateClusterID(id); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("cluster_id"), "Invalid cluster_id", "cluster_id "+err.Error())
		}
		if err := config.ValidateClusterSecret(secret); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("cluster_secret"), "Invalid cluster_secret", "cluster_secret "+err.Error())
		}
		if resp.Diagnostics.HasError() {
			return
		}
		m.Generated = types.BoolValue(false)
	}
	m.ClusterID = types.StringValue(id)
	m.ClusterSecret = types.StringValue(secret)
	m.MeshPrefix = types.StringValue(clusterkey.MeshPrefix(id).String())
	resp.Diagnostics.Append(resp.Result.Set(ctx, &m)...)
}
