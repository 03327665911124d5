resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "do-fra1-1"
  discovery_endpoints = ["https://discovery.talos.dev/"]
  platform            = "digitalocean"
}

resource "digitalocean_tag" "mesh" {
  name = "meshspan"
}

resource "digitalocean_droplet" "node" {
  name      = "do-fra1-1"
  region    = "fra1"
  size      = "s-1vcpu-1gb"
  image     = "debian-12-x64"
  tags      = [digitalocean_tag.mesh.name]
  user_data = data.meshspan_machine_config.node.user_data
}

# Admits only WireGuard from the internet, on the port the node listens on.
# Outbound stays unrestricted: the provider sends allow-all outbound rules,
# since DigitalOcean blocks all traffic that no rule permits.
resource "meshspan_digitalocean_firewall" "mesh" {
  name           = "meshspan-wireguard-only"
  wireguard_port = data.meshspan_machine_config.node.listen_port

  # Applied to every droplet tagged "meshspan", and to this one by ID.
  tags        = [digitalocean_tag.mesh.name]
  droplet_ids = [digitalocean_droplet.node.id]

  # Kubernetes and Talos APIs, reachable only from the management network.
  extra_inbound_rules = [
    { protocol = "tcp", port_range = "6443", source_addresses = ["100.64.0.0/10"] },
    { protocol = "tcp", port_range = "50000", source_addresses = ["100.64.0.0/10"] },
    # Rules allow by default; a deny rule carves out an exception.
    { protocol = "tcp", port_range = "22", source_addresses = ["198.51.100.0/24"], action = "deny" },
  ]

  timeouts {
    create = "5m"
  }
}
