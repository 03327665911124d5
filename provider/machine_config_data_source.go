package provider

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/userdata"
)

var (
	_ datasource.DataSource                   = (*machineConfigDataSource)(nil)
	_ datasource.DataSourceWithValidateConfig = (*machineConfigDataSource)(nil)
)

// NewMachineConfigDataSource returns the meshspan_machine_config data source.
func NewMachineConfigDataSource() datasource.DataSource { return &machineConfigDataSource{} }

type machineConfigDataSource struct{}

type machineConfigModel struct {
	ID                     types.String `tfsdk:"id"`
	ClusterID              types.String `tfsdk:"cluster_id"`
	ClusterSecret          types.String `tfsdk:"cluster_secret"`
	NodeName               types.String `tfsdk:"node_name"`
	Labels                 types.Map    `tfsdk:"labels"`
	DiscoveryEndpoints     types.List   `tfsdk:"discovery_endpoints"`
	DiscoveryCACertificate types.String `tfsdk:"discovery_ca_certificate"`
	StaticPeers            types.List   `tfsdk:"static_peers"`
	ListenPort             types.Int64  `tfsdk:"listen_port"`
	MTU                    types.Int64  `tfsdk:"mtu"`
	EndpointFilters        types.List   `tfsdk:"endpoint_filters"`
	ExtraEndpoints         types.List   `tfsdk:"extra_endpoints"`
	AdvertisedNetworks     types.List   `tfsdk:"advertised_networks"`
	LANBypass              types.List   `tfsdk:"lan_bypass"`
	AllowDownPeerBypass    types.Bool   `tfsdk:"allow_down_peer_bypass"`
	AllowWideAdvertised    types.Bool   `tfsdk:"allow_wide_advertised_networks"`
	Filters                types.Object `tfsdk:"filters"`
	Relay                  types.Bool   `tfsdk:"relay"`
	RelayPort              types.Int64  `tfsdk:"relay_port"`
	Firewall               types.Object `tfsdk:"firewall"`
	AgentInstall           types.Object `tfsdk:"agent_install"`
	Platform               types.String `tfsdk:"platform"`

	MachineConfig types.String `tfsdk:"machine_config"`
	UserData      types.String `tfsdk:"user_data"`
	BundleScript  types.String `tfsdk:"bundle_script"`
	BundleFiles   types.Map    `tfsdk:"bundle_files"`
	MeshPrefix    types.String `tfsdk:"mesh_prefix"`
}

func (d *machineConfigDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine_config"
}

func mcStringList(desc string) schema.ListAttribute {
	return schema.ListAttribute{MarkdownDescription: desc, ElementType: types.StringType, Optional: true}
}

func (d *machineConfigDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = machineConfigSchema()
}

