# An existing Talos cluster joins the mesh of meshspan nodes, or meshspan
# nodes join a Talos cluster's: either way every node uses one cluster ID and
# secret and one discovery service.
resource "talos_machine_secrets" "this" {}

data "meshspan_talos_patch" "this" {
  talos_version      = "v1.11.5"
  cluster_id         = talos_machine_secrets.this.machine_secrets.cluster.id
  cluster_secret     = talos_machine_secrets.this.machine_secrets.cluster.secret
  discovery_endpoint = "https://discovery.example.com:3000/" # meshspan-agent discovery serve
  mtu                = 1420
  endpoint_filters   = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
}

data "talos_machine_configuration" "worker" {
  cluster_name     = "hybrid"
  cluster_endpoint = "https://k8s.example.com:6443"
  machine_type     = "worker"
  machine_secrets  = talos_machine_secrets.this.machine_secrets
  config_patches   = [data.meshspan_talos_patch.this.patch]
}

# The meshspan nodes get the same cluster ID, secret and discovery service.
data "meshspan_machine_config" "metal" {
  cluster_id          = talos_machine_secrets.this.machine_secrets.cluster.id
  cluster_secret      = talos_machine_secrets.this.machine_secrets.cluster.secret
  node_name           = "metal-1"
  platform            = "metal"
  discovery_endpoints = ["https://discovery.example.com:3000/"]
  endpoint_filters    = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
}
