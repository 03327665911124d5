# The test's cluster: one node booted from the Packer image (the agent is
# in the image: agent_install = { preinstalled = true }) and one namespace
# node, both finding each other through the lab's discovery service.

terraform {
  required_providers {
    meshspan = {
      source = "meshspan/meshspan"
    }
  }
}

provider "meshspan" {}

resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  for_each = toset(["baked-1", "ns-1"])

  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = each.key
  discovery_endpoints = ["http://203.0.113.2:3000"]
  agent_install       = { preinstalled = true }
}

output "cluster_id" {
  sensitive = true
  value     = meshspan_cluster_secrets.this.cluster_id
}

output "user_data" {
  sensitive = true
  value     = data.meshspan_machine_config.node["baked-1"].user_data
}

output "ns_config" {
  sensitive = true
  value     = data.meshspan_machine_config.node["ns-1"].machine_config
}
