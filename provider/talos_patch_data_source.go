package provider

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/talospatch"
)

var (
	_ datasource.DataSource                   = (*talosPatchDataSource)(nil)
	_ datasource.DataSourceWithValidateConfig = (*talosPatchDataSource)(nil)
)

// NewTalosPatchDataSource returns the meshspan_talos_patch data source.
func NewTalosPatchDataSource() datasource.DataSource { return &talosPatchDataSource{} }

type talosPatchDataSource struct{}

type talosPatchModel struct {
	ID                          types.String `tfsdk:"id"`
	TalosVersion                types.String `tfsdk:"talos_version"`
	ClusterID                   types.String `tfsdk:"cluster_id"`
	ClusterSecret               types.String `tfsdk:"cluster_secret"`
	DiscoveryEndpoint           types.String `tfsdk:"discovery_endpoint"`
	MTU                         types.Int64  `tfsdk:"mtu"`
	EndpointFilters             types.List   `tfsdk:"endpoint_filters"`
	ExcludeAdvertisedNetworks   types.List   `tfsdk:"exclude_advertised_networks"`
	AllowDownPeerBypass         types.Bool   `tfsdk:"allow_down_peer_bypass"`
	AdvertiseKubernetesNetworks types.Bool   `tfsdk:"advertise_kubernetes_networks"`
	HarvestExtraEndpoints       types.Bool   `tfsdk:"harvest_extra_endpoints"`

	Form       types.String `tfsdk:"form"`
	Patch      types.String `tfsdk:"patch"`
	MeshPrefix types.String `tfsdk:"mesh_prefix"`
}

func (d *talosPatchDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_talos_patch"
}

func (d *talosPatchDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Renders the Talos machine-config patch that makes a Talos node join a meshspan mesh: KubeSpan " +
			"enabled, the service discovery registry pointed at the cluster's discovery service (a self-hosted " +
			"`meshspan-agent discovery serve` or Sidero's), and the cluster ID and secret the meshspan nodes use. " +
			"Pass `patch` to `config_patches` of the Talos provider's `talos_machine_configuration` (or `talosctl " +
			"gen config --config-patch`). Nothing is contacted; the data source only computes.\n\n" +
			"`talos_version` chooses the form: up to Talos 1.12 the KubeSpan settings go under " +
			"`machine.network.kubespan`; from Talos 1.13 they are a separate `KubeSpanConfig` document (Talos refuses " +
			"a config that has both). Discovery and the cluster identity stay in `cluster` either way. The Kubernetes " +
			"discovery registry is turned off, as the KubeSpan guide advises, since meshspan nodes read only the " +
			"service registry.\n\n" +
			"`patch` holds the cluster secret and is sensitive.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{MarkdownDescription: "The mesh prefix.", Computed: true},
			"talos_version": schema.StringAttribute{
				MarkdownDescription: "The Talos version of the nodes, as `talosctl version` prints it (`v1.11.5`, `v1.13`). " +
					"`v1.13` and later get the `KubeSpanConfig` document; earlier versions `machine.network.kubespan`.",
				Required: true,
			},
			"cluster_id": schema.StringAttribute{
				MarkdownDescription: "The cluster ID (`cluster.id`): `meshspan_cluster_secrets.cluster_id`, or the Talos cluster's own (`talos_machine_secrets.machine_secrets.cluster.id`). Talos's URL-safe IDs (before 1.14) are accepted.",
				Required:            true,
			},
			"cluster_secret": schema.StringAttribute{
				MarkdownDescription: "The cluster secret (`cluster.secret`), 32 bytes in standard base64: the discovery key and the WireGuard pre-shared key of every peer.",
				Required:            true, Sensitive: true,
			},
			"discovery_endpoint": schema.StringAttribute{
				MarkdownDescription: "The discovery service URL, `https://host[:port]/` (or `http://` for plaintext), no path. Default `" + talospatch.SideroDiscoveryEndpoint + "` (Sidero's). Use the same service as the meshspan nodes' `discovery_endpoints`.",
				Optional:            true, Computed: true,
			},
			"mtu": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("KubeSpan link MTU, %d..%d. Default %d (the Talos default). Underlay MTU minus 80.", config.MinMTU, config.MaxMTU, config.DefaultMTU),
				Optional:            true, Computed: true,
			},
			"endpoint_filters": schema.ListAttribute{
				MarkdownDescription: "KubeSpan's `filters.endpoints`: which of the node's addresses it advertises to peers as WireGuard endpoints. Ordered CIDRs or IPs, `!` removes what earlier entries admitted, e.g. `[\"0.0.0.0/0\", \"!192.168.0.0/16\", \"::/0\"]`. Empty: no filtering.",
				ElementType:         types.StringType, Optional: true,
			},
			"exclude_advertised_networks": schema.ListAttribute{
				MarkdownDescription: "KubeSpan's `filters.excludeAdvertisedNetworks`: networks peers must not route to this node through the mesh. Needs `talos_version` v1.13 or later (the `KubeSpanConfig` document).",
				ElementType:         types.StringType, Optional: true,
			},
			"allow_down_peer_bypass": schema.BoolAttribute{
				MarkdownDescription: "Let traffic to a member whose peer is down bypass the mesh (in plaintext). Default `false`: fail closed, as meshspan's default.",
				Optional:            true, Computed: true,
			},
			"advertise_kubernetes_networks": schema.BoolAttribute{
				MarkdownDescription: "Advertise the node's pod CIDRs over KubeSpan (Talos's only kind of advertised network). Default `false`; leave it off with Calico or Cilium.",
				Optional:            true, Computed: true,
			},
			"harvest_extra_endpoints": schema.BoolAttribute{
				MarkdownDescription: "Publish the endpoints this node observes for its peers. Default `false`; Talos advises against it above 50 peers.",
				Optional:            true, Computed: true,
			},
			"form": schema.StringAttribute{
				MarkdownDescription: "Where the KubeSpan settings went: `machine.network.kubespan` or `KubeSpanConfig`.",
				Computed:            true,
			},
			"patch": schema.StringAttribute{
				MarkdownDescription: "The Talos machine-config patch (YAML; in the `KubeSpanConfig` form, two documents).",
				Computed:            true, Sensitive: true,
			},
			"mesh_prefix": schema.StringAttribute{
				MarkdownDescription: "The cluster's mesh /64, as Talos derives it from `cluster_id`: every node's KubeSpan address lies in it.",
				Computed:            true,
			},
		},
	}
}

