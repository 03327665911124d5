# Generated into each node unit by node.hcl: what every unit that makes nodes
# declares.

variable "cluster_id" {
  type      = string
  sensitive = true
}

variable "cluster_secret" {
  type      = string
  sensitive = true
}

variable "mesh_prefix" {
  type = string
}

variable "discovery_endpoint" {
  type = string
}

variable "listen_port" {
  type = number
}

variable "admin_cidrs" {
  type = list(string)
}

variable "agent_url" {
  description = "URL of the linux amd64 meshspan-agent binary."
  type        = string
}

variable "agent_sha256" {
  type = string
}

locals {
  host_firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = tostring(var.listen_port), sources = null, action = "accept" },
      { name = "kube-apiserver", protocol = "tcp", port = "6443", sources = var.admin_cidrs, action = "accept" },
      { name = "mesh-icmp", protocol = "icmpv6", port = null, sources = [var.mesh_prefix], action = "accept" },
    ]
  }
}
