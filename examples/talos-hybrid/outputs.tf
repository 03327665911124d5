output "mesh_prefix" {
  description = "The mesh /64: every node's KubeSpan (or meshspan) address lies in it."
  value       = data.meshspan_talos_patch.this.mesh_prefix
}

output "talos_patch_form" {
  description = "Where the KubeSpan settings went in the Talos config."
  value       = data.meshspan_talos_patch.this.form
}

output "talos_machine_configuration" {
  description = "The Talos machine configs (controlplane, worker): hcloud_server.user_data of the Talos servers."
  value       = { for k, v in data.talos_machine_configuration.node : k => v.machine_configuration }
  sensitive   = true
}

output "meshspan_user_data" {
  description = "cloud-init user_data of each meshspan node."
  value       = { for k, v in data.meshspan_machine_config.node : k => v.user_data }
  sensitive   = true
}

output "meshspan_machine_config" {
  description = "The meshspan-agent config of each meshspan node (inside its user_data)."
  value       = { for k, v in data.meshspan_machine_config.node : k => v.machine_config }
  sensitive   = true
}

output "firewall_id" {
  description = "The Hetzner Cloud firewall that admits only WireGuard."
  value       = meshspan_hcloud_firewall.mesh.id
}