// machineConfigSchema is shared with the ephemeral meshspan_machine_config.
func machineConfigSchema() schema.Schema {
	return schema.Schema{
		MarkdownDescription: "Renders one node's meshspan-agent configuration (`apiVersion: meshspan/v1`) and the ways to " +
			"deliver it: `user_data` (`#cloud-config`) for clouds, and a bundle (`bundle_script`, `bundle_files`) for " +
			"hosts without cloud-init. Nothing is contacted; the data source only computes.\n\n" +
			"The config is built and validated by the same code the agent runs (`internal/config`), so a config this " +
			"data source emits is one the agent accepts. Every problem is reported on the attribute that causes it, " +
			"with the fix, at plan time whenever the values are known; a `user_data` over the `platform`'s size limit " +
			"(Hetzner Cloud 32 KiB, DigitalOcean 64 KiB) is a plan-time error too.\n\n" +
			"`machine_config`, `user_data`, `bundle_script` and `bundle_files` hold the cluster secret and are sensitive.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{MarkdownDescription: "The node name.", Computed: true},
			"cluster_id": schema.StringAttribute{
				MarkdownDescription: "Cluster ID, from `meshspan_cluster_secrets.NAME.cluster_id` (or an existing Talos cluster's `cluster.id`).",
				Required:            true, Sensitive: true,
			},
			"cluster_secret": schema.StringAttribute{
				MarkdownDescription: "Cluster secret, from `meshspan_cluster_secrets.NAME.cluster_secret` (or Talos `cluster.secret`).",
				Required:            true, Sensitive: true,
			},
			"node_name": schema.StringAttribute{
				MarkdownDescription: "Node name: lower case letters, digits, `-` and `.`, at most 253 characters (e.g. the server's name).",
				Required:            true,
			},
			"labels": schema.MapAttribute{
				MarkdownDescription: "Node labels published to peers, Kubernetes syntax (`[prefix/]name` = `value`), e.g. `{ \"topology.kubernetes.io/region\" = \"fsn1\" }`.",
				ElementType:         types.StringType, Optional: true,
			},
			"discovery_endpoints": schema.ListAttribute{
				MarkdownDescription: "Discovery service URLs, `https://host[:port]` (or `http://` for plaintext), e.g. `[\"https://discovery.talos.dev/\"]`. Set these, `static_peers`, or both.",
				ElementType:         types.StringType, Optional: true,
			},
			"discovery_ca_certificate": schema.StringAttribute{
				MarkdownDescription: "PEM CA certificate(s) trusted for the discovery service in addition to the system roots (for a self-hosted service with a private CA).",
				Optional:            true,
			},
			"static_peers": schema.ListNestedAttribute{
				MarkdownDescription: "Peers known ahead of time, in addition to or instead of discovery.",
				Optional:            true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"name":       schema.StringAttribute{MarkdownDescription: "The peer's node name.", Optional: true},
					"public_key": schema.StringAttribute{MarkdownDescription: "The peer's WireGuard public key (44 characters base64), as `meshspan-agent identity` prints it.", Required: true},
					"address":    schema.StringAttribute{MarkdownDescription: "The peer's mesh IPv6 address, inside this cluster's `mesh_prefix`.", Required: true},
					"endpoints":  schema.ListAttribute{MarkdownDescription: "The peer's `ip:port` WireGuard endpoints, tried in order, e.g. `[\"203.0.113.7:51820\"]`.", ElementType: types.StringType, Optional: true},
					"networks":   schema.ListAttribute{MarkdownDescription: "Extra CIDRs routed to the peer through the mesh.", ElementType: types.StringType, Optional: true},
					"relay_port": schema.Int64Attribute{MarkdownDescription: "The UDP port the peer relays on (its `relay_port`, or its `listen_port` when it relays on the WireGuard port), if its `relay` is on: members behind NAT may then relay through it. Discovery members announce this themselves.", Optional: true},
				}},
			},
			"listen_port": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("WireGuard UDP listen port, 1..65535. Default %d. Open it in cloud firewalls (`meshspan_hcloud_firewall`, `meshspan_digitalocean_firewall`).", config.DefaultListenPort),
				Optional:            true, Computed: true,
			},
			"mtu": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("MTU of the mesh interface, %d..%d. Default %d (as Talos KubeSpan).", config.MinMTU, config.MaxMTU, config.DefaultMTU),
				Optional:            true, Computed: true,
			},
			"endpoint_filters":    mcStringList("Ordered filter of the endpoints this node advertises: CIDRs or IPs, `!` negates what earlier entries admitted, as KubeSpan's `filters.endpoints`. E.g. `[\"0.0.0.0/0\", \"!10.0.0.0/8\", \"::/0\"]`. Empty: no filtering."),
			"extra_endpoints":     mcStringList("Extra `ip:port` endpoints to advertise unfiltered, e.g. a NAT port forward `203.0.113.7:51820`."),
			"advertised_networks": mcStringList(fmt.Sprintf("Extra CIDRs this node routes for the mesh (pod CIDRs, a LAN behind it). Default routes and other wide ones (IPv4 shorter than /%d, IPv6 shorter than /%d) are refused unless `allow_wide_advertised_networks` is set.", config.WideIPv4Bits, config.WideIPv6Bits)),
			"lan_bypass":          mcStringList("CIDRs kept off the mesh: members there are reached directly (e.g. the rack's private LAN)."),
			"allow_down_peer_bypass": schema.BoolAttribute{
				MarkdownDescription: "Let traffic to a member whose peer is down fall back to the underlay in plaintext. Default `false`: fail closed, as Talos KubeSpan.",
				Optional:            true, Computed: true,
			},
			"allow_wide_advertised_networks": schema.BoolAttribute{
				MarkdownDescription: "Let `advertised_networks` hold `0.0.0.0/0`, `::/0` or other wide routes: this node is an exit node. Members still refuse them unless their `filters.approved_routes` approve them for this node's public key. Default `false`.",
				Optional:            true, Computed: true,
			},
			"filters": schema.SingleNestedAttribute{
				MarkdownDescription: "What this node announces and what it takes from peers (as Talos KubeSpan's `filters`). Whatever the filters, a peer's default or wide routes, ranges over the mesh prefix or over this node's addresses, and unusable endpoints (loopback, multicast, this node's own addresses...) are never taken.",
				Optional:            true,
				Attributes: map[string]schema.Attribute{
					"exclude_advertised_networks": schema.ListAttribute{MarkdownDescription: "CIDRs left out of the addresses and networks this node announces (e.g. a LAN peers must not route to it).", ElementType: types.StringType, Optional: true},
					"peer_endpoints":              schema.ListAttribute{MarkdownDescription: "Ordered filter of the endpoints taken from peers, same syntax as `endpoint_filters`, e.g. `[\"0.0.0.0/0\", \"!10.0.0.0/8\"]`. Empty: `endpoint_filters` applies to peers too.", ElementType: types.StringType, Optional: true},
					"approved_routes": schema.ListNestedAttribute{
						MarkdownDescription: "Wide routes (exit nodes) this node takes from a given peer.",
						Optional:            true,
						NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
							"public_key": schema.StringAttribute{MarkdownDescription: "The peer's WireGuard public key, as `meshspan-agent identity` prints it (node names are chosen by the peer, so they approve nothing).", Required: true},
							"networks":   schema.ListAttribute{MarkdownDescription: "Networks the peer may route, e.g. `[\"0.0.0.0/0\"]`; an advert inside one of them is taken.", ElementType: types.StringType, Required: true},
						}},
					},
				},
			},
			"relay": schema.BoolAttribute{
				MarkdownDescription: "Let this node relay WireGuard packets between members that cannot reach each other directly, typically a public cloud node. It announces itself in the sealed discovery data. Default `false`.",
				Optional:            true, Computed: true,
			},
			"relay_port": schema.Int64Attribute{
				MarkdownDescription: "UDP port the relay listens on, 1..65535; needs `relay`. Omit it to relay on the WireGuard `listen_port` (userspace WireGuard), so the WireGuard firewall rule stays the only opening; it then reads back as 0. Kernel WireGuard holds its port itself: set another port and open it too (`extra_rules` of the cloud firewalls).",
				Optional:            true, Computed: true,
			},
			"firewall": schema.SingleNestedAttribute{
				MarkdownDescription: "Host input firewall the agent enforces (nftables). Loopback, established traffic, the WireGuard `listen_port`, traffic arriving through the mesh and the ICMPv6 that IPv6 needs are always admitted; the rules decide the rest. Omit it to leave the host's firewall alone.",
				Optional:            true,
				Attributes: map[string]schema.Attribute{
					"default_action": schema.StringAttribute{MarkdownDescription: "`block` or `accept`: what happens to inbound traffic no rule matches.", Required: true},
					"rules": schema.ListNestedAttribute{
						MarkdownDescription: "Rules, applied in order.",
						Optional:            true,
						NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
							"name":     schema.StringAttribute{MarkdownDescription: "A label for the rule.", Optional: true},
							"protocol": schema.StringAttribute{MarkdownDescription: "`tcp`, `udp`, `icmp` or `icmpv6`.", Required: true},
							"port":     schema.StringAttribute{MarkdownDescription: "Port `\"6443\"` or range `\"30000-32767\"` (tcp/udp only). Empty: all ports.", Optional: true},
							"sources":  schema.ListAttribute{MarkdownDescription: "Source CIDRs. Empty: any source.", ElementType: types.StringType, Optional: true},
							"action":   schema.StringAttribute{MarkdownDescription: "`accept` (default) or `block`.", Optional: true},
						}},
					},
				},
			},
			"agent_install": schema.SingleNestedAttribute{
				MarkdownDescription: "Where the node gets `/usr/local/bin/meshspan-agent`: `url` and `sha256` (downloaded with curl or wget and checked before it is installed), or `preinstalled = true` for images that ship it (Packer). Omitted: treated as `preinstalled = true`; the node then fails loudly at boot if the agent is missing.",
				Optional:            true,
				Attributes: map[string]schema.Attribute{
					"url":          schema.StringAttribute{MarkdownDescription: "http(s) URL of the agent binary for the node's architecture.", Optional: true},
					"sha256":       schema.StringAttribute{MarkdownDescription: "SHA-256 of the binary, 64 hex digits.", Optional: true},
					"preinstalled": schema.BoolAttribute{MarkdownDescription: "The image already has the agent; set no url or sha256.", Optional: true},
				},
			},
			"platform": schema.StringAttribute{
				MarkdownDescription: "Where `user_data` goes, which sets its size limit: `hcloud` (32 KiB), `digitalocean` (64 KiB), `metal` or `generic` (no limit). Default `generic`.",
				Optional:            true, Computed: true,
			},
			"machine_config": schema.StringAttribute{
				MarkdownDescription: "The agent config YAML (`apiVersion: meshspan/v1`, `kind: MachineConfig`), to be written to `/etc/meshspan/config.yaml` with mode 0600.",
				Computed:            true, Sensitive: true,
			},
			"user_data": schema.StringAttribute{
				MarkdownDescription: "`#cloud-config` that writes the config (0600), installs the agent (sha256 checked) unless preinstalled, installs `meshspan-agent.service` and enables and starts it. Pass it as the server's `user_data`.",
				Computed:            true, Sensitive: true,
			},
			"bundle_script": schema.StringAttribute{
				MarkdownDescription: "For hosts without cloud-init: one POSIX shell script, run as root, that does what `user_data` does (config 0600, agent install with sha256 check, unit enabled and restarted). Safe to re-run. Use it as `remote-exec` `inline = [data.meshspan_machine_config.NAME.bundle_script]` (connect as root), as the `inline` of a Packer `shell` provisioner, or with Ansible `script`/`shell`.",
				Computed:            true, Sensitive: true,
			},
			"bundle_files": schema.MapAttribute{
				MarkdownDescription: "The same files one by one, path on the node => content, for Ansible `copy` or Packer `file`: `" + userdata.ConfigPath + "` (mode 0600), `" + userdata.UnitPath + "` (0644) and `" + userdata.InstallPath + "` (0755, run it before starting the unit).",
				ElementType:         types.StringType, Computed: true, Sensitive: true,
			},
			"mesh_prefix": schema.StringAttribute{
				MarkdownDescription: "The cluster's mesh IPv6 /64, derived from `cluster_id`.",
				Computed:            true,
			},
		},
	}
}

