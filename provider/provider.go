// Package provider implements the meshspan Terraform provider: cluster
// secrets, per-node machine configs and user data, and cloud firewalls that
// admit only WireGuard.
package provider

import (
	"context"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/meshspan/terraform-provider-meshspan/provider/digitalocean"
	"github.com/meshspan/terraform-provider-meshspan/provider/hcloud"
)

var (
	_ provider.Provider                       = (*meshspanProvider)(nil)
	_ provider.ProviderWithEphemeralResources = (*meshspanProvider)(nil)
)

// New returns a provider factory for providerserver.Serve and tests.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &meshspanProvider{version: version} }
}

type meshspanProvider struct {
	version string
}

type providerModel struct {
	HcloudToken          types.String `tfsdk:"hcloud_token"`
	HcloudEndpoint       types.String `tfsdk:"hcloud_endpoint"`
	DigitalOceanToken    types.String `tfsdk:"digitalocean_token"`
	DigitalOceanEndpoint types.String `tfsdk:"digitalocean_endpoint"`
}

// providerData is what Configure hands to every resource and data source.
// Cloud clients are built by the resources that need them, so a config that
// uses no cloud needs no token.
type providerData struct {
	Version              string
	HcloudToken          string
	HcloudEndpoint       string
	DigitalOceanToken    string
	DigitalOceanEndpoint string
}

func (p *meshspanProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "meshspan"
	resp.Version = p.version
}

func (p *meshspanProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Builds a full-mesh WireGuard network (like Talos KubeSpan) across bare metal, " +
			"Hetzner Cloud, DigitalOcean and other hosts: cluster secrets, per-node machine configs and user data, " +
			"and cloud firewalls that admit only WireGuard.",
		Attributes: map[string]schema.Attribute{
			"hcloud_token": schema.StringAttribute{
				MarkdownDescription: "Hetzner Cloud API token (read and write). Defaults to the `HCLOUD_TOKEN` environment variable. Needed only by `meshspan_hcloud_firewall`.",
				Optional:            true,
				Sensitive:           true,
			},
			"hcloud_endpoint": schema.StringAttribute{
				MarkdownDescription: "Hetzner Cloud API endpoint. Defaults to the `HCLOUD_ENDPOINT` environment variable, then `https://api.hetzner.cloud/v1`.",
				Optional:            true,
			},
			"digitalocean_token": schema.StringAttribute{
				MarkdownDescription: "DigitalOcean API token with write scope. Defaults to the `DIGITALOCEAN_TOKEN` (or `DIGITALOCEAN_ACCESS_TOKEN`) environment variable. Needed only by `meshspan_digitalocean_firewall`.",
				Optional:            true,
				Sensitive:           true,
			},
			"digitalocean_endpoint": schema.StringAttribute{
				MarkdownDescription: "DigitalOcean API endpoint. Defaults to the `DIGITALOCEAN_API_URL` environment variable, then `https://api.digitalocean.com`.",
				Optional:            true,
			},
		},
	}
}

func (p *meshspanProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	data := &providerData{
		Version:              p.version,
		HcloudToken:          firstSet(m.HcloudToken, "HCLOUD_TOKEN"),
		HcloudEndpoint:       firstSet(m.HcloudEndpoint, "HCLOUD_ENDPOINT"),
		DigitalOceanToken:    firstSet(m.DigitalOceanToken, "DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"),
		DigitalOceanEndpoint: firstSet(m.DigitalOceanEndpoint, "DIGITALOCEAN_API_URL"),
	}
	if data.HcloudEndpoint == "" {
		data.HcloudEndpoint = "https://api.hetzner.cloud/v1"
	}
	if data.DigitalOceanEndpoint == "" {
		data.DigitalOceanEndpoint = "https://api.digitalocean.com"
	}
	resp.DataSourceData = data
	resp.ResourceData = data
	resp.EphemeralResourceData = data
}

// firstSet returns the attribute's value if set, else the first non-empty
// environment variable of envs.
func firstSet(attr types.String, envs ...string) string {
	if !attr.IsNull() && !attr.IsUnknown() && attr.ValueString() != "" {
		return attr.ValueString()
	}
	for _, e := range envs {
		if v := os.Getenv(e); v != "" {
			return v
		}
	}
	return ""
}

func (p *meshspanProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		// Each helper registers its resources here.
		NewClusterSecretsResource,
		digitalocean.NewFirewallResource,
		hcloud.NewFirewallResource,
	}
}

func (p *meshspanProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewMachineConfigDataSource,
		NewTalosPatchDataSource,
	}
}

func (p *meshspanProvider) EphemeralResources(_ context.Context) []func() ephemeral.EphemeralResource {
	return []func() ephemeral.EphemeralResource{
		NewClusterSecretsEphemeralResource,
		NewMachineConfigEphemeralResource,
	}
}
