variable "hcloud_token" {
  description = "Hetzner Cloud API token (read and write)."
  type        = string
  sensitive   = true
}

variable "digitalocean_token" {
  description = "DigitalOcean API token with write scope."
  type        = string
  sensitive   = true
}

variable "cluster_name" {
  description = "Prefix of every cloud resource name."
  type        = string
  default     = "mesh"
}

variable "bare_metal" {
  description = <<-EOT
    The machines you already run (the "existing 3-node cluster" of the guide):
    name => public address, SSH user and private key file. The bundle runs
    over SSH as root; the hosts need systemd and curl or wget.
  EOT
  type = map(object({
    address     = string
    user        = optional(string, "root")
    private_key = string
  }))
  default = {}
}

variable "rack_lan" {
  description = "The bare metal rack's private network: members there talk directly, off the mesh (lan_bypass). Empty: none."
  type        = list(string)
  default     = []
}

variable "hcloud_workers" {
  description = "Hetzner Cloud servers to add: name => server type and location."
  type = map(object({
    server_type = optional(string, "cx22")
    location    = optional(string, "hel1")
  }))
  default = {
    hetzner-1 = {}
  }
}

variable "digitalocean_workers" {
  description = "DigitalOcean droplets to add: name => size and region."
  type = map(object({
    size   = optional(string, "s-2vcpu-4gb")
    region = optional(string, "fra1")
  }))
  default = {
    do-1 = {}
  }
}

variable "ssh_key_public" {
  description = "SSH public key put on the cloud servers (for you; the mesh needs no SSH)."
  type        = string
}

variable "admin_cidrs" {
  description = "Where management traffic (Kubernetes API 6443, node API 50000) may come from, e.g. your Tailscale range."
  type        = list(string)
  default     = ["100.64.0.0/10"]
}

variable "discovery_endpoint" {
  description = "Discovery service. The public Talos service works (blobs are end-to-end encrypted); see ../discovery-selfhosted to run your own."
  type        = string
  default     = "https://discovery.talos.dev/"
}

variable "agent_version" {
  description = "meshspan-agent release to install."
  type        = string
  default     = "0.1.0"
}

variable "agent_sha256" {
  description = "SHA-256 of the linux_amd64 agent binary of that release (from its checksums file)."
  type        = string
}