// options reads what is known; unknown values are reported in unknown.
func (m *talosPatchModel) options(ctx context.Context, diags *diag.Diagnostics) (o talospatch.Options, unknown map[string]bool) {
	unknown = map[string]bool{}
	str := func(name string, v types.String) string {
		if v.IsUnknown() {
			unknown[name] = true
		}
		return v.ValueString()
	}
	list := func(name string, v types.List) []string {
		if v.IsUnknown() {
			unknown[name] = true
			return nil
		}
		var out []types.String
		diags.Append(v.ElementsAs(ctx, &out, false)...)
		var s []string
		for _, e := range out {
			if e.IsUnknown() {
				unknown[name] = true
				return nil
			}
			s = append(s, e.ValueString())
		}
		return s
	}
	o = talospatch.Options{
		TalosVersion:                str("talos_version", m.TalosVersion),
		ClusterID:                   str("cluster_id", m.ClusterID),
		ClusterSecret:               str("cluster_secret", m.ClusterSecret),
		DiscoveryEndpoint:           str("discovery_endpoint", m.DiscoveryEndpoint),
		MTU:                         int(m.MTU.ValueInt64()),
		EndpointFilters:             list("endpoint_filters", m.EndpointFilters),
		ExcludeAdvertisedNetworks:   list("exclude_advertised_networks", m.ExcludeAdvertisedNetworks),
		AllowDownPeerBypass:         m.AllowDownPeerBypass.ValueBool(),
		AdvertiseKubernetesNetworks: m.AdvertiseKubernetesNetworks.ValueBool(),
		HarvestExtraEndpoints:       m.HarvestExtraEndpoints.ValueBool(),
	}
	if m.MTU.IsUnknown() {
		unknown["mtu"] = true
	}
	if !m.MTU.IsNull() && !m.MTU.IsUnknown() && m.MTU.ValueInt64() == 0 {
		// A hand-written 0 is out of range, not "default".
		diags.AddAttributeError(path.Root("mtu"), "Invalid mtu", fmt.Sprintf("0 is out of range; use %d..%d or leave mtu unset (default %d)", config.MinMTU, config.MaxMTU, config.DefaultMTU))
	}
	return o, unknown
}

var attrIndex = regexp.MustCompile(`^([a-z_]+)(?:\[(\d+)\])?$`)

// addPatchErrors reports each error on its attribute (and list element).
func addPatchErrors(diags *diag.Diagnostics, errs []talospatch.FieldError, skip map[string]bool) {
	for _, e := range errs {
		m := attrIndex.FindStringSubmatch(e.Attribute)
		if m == nil {
			diags.AddError("Invalid Talos patch input", e.Error())
			continue
		}
		if skip[m[1]] {
			continue
		}
		p := path.Root(m[1])
		if m[2] != "" {
			i, _ := strconv.Atoi(m[2])
			p = p.AtListIndex(i)
		}
		diags.AddAttributeError(p, "Invalid "+e.Attribute, e.Detail)
	}
}

func (d *talosPatchDataSource) ValidateConfig(ctx context.Context, req datasource.ValidateConfigRequest, resp *datasource.ValidateConfigResponse) {
	var m talosPatchModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	o, unknown := m.options(ctx, &resp.Diagnostics)
	// Unknown values (secrets from a resource not yet created) get a
	// stand-in; errors that depend on them wait for apply.
	if unknown["cluster_id"] || m.ClusterID.IsNull() {
		o.ClusterID = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
	}
	if unknown["cluster_secret"] || m.ClusterSecret.IsNull() {
		o.ClusterSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	}
	if unknown["talos_version"] || m.TalosVersion.IsNull() {
		o.TalosVersion = fmt.Sprintf("v1.%d", talospatch.DocumentMinor)
	}
	addPatchErrors(&resp.Diagnostics, talospatch.Validate(o), unknown)
}

func (d *talosPatchDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m talosPatchModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	o, _ := m.options(ctx, &resp.Diagnostics)
	if errs := talospatch.Validate(o); len(errs) > 0 {
		addPatchErrors(&resp.Diagnostics, errs, nil)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	p, err := talospatch.Render(o)
	if err != nil {
		resp.Diagnostics.AddError("Rendering the Talos patch failed", err.Error())
		return
	}
	prefix := clusterkey.MeshPrefix(o.ClusterID).String()
	m.ID = types.StringValue(prefix)
	m.MeshPrefix = types.StringValue(prefix)
	m.Form = types.StringValue(string(p.Form))
	m.Patch = types.StringValue(p.YAML)
	if m.DiscoveryEndpoint.IsNull() {
		m.DiscoveryEndpoint = types.StringValue(talospatch.SideroDiscoveryEndpoint)
	}
	if m.MTU.IsNull() {
		m.MTU = types.Int64Value(config.DefaultMTU)
	}
	for _, b := range []*types.Bool{&m.AllowDownPeerBypass, &m.AdvertiseKubernetesNetworks, &m.HarvestExtraEndpoints} {
		if b.IsNull() {
			*b = types.BoolValue(false)
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
