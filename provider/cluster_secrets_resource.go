package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

var (
	_ resource.Resource                = (*clusterSecretsResource)(nil)
	_ resource.ResourceWithImportState = (*clusterSecretsResource)(nil)
)

// Import ID forms of meshspan_cluster_secrets.
const (
	importFromEnv = "env"
	envClusterID  = "MESHSPAN_CLUSTER_ID"
	envSecret     = "MESHSPAN_CLUSTER_SECRET"
)

// NewClusterSecretsResource returns the meshspan_cluster_secrets resource.
func NewClusterSecretsResource() resource.Resource { return &clusterSecretsResource{} }

type clusterSecretsResource struct{}

type clusterSecretsModel struct {
	ID            types.String `tfsdk:"id"`
	ClusterID     types.String `tfsdk:"cluster_id"`
	ClusterSecret types.String `tfsdk:"cluster_secret"`
	MeshPrefix    types.String `tfsdk:"mesh_prefix"`
	Keepers       types.Map    `tfsdk:"keepers"`
}

func (r *clusterSecretsResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cluster_secrets"
}

func (r *clusterSecretsResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Generates, once, what every node of a meshspan cluster shares: the **cluster ID** and the " +
			"**cluster secret**, each 32 random bytes in padded standard base64 (44 characters) exactly as Talos " +
			"generates them, so a Talos cluster's values can be imported and Talos KubeSpan nodes and meshspan nodes " +
			"can share one mesh.\n\n" +
			"The secret is the WireGuard pre-shared key of every peer and the AES-256 key that seals what nodes publish " +
			"to the discovery service. Both values are sensitive: Terraform never prints them in plans, but they are " +
			"stored in the state, so keep the state encrypted. To keep them out of the state, use the ephemeral resource " +
			"`meshspan_cluster_secrets` instead (see its page for the trade-off).\n\n" +
			"**Rotation** is always an explicit replacement, shown in the plan as `must be replaced`: change a value in " +
			"`keepers`, or run `terraform apply -replace=meshspan_cluster_secrets.NAME`. Every machine config built " +
			"from the old values then changes, so every node must get its new config.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "A non-secret identifier: `ms-` and the first 16 hex digits of SHA-256(cluster_id).",
				Computed:            true,
				PlanModifiers:       keep,
			},
			"cluster_id": schema.StringAttribute{
				MarkdownDescription: "Cluster ID: 32 random bytes, padded standard base64 (44 characters). Nodes use it to find their cluster on the discovery service; the mesh prefix is derived from it.",
				Computed:            true,
				Sensitive:           true,
				PlanModifiers:       keep,
			},
			"cluster_secret": schema.StringAttribute{
				MarkdownDescription: "Cluster secret: 32 random bytes, padded standard base64 (44 characters). WireGuard pre-shared key and discovery encryption key.",
				Computed:            true,
				Sensitive:           true,
				PlanModifiers:       keep,
			},
			"mesh_prefix": schema.StringAttribute{
				MarkdownDescription: "The cluster's mesh IPv6 /64 (a ULA derived from cluster_id as Talos KubeSpan derives it), e.g. `fd7f:175a:b97c:5602::/64`.",
				Computed:            true,
				PlanModifiers:       keep,
			},
			"keepers": schema.MapAttribute{
				MarkdownDescription: "Arbitrary strings that, when changed, rotate the secrets (replace this resource). " +
					"Example: `{ rotation = \"2026-11\" }`. Changing or removing an existing keeper replaces the resource; " +
					"adding keepers where there were none (for example right after an import) adopts them without rotating.",
				ElementType: types.StringType,
				Optional:    true,
				PlanModifiers: []planmodifier.Map{mapplanmodifier.RequiresReplaceIf(
					func(_ context.Context, req planmodifier.MapRequest, resp *mapplanmodifier.RequiresReplaceIfFuncResponse) {
						resp.RequiresReplace = !req.StateValue.IsNull() && !req.StateValue.Equal(req.PlanValue)
					},
					"Changing keepers rotates the cluster secrets.",
					"Changing `keepers` rotates the cluster secrets.",
				)},
			},
		},
	}
}

func (r *clusterSecretsResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m clusterSecretsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, err := clusterkey.Generate()
	if err != nil {
		resp.Diagnostics.AddError("Cannot generate cluster secrets", err.Error())
		return
	}
	m.setSecrets(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (m *clusterSecretsModel) setSecrets(s clusterkey.Secrets) {
	m.ID = types.StringValue(secretsID(s.ID))
	m.ClusterID = types.StringValue(s.ID)
	m.ClusterSecret = types.StringValue(s.Secret)
	m.MeshPrefix = types.StringValue(clusterkey.MeshPrefix(s.ID).String())
}

// secretsID names the secrets without revealing them.
func secretsID(clusterID string) string {
	h := sha256.Sum256([]byte(clusterID))
	return "ms-" + hex.EncodeToString(h[:8])
}

// Read has nothing to refresh: the values live only in the state.
func (r *clusterSecretsResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m clusterSecretsModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Update only ever adopts new keepers (see the keepers plan modifier): the
// secrets themselves never change in place.
func (r *clusterSecretsResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state clusterSecretsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	state.Keepers = plan.Keepers
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *clusterSecretsResource) Delete(context.Context, resource.DeleteRequest, *resource.DeleteResponse) {
	// Nothing outside the state to delete.
}

// ImportState accepts "<cluster_id>:<cluster_secret>" or the word "env",
// which reads MESHSPAN_CLUSTER_ID and MESHSPAN_CLUSTER_SECRET so the secret
// stays out of shell history and of the import block.
func (r *clusterSecretsResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	s, err := parseSecretsImportID(req.ID, os.Getenv)
	if err != nil {
		resp.Diagnostics.AddError("Invalid import ID for meshspan_cluster_secrets", err.Error())
		return
	}
	var m clusterSecretsModel
	m.setSecrets(s)
	m.Keepers = types.MapNull(types.StringType)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func parseSecretsImportID(id string, getenv func(string) string) (clusterkey.Secrets, error) {
	var s clusterkey.Secrets
	if id == importFromEnv {
		s.ID, s.Secret = getenv(envClusterID), getenv(envSecret)
		if s.ID == "" || s.Secret == "" {
			return s, fmt.Errorf("import ID %q reads %s and %s, but at least one is unset; export both (e.g. from `talosctl gen secrets` output: cluster.id and cluster.secret)", id, envClusterID, envSecret)
		}
	} else {
		var ok bool
		s.ID, s.Secret, ok = strings.Cut(id, ":")
		if !ok {
			return s, fmt.Errorf("use \"<cluster_id>:<cluster_secret>\", or \"env\" with %s and %s exported (keeps the secret out of shell history)", envClusterID, envSecret)
		}
	}
	if err := config.ValidateClusterID(s.ID); err != nil {
		return s, fmt.Errorf("cluster_id %w", err)
	}
	if err := config.ValidateClusterSecret(s.Secret); err != nil {
		return s, fmt.Errorf("cluster_secret %w", err)
	}
	return s, nil
}
