# The smallest whole journey, offline: cluster secrets and the machine configs
# of a three-node hybrid (bare metal, Hetzner Cloud, DigitalOcean). Apply it
# with the provider from `make install` (no registry needed):
#
#   make install && export TF_CLI_CONFIG_FILE=$PWD/bin/terraformrc
#   cd examples/local && terraform init && terraform apply
#
# Then read what a node gets:
#   terraform output -raw hcloud_user_data
#   terraform output -raw metal_bundle_script

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    meshspan = {
      source = "meshspan/meshspan"
    }
  }
}

provider "meshspan" {}

variable "discovery_endpoint" {
  description = "Discovery service URL every node uses (`meshspan-agent discovery serve` listens here by default)."
  type        = string
  default     = "http://127.0.0.1:3000"
}

variable "agent_url" {
  description = "Where cloud nodes download meshspan-agent (a release asset, or your own mirror)."
  type        = string
  default     = "https://github.com/meshspan/terraform-provider-meshspan/releases/download/v0.1.0/meshspan-agent_0.1.0_linux_amd64"
}

variable "agent_sha256" {
  description = "SHA-256 of the binary at agent_url (`sha256sum meshspan-agent`). The default is a placeholder: set the real checksum before booting real servers, or they refuse to install the agent."
  type        = string
  default     = "0000000000000000000000000000000000000000000000000000000000000000"
}

resource "meshspan_cluster_secrets" "this" {}

locals {
  nodes = {
    metal-1 = {
      platform   = "metal"
      labels     = { "topology.kubernetes.io/region" = "office" }
      lan_bypass = ["192.168.10.0/24"]
      extra      = ["198.51.100.20:51820"] # port forward on the office router
    }
    hcloud-1 = {
      platform   = "hcloud"
      labels     = { "topology.kubernetes.io/region" = "fsn1" }
      lan_bypass = []
      extra      = []
    }
    do-1 = {
      platform   = "digitalocean"
      labels     = { "topology.kubernetes.io/region" = "fra1" }
      lan_bypass = []
      extra      = []
    }
  }
}

data "meshspan_machine_config" "node" {
  for_each = local.nodes

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  platform            = each.value.platform
  labels              = each.value.labels
  discovery_endpoints = [var.discovery_endpoint]
  lan_bypass          = each.value.lan_bypass
  extra_endpoints     = each.value.extra

  # The bare-metal image ships the agent; the clouds download and check it.
  agent_install = each.value.platform == "metal" ? { preinstalled = true, url = null, sha256 = null } : { preinstalled = false, url = var.agent_url, sha256 = var.agent_sha256 }

  firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = "51820" },
      { name = "ssh", protocol = "tcp", port = "22", sources = ["192.0.2.0/24"] },
    ]
  }
}

output "mesh_prefix" {
  description = "The cluster's mesh IPv6 /64."
  value       = meshspan_cluster_secrets.this.mesh_prefix
}

output "nodes" {
  description = "Per node: platform, WireGuard port and the size of its user_data."
  value = {
    for name, mc in data.meshspan_machine_config.node : name => {
      platform        = mc.platform
      listen_port     = mc.listen_port
      user_data_bytes = nonsensitive(length(mc.user_data))
    }
  }
}

output "hcloud_user_data" {
  description = "The #cloud-config a Hetzner server gets."
  value       = data.meshspan_machine_config.node["hcloud-1"].user_data
  sensitive   = true
}

output "metal_bundle_script" {
  description = "The script a bare-metal host without cloud-init runs as root."
  value       = data.meshspan_machine_config.node["metal-1"].bundle_script
  sensitive   = true
}
