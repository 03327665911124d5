# Bakes meshspan-agent into a Hetzner Cloud snapshot. Servers booted from it
# get only the boot-time user_data Terraform renders with
# agent_install = { preinstalled = true }: no download at boot.
#
#   packer init . && packer build -var agent_sha256=... .

packer {
  required_plugins {
    hcloud = {
      source  = "github.com/hetznercloud/hcloud"
      version = "~> 1"
    }
  }
}

variable "agent_version" {
  type    = string
  default = "0.1.0"
}

variable "agent_binary" {
  description = "Local path of the linux amd64 meshspan-agent to bake in."
  type        = string
  default     = "meshspan-agent"
}

variable "agent_sha256" {
  description = "Its SHA-256; the build fails if the uploaded file differs."
  type        = string
}

variable "location" {
  type    = string
  default = "hel1"
}

source "hcloud" "debian" {
  image        = "debian-12"
  location     = var.location
  server_type  = "cx22"
  ssh_username = "root"

  snapshot_name = "meshspan-agent-${var.agent_version}-{{ timestamp }}"
  snapshot_labels = {
    os             = "debian-12"
    meshspan-agent = var.agent_version
  }
}

build {
  sources = ["source.hcloud.debian"]

  provisioner "file" {
    source      = var.agent_binary
    destination = "/tmp/meshspan-agent"
  }

  provisioner "shell" {
    inline = [
      "set -eu",
      # Let the build machine's own first boot finish before wiping it.
      "cloud-init status --wait >/dev/null || true",
      "echo '${var.agent_sha256}  /tmp/meshspan-agent' | sha256sum -c -",
      "install -m 0755 -o root -g root /tmp/meshspan-agent /usr/local/bin/meshspan-agent",
      "rm -f /tmp/meshspan-agent",
      "/usr/local/bin/meshspan-agent --version",
      # The node's config, unit and identity come at boot, from user_data:
      # make sure nothing of this build machine's own boot is kept.
      "rm -rf /etc/meshspan /var/lib/meshspan",
      "cloud-init clean --logs",
      # An empty machine-id, as Debian's cloud images ship: a new one at
      # each first boot. Not "uninitialized" (cloud-init clean
      # --machine-id): that makes systemd apply its presets at first
      # boot, which enables systemd-networkd beside ifupdown and holds
      # the boot in systemd-networkd-wait-online.
      "truncate -s 0 /etc/machine-id",
    ]
  }
}
