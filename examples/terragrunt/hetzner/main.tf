terraform {
  required_providers {
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "~> 1.49"
    }
  }
}

variable "servers" {
  type    = map(string) # name => server type
  default = { hetzner-1 = "cx22", hetzner-2 = "cx22" }
}

data "meshspan_machine_config" "node" {
  for_each = var.servers

  cluster_id          = var.cluster_id
  cluster_secret      = var.cluster_secret
  node_name           = each.key
  platform            = "hcloud"
  discovery_endpoints = [var.discovery_endpoint]
  listen_port         = var.listen_port
  firewall            = local.host_firewall
  agent_install       = { url = var.agent_url, sha256 = var.agent_sha256 }
}

resource "hcloud_server" "node" {
  for_each = var.servers

  name        = each.key
  image       = "debian-12"
  server_type = each.value
  location    = "hel1"
  user_data   = data.meshspan_machine_config.node[each.key].user_data
  labels      = { mesh = "meshspan" }
}

resource "meshspan_hcloud_firewall" "mesh" {
  name            = "meshspan"
  wireguard_port  = var.listen_port
  label_selectors = ["mesh=meshspan"]
  extra_rules = [{
    direction   = "in"
    protocol    = "tcp"
    port        = "6443"
    source_ips  = var.admin_cidrs
    description = "Kubernetes API from admin_cidrs"
  }]
}
