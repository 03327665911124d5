# Nodes that use your own discovery service over TLS with a private CA.
# Serve it with systemd/meshspan-discovery.service (one replica) or with
# systemd/meshspan-discovery@.service + nginx/meshspan-discovery.conf
# (two replicas on Redis behind one address).

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    meshspan = {
      source  = "meshspan/meshspan"
      version = "~> 0.1"
    }
  }
}

provider "meshspan" {}

variable "discovery_endpoint" {
  description = "Your service's URL: https://host[:port]."
  type        = string
  default     = "https://discovery.example.com:443"
}

variable "discovery_ca_file" {
  description = "PEM of the private CA that signed the service's certificate (tls/make-ca.sh writes tls/ca.pem); null with a public CA."
  type        = string
  default     = null
}

variable "nodes" {
  type    = set(string)
  default = ["node-1", "node-2"]
}

resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  for_each = var.nodes

  cluster_id               = meshspan_cluster_secrets.this.cluster_id
  cluster_secret           = meshspan_cluster_secrets.this.cluster_secret
  node_name                = each.key
  platform                 = "generic"
  discovery_endpoints      = [var.discovery_endpoint]
  discovery_ca_certificate = var.discovery_ca_file == null ? null : file(var.discovery_ca_file)
  agent_install            = { preinstalled = true }
}

# The service admits only the cluster IDs listed in this file
# (--allowed-clusters-file), so it is not free storage for strangers.
output "allowed_clusters_line" {
  description = "Append to /etc/meshspan-discovery/allowed-clusters on the service host."
  value       = meshspan_cluster_secrets.this.cluster_id
  sensitive   = true
}

output "user_data" {
  value     = { for n, c in data.meshspan_machine_config.node : n => c.user_data }
  sensitive = true
}
