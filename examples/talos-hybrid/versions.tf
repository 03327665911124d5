terraform {
  required_version = ">= 1.5.0"

  required_providers {
    meshspan = {
      source  = "meshspan/meshspan"
      version = "~> 0.1"
    }
    talos = {
      source  = "siderolabs/talos"
      version = "~> 0.7"
    }
  }
}

# The meshspan provider manages the Hetzner Cloud firewall; the servers
# themselves come from your hcloud_server resources (see README.md).
provider "meshspan" {
  hcloud_token    = var.hcloud_token
  hcloud_endpoint = var.hcloud_endpoint
}
