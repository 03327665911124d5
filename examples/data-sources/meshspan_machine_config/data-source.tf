resource "meshspan_cluster_secrets" "this" {}

# A Hetzner Cloud control-plane node: cloud-init user_data, agent downloaded
# and checked, and the host firewall of a Talos control plane (WireGuard open,
# Kubernetes and Talos APIs only from the management network).
data "meshspan_machine_config" "cp" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "fsn1-cp-1"
  platform            = "hcloud"
  labels              = { "topology.kubernetes.io/region" = "fsn1" }
  discovery_endpoints = ["https://discovery.talos.dev/"]

  # Advertise public addresses only.
  endpoint_filters    = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
  advertised_networks = ["10.244.1.0/24"] # this node's pod CIDR

  agent_install = {
    url    = "https://github.com/meshspan/terraform-provider-meshspan/releases/download/v0.1.0/meshspan-agent_0.1.0_linux_amd64"
    sha256 = "4f2b8a0c3e9d7f61a5b2c4d6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f3"
  }

  firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = "51820" },
      { name = "talos-api", protocol = "tcp", port = "50000", sources = ["100.64.0.0/10"] },
      { name = "kubernetes-api", protocol = "tcp", port = "6443", sources = ["100.64.0.0/10"] },
    ]
  }
}

resource "hcloud_server" "cp" {
  name        = "fsn1-cp-1"
  server_type = "cx22"
  image       = "debian-12"
  location    = "fsn1"
  user_data   = data.meshspan_machine_config.cp.user_data
}

# A bare-metal node without cloud-init, behind NAT at the office: the bundle
# script is run over SSH; the agent is baked into the image by Packer.
data "meshspan_machine_config" "metal" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "office-1"
  platform            = "metal"
  discovery_endpoints = ["https://discovery.talos.dev/"]
  extra_endpoints     = ["198.51.100.20:51820"] # port forward on the office router
  lan_bypass          = ["192.168.10.0/24"]     # office LAN stays direct
  agent_install       = { preinstalled = true }
}

resource "terraform_data" "metal" {
  triggers_replace = [sha256(data.meshspan_machine_config.metal.machine_config)]

  connection {
    host = "198.51.100.20"
    user = "root"
  }

  provisioner "remote-exec" {
    inline = [data.meshspan_machine_config.metal.bundle_script]
  }
}
