variable "hosts" {
  description = "name => public address of machines reachable over SSH as root."
  type        = map(string)
  default     = { n1 = "203.0.113.11", n2 = "203.0.113.12" }
}

data "meshspan_machine_config" "node" {
  for_each = var.hosts

  cluster_id          = var.cluster_id
  cluster_secret      = var.cluster_secret
  node_name           = each.key
  platform            = "metal"
  discovery_endpoints = [var.discovery_endpoint]
  listen_port         = var.listen_port
  firewall            = local.host_firewall
  agent_install       = { url = var.agent_url, sha256 = var.agent_sha256 }
}

resource "terraform_data" "bundle" {
  for_each = var.hosts

  triggers_replace = [sha256(data.meshspan_machine_config.node[each.key].machine_config)]

  connection {
    host = each.value
    user = "root"
  }

  provisioner "remote-exec" {
    inline = [data.meshspan_machine_config.node[each.key].bundle_script]
  }
}
