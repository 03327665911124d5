resource "meshspan_cluster_secrets" "this" {}

output "cluster_id" {
  value     = meshspan_cluster_secrets.this.cluster_id
  sensitive = true
}

output "cluster_secret" {
  value     = meshspan_cluster_secrets.this.cluster_secret
  sensitive = true
}

output "mesh_prefix" {
  value = meshspan_cluster_secrets.this.mesh_prefix
}
