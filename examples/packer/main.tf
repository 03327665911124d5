# Servers from the snapshot built by meshspan-agent.pkr.hcl. The agent is
# already in the image, so the user_data only writes the config and the unit
# and starts the agent: agent_install = { preinstalled = true }.

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    meshspan = {
      source  = "meshspan/meshspan"
      version = "~> 0.1"
    }
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "~> 1.49"
    }
  }
}

variable "hcloud_token" {
  type      = string
  sensitive = true
}

variable "agent_version" {
  type    = string
  default = "0.1.0"
}

variable "nodes" {
  type    = set(string)
  default = ["hetzner-1", "hetzner-2", "hetzner-3"]
}

provider "hcloud" {
  token = var.hcloud_token
}

provider "meshspan" {
  hcloud_token = var.hcloud_token
}

data "hcloud_image" "meshspan" {
  with_selector = "meshspan-agent=${var.agent_version}"
  most_recent   = true
}

resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  for_each = var.nodes

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  platform            = "hcloud"
  discovery_endpoints = ["https://discovery.talos.dev/"]
  agent_install       = { preinstalled = true }
}

resource "hcloud_server" "node" {
  for_each = var.nodes

  name        = each.key
  image       = data.hcloud_image.meshspan.id
  server_type = "cx22"
  location    = "hel1"
  user_data   = data.meshspan_machine_config.node[each.key].user_data
  labels      = { mesh = "meshspan" }
}

resource "meshspan_hcloud_firewall" "mesh" {
  name            = "meshspan"
  label_selectors = ["mesh=meshspan"]
}
