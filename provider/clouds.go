package provider

import (
	"github.com/meshspan/terraform-provider-meshspan/provider/digitalocean"
	"github.com/meshspan/terraform-provider-meshspan/provider/hcloud"
)

// Each cloud family lives in a package of its own and takes its part of
// the provider configuration through these methods.

// HcloudConfig is what the Hetzner Cloud resources need.
func (d *providerData) HcloudConfig() hcloud.Config {
	return hcloud.Config{Token: d.HcloudToken, Endpoint: d.HcloudEndpoint, Version: d.Version}
}

// DigitalOceanConfig is what the DigitalOcean resources need.
func (d *providerData) DigitalOceanConfig() digitalocean.Config {
	return digitalocean.Config{Token: d.DigitalOceanToken, Endpoint: d.DigitalOceanEndpoint, Version: d.Version}
}
