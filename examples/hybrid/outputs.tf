output "mesh_prefix" {
  description = "The cluster's mesh IPv6 /64: every node has one address in it."
  value       = meshspan_cluster_secrets.this.mesh_prefix
}

output "hcloud_addresses" {
  value = { for name, s in hcloud_server.worker : name => s.ipv4_address }
}

output "digitalocean_addresses" {
  value = { for name, d in digitalocean_droplet.worker : name => d.ipv4_address }
}
