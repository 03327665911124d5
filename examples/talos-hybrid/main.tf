# Talos nodes and plain-Linux meshspan nodes in one WireGuard mesh: one
# cluster identity (Talos's own secrets), one self-hosted discovery service,
# one Hetzner Cloud firewall that admits only WireGuard.

resource "talos_machine_secrets" "this" {
  talos_version = var.talos_version
}

locals {
  # KubeSpan's cluster ID and secret: the mesh prefix, the discovery key and
  # the WireGuard pre-shared key all come from them.
  cluster_id     = talos_machine_secrets.this.machine_secrets.cluster.id
  cluster_secret = talos_machine_secrets.this.machine_secrets.cluster.secret
}

# The patch that turns on KubeSpan and points discovery at our service.
data "meshspan_talos_patch" "this" {
  talos_version      = var.talos_version
  cluster_id         = local.cluster_id
  cluster_secret     = local.cluster_secret
  discovery_endpoint = var.discovery_endpoint
  endpoint_filters   = var.endpoint_filters
}

data "talos_machine_configuration" "node" {
  for_each         = toset(["controlplane", "worker"])
  cluster_name     = var.cluster_name
  cluster_endpoint = var.cluster_endpoint
  machine_type     = each.key
  machine_secrets  = talos_machine_secrets.this.machine_secrets
  talos_version    = var.talos_version
  config_patches   = [data.meshspan_talos_patch.this.patch]
}

# The meshspan nodes: same cluster, same discovery service.
data "meshspan_machine_config" "node" {
  for_each            = var.meshspan_nodes
  cluster_id          = local.cluster_id
  cluster_secret      = local.cluster_secret
  node_name           = each.key
  platform            = each.value.platform
  discovery_endpoints = [var.discovery_endpoint]
  endpoint_filters    = var.endpoint_filters
  agent_install = {
    url    = var.agent_url
    sha256 = var.agent_sha256
  }
}

# Both kinds listen on 51820/udp (Talos's KubeSpan port, meshspan's
# default), and nothing else is let in from the internet.
resource "meshspan_hcloud_firewall" "mesh" {
  name            = "${var.cluster_name}-mesh"
  wireguard_port  = 51820
  label_selectors = ["${var.mesh_label}=true"]
}
