# A bare metal cluster that grows into Hetzner Cloud and DigitalOcean: every
# node joins one encrypted WireGuard full mesh, found through a discovery
# service that only sees ciphertext. The only port open to the internet on
# the cloud nodes is WireGuard's; management ports admit var.admin_cidrs.

resource "meshspan_cluster_secrets" "this" {}

locals {
  listen_port = 51820
  agent_install = {
    url    = "https://github.com/meshspan/terraform-provider-meshspan/releases/download/v${var.agent_version}/meshspan-agent_${var.agent_version}_linux_amd64"
    sha256 = var.agent_sha256
  }

  # The host firewall every node enforces (the seed's Talos firewall):
  # block by default, WireGuard from anywhere, management from admin_cidrs.
  host_firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = tostring(local.listen_port), sources = null, action = "accept" },
      { name = "kube-apiserver", protocol = "tcp", port = "6443", sources = var.admin_cidrs, action = "accept" },
      { name = "node-api", protocol = "tcp", port = "50000", sources = var.admin_cidrs, action = "accept" },
      { name = "mesh-icmp", protocol = "icmpv6", port = null, sources = [meshspan_cluster_secrets.this.mesh_prefix], action = "accept" },
    ]
  }

  # The same management rules for the cloud firewalls.
  management_ports = ["6443", "50000"]
}

# ---------------------------------------------------------------- bare metal

data "meshspan_machine_config" "metal" {
  for_each = var.bare_metal

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  platform            = "metal"
  labels              = { "topology.kubernetes.io/region" = "on-prem" }
  discovery_endpoints = [var.discovery_endpoint]
  listen_port         = local.listen_port
  lan_bypass          = var.rack_lan
  firewall            = local.host_firewall
  agent_install       = local.agent_install
}

# The bundle is one POSIX script: config (0600), agent (sha256 checked),
# systemd unit. It is safe to re-run; it re-runs when the config changes.
resource "terraform_data" "metal" {
  for_each = var.bare_metal

  triggers_replace = [sha256(data.meshspan_machine_config.metal[each.key].machine_config)]

  connection {
    type        = "ssh"
    host        = each.value.address
    user        = each.value.user
    private_key = file(each.value.private_key)
  }

  provisioner "remote-exec" {
    inline = [data.meshspan_machine_config.metal[each.key].bundle_script]
  }
}

# ------------------------------------------------------------- Hetzner Cloud

data "meshspan_machine_config" "hcloud" {
  for_each = var.hcloud_workers

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  platform            = "hcloud" # checks the 32 KiB user_data limit at plan time
  labels              = { "topology.kubernetes.io/region" = each.value.location }
  discovery_endpoints = [var.discovery_endpoint]
  listen_port         = local.listen_port
  firewall            = local.host_firewall
  agent_install       = local.agent_install
}

resource "hcloud_ssh_key" "admin" {
  name       = "${var.cluster_name}-admin"
  public_key = var.ssh_key_public
}

resource "hcloud_server" "worker" {
  for_each = var.hcloud_workers

  name        = each.key
  image       = "debian-12"
  server_type = each.value.server_type
  location    = each.value.location
  ssh_keys    = [hcloud_ssh_key.admin.id]
  user_data   = data.meshspan_machine_config.hcloud[each.key].user_data
  labels = {
    cluster = var.cluster_name
    mesh    = "meshspan"
  }
}

# Admits WireGuard from anywhere and management from admin_cidrs only; it
# follows the label, so servers added later are covered from their first boot.
resource "meshspan_hcloud_firewall" "workers" {
  name            = "${var.cluster_name}-mesh"
  wireguard_port  = local.listen_port
  label_selectors = ["cluster=${var.cluster_name},mesh=meshspan"]
  extra_rules = [
    for port in local.management_ports : {
      direction   = "in"
      protocol    = "tcp"
      port        = port
      source_ips  = var.admin_cidrs
      description = "management ${port} from admin_cidrs"
    }
  ]
}

# -------------------------------------------------------------- DigitalOcean

data "meshspan_machine_config" "digitalocean" {
  for_each = var.digitalocean_workers

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  platform            = "digitalocean"
  labels              = { "topology.kubernetes.io/region" = each.value.region }
  discovery_endpoints = [var.discovery_endpoint]
  listen_port         = local.listen_port
  firewall            = local.host_firewall
  agent_install       = local.agent_install
  # DigitalOcean's anchor address (10.x on eth0) is not reachable from other
  # clouds: never advertise it as an endpoint.
  endpoint_filters = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
}

resource "digitalocean_ssh_key" "admin" {
  name       = "${var.cluster_name}-admin"
  public_key = var.ssh_key_public
}

resource "digitalocean_tag" "mesh" {
  name = "${var.cluster_name}-mesh"
}

resource "digitalocean_droplet" "worker" {
  for_each = var.digitalocean_workers

  name      = each.key
  image     = "debian-12-x64"
  size      = each.value.size
  region    = each.value.region
  ssh_keys  = [digitalocean_ssh_key.admin.fingerprint]
  tags      = [digitalocean_tag.mesh.id]
  user_data = data.meshspan_machine_config.digitalocean[each.key].user_data
}

resource "meshspan_digitalocean_firewall" "workers" {
  name           = "${var.cluster_name}-mesh"
  wireguard_port = local.listen_port
  tags           = [digitalocean_tag.mesh.name]
  extra_inbound_rules = [
    for port in local.management_ports : {
      protocol         = "tcp"
      port_range       = port
      source_addresses = var.admin_cidrs
    }
  ]
}
