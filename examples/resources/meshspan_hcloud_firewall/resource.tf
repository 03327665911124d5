resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "hel1-worker-1"
  discovery_endpoints = ["https://discovery.talos.dev/"]
  platform            = "hcloud"
}

resource "hcloud_server" "node" {
  name        = "hel1-worker-1"
  server_type = "cx22"
  image       = "debian-12"
  location    = "hel1"
  labels      = { role = "worker" }
  user_data   = data.meshspan_machine_config.node.user_data
}

# Admits only WireGuard from the internet, on the port the node listens on.
# Outbound stays unrestricted because no "out" rule is set.
resource "meshspan_hcloud_firewall" "mesh" {
  name           = "meshspan-wireguard-only"
  labels         = { cluster = "hybrid" }
  wireguard_port = data.meshspan_machine_config.node.listen_port

  # Applied to this server by ID, and to every server labelled role=worker.
  server_ids      = [hcloud_server.node.id]
  label_selectors = ["role=worker"]

  # Kubernetes and Talos APIs, reachable only from the management network.
  extra_rules = [
    { direction = "in", protocol = "tcp", port = "6443", source_ips = ["100.64.0.0/10"], description = "kubernetes api" },
    { direction = "in", protocol = "tcp", port = "50000-50001", source_ips = ["100.64.0.0/10"], description = "talos api" },
  ]

  timeouts {
    create = "5m"
  }
}
