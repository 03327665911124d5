terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.44"
    }
  }
}

variable "droplets" {
  type    = map(string) # name => region
  default = { do-1 = "fra1" }
}

data "meshspan_machine_config" "node" {
  for_each = var.droplets

  cluster_id          = var.cluster_id
  cluster_secret      = var.cluster_secret
  node_name           = each.key
  platform            = "digitalocean"
  discovery_endpoints = [var.discovery_endpoint]
  listen_port         = var.listen_port
  endpoint_filters    = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"] # keep the anchor IP out
  firewall            = local.host_firewall
  agent_install       = { url = var.agent_url, sha256 = var.agent_sha256 }
}

resource "digitalocean_tag" "mesh" {
  name = "meshspan"
}

resource "digitalocean_droplet" "node" {
  for_each = var.droplets

  name      = each.key
  image     = "debian-12-x64"
  size      = "s-2vcpu-4gb"
  region    = each.value
  tags      = [digitalocean_tag.mesh.id]
  user_data = data.meshspan_machine_config.node[each.key].user_data
}

resource "meshspan_digitalocean_firewall" "mesh" {
  name           = "meshspan"
  wireguard_port = var.listen_port
  tags           = [digitalocean_tag.mesh.name]
  extra_inbound_rules = [{
    protocol         = "tcp"
    port_range       = "6443"
    source_addresses = var.admin_cidrs
  }]
}
