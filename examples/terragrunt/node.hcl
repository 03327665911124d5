# Shared by the units that make nodes (hetzner, digitalocean, metal): the
# cluster secrets from the root unit, passed in as inputs, and the variables
# every such unit declares (node-variables.tf, generated into each unit).

# Outputs of the root unit become inputs. The mocks let
# `terragrunt run --all plan` work before the cluster unit is applied.
dependency "cluster" {
  config_path = "${get_terragrunt_dir()}/../cluster"

  mock_outputs = {
    cluster_id     = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    cluster_secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    mesh_prefix    = "fd00::/64"
  }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

generate "node_variables" {
  path      = "node_variables.tf"
  if_exists = "overwrite_terragrunt"
  contents  = file(find_in_parent_folders("node-variables.tf"))
}

inputs = {
  cluster_id     = dependency.cluster.outputs.cluster_id
  cluster_secret = dependency.cluster.outputs.cluster_secret
  mesh_prefix    = dependency.cluster.outputs.mesh_prefix
  agent_url      = get_env("MESHSPAN_AGENT_URL", "https://downloads.example.com/meshspan-agent/0.1.0/linux_amd64/meshspan-agent")
  agent_sha256   = get_env("MESHSPAN_AGENT_SHA256")
}