func (d *machineConfigDataSource) ValidateConfig(ctx context.Context, req datasource.ValidateConfigRequest, resp *datasource.ValidateConfigResponse) {
	var m machineConfigModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	validateMachineConfig(&m, &resp.Diagnostics)
}

// validateMachineConfig checks at plan time whatever is known already.
func validateMachineConfig(m *machineConfigModel, diags *diag.Diagnostics) {
	b := newMCBuild(m)
	b.validate(diags)
	if diags.HasError() || !b.onlySecretsUnknown() {
		return
	}
	// The secrets have a fixed encoded length, so the user_data size is known
	// before they are: check the limit at plan time even on the first apply.
	if b.isUnknown("cluster.id") || b.isUnknown("cluster.secret") {
		b.cfg.Cluster = config.Cluster{ID: strings.Repeat("A", 43) + "=", Secret: strings.Repeat("A", 43) + "="}
	}
	if _, err := b.render(); err != nil {
		addRenderError(diags, err)
	}
}

func (d *machineConfigDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m machineConfigModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(m.compute(ctx)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// compute validates the inputs and fills in every computed attribute.
func (m *machineConfigModel) compute(ctx context.Context) diag.Diagnostics {
	var diags, checks diag.Diagnostics
	b := newMCBuild(m)
	b.validate(&checks)
	// Warnings were shown by ValidateConfig already; repeat only errors.
	diags.Append(checks.Errors()...)
	if diags.HasError() {
		return diags
	}
	out, err := b.render()
	if err != nil {
		addRenderError(&diags, err)
		return diags
	}
	files, d := types.MapValueFrom(ctx, types.StringType, out.files.Map())
	diags.Append(d...)
	if diags.HasError() {
		return diags
	}
	m.ID = types.StringValue(b.cfg.Node.Name)
	m.ListenPort = types.Int64Value(int64(b.cfg.WireGuard.ListenPort))
	m.MTU = types.Int64Value(int64(b.cfg.WireGuard.MTU))
	m.AllowDownPeerBypass = types.BoolValue(b.cfg.AllowDownPeerBypass)
	m.AllowWideAdvertised = types.BoolValue(b.cfg.AllowWideAdvertisedNetworks)
	m.Relay = types.BoolValue(b.cfg.Relay.Enabled)
	m.RelayPort = types.Int64Value(int64(b.cfg.Relay.Port))
	m.Platform = types.StringValue(b.platform)
	m.MachineConfig = types.StringValue(out.files.Config)
	m.UserData = types.StringValue(out.userData)
	m.BundleScript = types.StringValue(out.script)
	m.BundleFiles = files
	m.MeshPrefix = types.StringValue(clusterkey.MeshPrefix(b.cfg.Cluster.ID).String())
	return diags
}

type mcRendered struct {
	files    userdata.Files
	userData string
	script   string
}

// mcSizeError is a user_data over the platform's limit.
type mcSizeError struct {
	platform    string
	size, limit int
}

func (e *mcSizeError) Error() string {
	return fmt.Sprintf("user_data is %d bytes, over the %d byte (%d KiB) limit of platform %q; shrink it (fewer static_peers, a shorter discovery_ca_certificate, firewall rules), or deliver bundle_script/bundle_files instead and set platform = \"metal\"",
		e.size, e.limit, e.limit>>10, e.platform)
}

// render produces the config and delivery forms, and proves the config
// parses back to exactly what was built (what the agent will read).
func (b *mcBuild) render() (*mcRendered, error) {
	yml, err := config.Render(&b.cfg)
	if err != nil {
		return nil, err
	}
	back, err := config.Parse(yml)
	if err != nil {
		return nil, fmt.Errorf("the rendered machine config does not parse back (a provider bug; please report it): %w", err)
	}
	if !reflect.DeepEqual(*back, b.cfg) {
		return nil, fmt.Errorf("the rendered machine config parses back differently (a provider bug; please report it)")
	}
	files, err := userdata.Render(yml, b.agent)
	if err != nil {
		return nil, err
	}
	ud, err := userdata.CloudConfig(files)
	if err != nil {
		return nil, err
	}
	if limit, _ := userdata.Limit(b.platform); limit > 0 && len(ud) > limit {
		return nil, &mcSizeError{platform: b.platform, size: len(ud), limit: limit}
	}
	script, err := userdata.Script(files)
	if err != nil {
		return nil, err
	}
	return &mcRendered{files: files, userData: ud, script: script}, nil
}

func addRenderError(diags *diag.Diagnostics, err error) {
	var se *mcSizeError
	if fes := config.FieldErrors(err); len(fes) > 0 {
		for _, fe := range fes {
			addFieldError(diags, fe)
		}
		return
	}
	if errors.As(err, &se) {
		diags.AddAttributeError(path.Root("platform"), "user_data too large for platform", se.Error())
		return
	}
	diags.AddError("Cannot render the machine config", err.Error())
}
