# Bakes meshspan-agent into a local Debian disk image with Packer's qemu
# builder, the way hcloud/ bakes it into a Hetzner snapshot. No `packer {}`
# block: the qemu builder is built into Packer (Debian's packer 1.6.6
# included), so there is nothing to `packer init`.
#
# The build machine gets no user-mode network: it is plugged into an
# existing tap device and Packer reaches its sshd at ssh_host directly.
# Its source disk is a raw root file system booted with an external kernel
# (like the tests' stock Debian image); the seed disk (NoCloud) gives it its
# static address and the build's SSH key.
#
#   packer build -var source_image=... -var seed_image=... -var tap=... ... .

variable "source_image" {
  description = "Raw disk of the stock Debian image to start from (copied, never changed)."
  type        = string
}

variable "kernel" {
  type    = string
  default = "/vmlinuz"
}

variable "initrd" {
  type    = string
  default = "/initrd.img"
}

variable "seed_image" {
  description = "NoCloud seed (CIDATA) with the build's address and SSH key."
  type        = string
}

variable "tap" {
  description = "Tap device the build machine's NIC uses (already on a bridge)."
  type        = string
}

variable "mac" {
  type    = string
  default = "52:54:00:12:34:50"
}

variable "ssh_host" {
  description = "The build machine's address, as the seed sets it."
  type        = string
}

variable "ssh_private_key_file" {
  type = string
}

variable "output_directory" {
  type    = string
  default = "output"
}

variable "console_log" {
  type    = string
  default = "/dev/null"
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

source "qemu" "debian" {
  disk_image       = true
  iso_url          = var.source_image
  iso_checksum     = "none"
  format           = "raw"
  disk_size        = "3072M"
  output_directory = var.output_directory
  vm_name          = "meshspan-agent.img"

  # Emulation only: no KVM on the build hosts this runs on.
  accelerator  = "tcg"
  machine_type = "q35"
  memory       = 1024
  headless     = true

  # The lab's network, not QEMU's user-mode NAT: the NIC is the tap and
  # Packer connects to the machine's own address.
  communicator         = "ssh"
  ssh_host             = var.ssh_host
  ssh_port             = 22
  skip_nat_mapping     = true
  ssh_username         = "root"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"

  shutdown_command = "shutdown -P now"
  shutdown_timeout = "5m"

  # qemuargs replace Packer's defaults of the same flag: the disk and the
  # NIC are given here in full.
  qemuargs = [
    ["-cpu", "max"],
    ["-kernel", var.kernel],
    ["-initrd", var.initrd],
    ["-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1"],
    ["-drive", "file=${var.output_directory}/meshspan-agent.img,if=virtio,format=raw"],
    ["-drive", "file=${var.seed_image},if=virtio,format=raw,readonly=on"],
    ["-netdev", "tap,id=n0,ifname=${var.tap},script=no,downscript=no"],
    ["-device", "virtio-net-pci,netdev=n0,mac=${var.mac}"],
    ["-device", "virtio-rng-pci"],
    ["-serial", "file:${var.console_log}"],
  ]
}

build {
  sources = ["source.qemu.debian"]

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
      # keep nothing of this build machine's own boot, nor its SSH key.
      "rm -rf /etc/meshspan /var/lib/meshspan /root/.ssh/authorized_keys",
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
