# One per cluster: every node's machine config takes its cluster_id and
# cluster_secret.
resource "meshspan_cluster_secrets" "this" {
  # Rotate deliberately: change this value and apply. The plan shows
  # "must be replaced", and every node's machine config changes with it.
  keepers = {
    rotation = "2026-11"
  }
}

output "mesh_prefix" {
  value = meshspan_cluster_secrets.this.mesh_prefix
}
