# A bare-metal node configured over SSH with no secret in the state: ephemeral
# secrets (here from ephemeral variables, e.g. TF_VAR_* set by CI from a vault),
# an ephemeral machine config, and its bundle script run by remote-exec.
variable "cluster_id" {
  type      = string
  sensitive = true
  ephemeral = true
}

variable "cluster_secret" {
  type      = string
  sensitive = true
  ephemeral = true
}

ephemeral "meshspan_machine_config" "office_1" {
  cluster_id          = var.cluster_id
  cluster_secret      = var.cluster_secret
  node_name           = "office-1"
  platform            = "metal"
  discovery_endpoints = ["https://discovery.talos.dev/"]
  lan_bypass          = ["192.168.10.0/24"]
  agent_install       = { preinstalled = true }
}

resource "terraform_data" "office_1" {
  # Re-run when the node's settings change (not the secret: it is not
  # visible to resources).
  triggers_replace = ["office-1", "192.168.10.0/24"]

  connection {
    host = "198.51.100.20"
    user = "root"
  }

  provisioner "remote-exec" {
    inline = [ephemeral.meshspan_machine_config.office_1.bundle_script]
  }
}
