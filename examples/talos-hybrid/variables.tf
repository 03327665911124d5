variable "hcloud_token" {
  description = "Hetzner Cloud API token (read and write), for the firewall."
  type        = string
  sensitive   = true
}

variable "hcloud_endpoint" {
  description = "Hetzner Cloud API URL. Null: the real API."
  type        = string
  default     = null
}

variable "cluster_name" {
  description = "Kubernetes cluster name, and the prefix of cloud resource names."
  type        = string
  default     = "hybrid"
}

variable "cluster_endpoint" {
  description = "The Kubernetes API endpoint of the Talos control plane, e.g. a load balancer (see the KubeSpan guide's API endpoint limitations)."
  type        = string
  default     = "https://203.0.113.10:6443"
}

variable "talos_version" {
  description = "The Talos version of the Talos nodes (`talosctl version`). It picks the config features and the KubeSpan patch form (machine.network.kubespan before v1.13, the KubeSpanConfig document from v1.13)."
  type        = string
  default     = "v1.9"
}

variable "discovery_endpoint" {
  description = "The self-hosted discovery service every node uses, Talos and meshspan alike (`meshspan-agent discovery serve`, see examples/discovery-selfhosted)."
  type        = string
  default     = "https://discovery.example.com:3000/"
}

variable "endpoint_filters" {
  description = "Which node addresses are advertised as WireGuard endpoints (KubeSpan filters.endpoints), the same for both kinds of node."
  type        = list(string)
  default     = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
}

variable "meshspan_nodes" {
  description = "Plain-Linux nodes that join the Talos cluster's mesh: name => platform (hcloud, digitalocean, metal)."
  type = map(object({
    platform = optional(string, "hcloud")
  }))
  default = {
    hetzner-1 = {}
    hetzner-2 = {}
  }
}

variable "agent_url" {
  description = "Where meshspan nodes download meshspan-agent."
  type        = string
  default     = "https://github.com/meshspan/terraform-provider-meshspan/releases/download/v0.1.0/meshspan-agent_0.1.0_linux_amd64"
}

variable "agent_sha256" {
  description = "SHA-256 of the binary at agent_url. The default is a placeholder: set the real checksum before booting real servers."
  type        = string
  default     = "0000000000000000000000000000000000000000000000000000000000000000"
}

variable "mesh_label" {
  description = "Hetzner Cloud label (key, value \"true\") carried by every server of the mesh, Talos or meshspan; the firewall applies to them."
  type        = string
  default     = "mesh"
}
