# A hybrid cluster's mesh on one machine: `make demo` applies this, then
# `meshspan-lab` builds the network below out of network namespaces and
# boots every node from the user_data or bundle_script rendered here.
#
#   internet 203.0.113.0/24 ── discovery .2, agent mirror .3
#     ├─ metal-1    .31  bare metal, public address (bundle over SSH in real life)
#     ├─ nat-router .40 ── home LAN 198.51.100.0/24 ── metal-2 .10 (behind NAT)
#     ├─ hetzner-1  .11, hetzner-2 .12 (cloud-init user_data)
#     └─ do-1       .21 (cloud-init user_data)

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    meshspan = {
      source  = "meshspan/meshspan"
      version = "~> 0.1"
    }
  }
}

provider "meshspan" {}

variable "agent_url" {
  description = "Where nodes download the agent from (the lab serves bin/meshspan-agent there)."
  type        = string
  default     = "http://203.0.113.3:8080/meshspan-agent"
}

variable "agent_sha256" {
  description = "SHA-256 of the agent binary at agent_url; `meshspan-lab` passes it."
  type        = string
}

variable "discovery_endpoint" {
  description = "The discovery service every node uses; the lab starts it at this address."
  type        = string
  default     = "http://203.0.113.2:3000"
}

resource "meshspan_cluster_secrets" "this" {}

locals {
  listen_port = 51820

  # The lab's underlay. Everything lives in documentation ranges.
  network = {
    internet  = "203.0.113.0/24"
    discovery = "203.0.113.2/24"
    mirror    = "203.0.113.3/24"
    nat = {
      mode = "port-preserving"
      wan  = "203.0.113.40/24"
      lan  = "198.51.100.1/24"
    }
  }

  nodes = {
    metal-1   = { platform = "metal", provider = "baremetal", address = "203.0.113.31/24", behind_nat = false }
    metal-2   = { platform = "metal", provider = "baremetal", address = "198.51.100.10/24", behind_nat = true }
    hetzner-1 = { platform = "hcloud", provider = "hetzner", address = "203.0.113.11/24", behind_nat = false }
    hetzner-2 = { platform = "hcloud", provider = "hetzner", address = "203.0.113.12/24", behind_nat = false }
    do-1      = { platform = "digitalocean", provider = "digitalocean", address = "203.0.113.21/24", behind_nat = false }
  }
}

data "meshspan_machine_config" "node" {
  for_each = local.nodes

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  platform            = each.value.platform
  listen_port         = local.listen_port
  discovery_endpoints = [var.discovery_endpoint]
  labels = {
    "topology.kubernetes.io/region" = each.value.provider
    "meshspan.dev/behind-nat"       = tostring(each.value.behind_nat)
  }

  # Host firewall: nothing comes in but WireGuard, ICMP and iperf3 over the
  # mesh, and SSH from the home LAN.
  firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = tostring(local.listen_port), sources = null, action = "accept" },
      { name = "mesh-ping", protocol = "icmpv6", port = null, sources = [meshspan_cluster_secrets.this.mesh_prefix], action = "accept" },
      { name = "mesh-iperf", protocol = "tcp", port = "5201", sources = [meshspan_cluster_secrets.this.mesh_prefix], action = "accept" },
      { name = "ssh-from-lan", protocol = "tcp", port = "22", sources = ["198.51.100.0/24"], action = "accept" },
    ]
  }

  agent_install = {
    url    = var.agent_url
    sha256 = var.agent_sha256
  }
}

output "mesh_prefix" {
  value = meshspan_cluster_secrets.this.mesh_prefix
}

output "network" {
  value = local.network
}

output "discovery_endpoint" {
  value = var.discovery_endpoint
}

# Everything `meshspan-lab` needs to boot each node the way a real one
# boots: bare metal runs bundle_script (over SSH), clouds get user_data.
output "nodes" {
  sensitive = true
  value = {
    for name, n in local.nodes : name => {
      platform      = n.platform
      provider      = n.provider
      address       = n.address
      behind_nat    = n.behind_nat
      listen_port   = data.meshspan_machine_config.node[name].listen_port
      user_data     = data.meshspan_machine_config.node[name].user_data
      bundle_script = data.meshspan_machine_config.node[name].bundle_script
    }
  }
}
