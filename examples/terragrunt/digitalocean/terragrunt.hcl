include "root" {
  path = find_in_parent_folders("root.hcl")
}

# Outputs of the root unit become this unit's inputs. The mocks let
# `terragrunt run --all plan` work before the cluster unit is applied.
dependency "cluster" {
  config_path = "../cluster"

  mock_outputs = {
    cluster_id     = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    cluster_secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    mesh_prefix    = "fd00::/64"
  }
  mock_outputs_allowed_terraform_commands = ["init", "validate", "plan"]
}

inputs = {
  cluster_id     = dependency.cluster.outputs.cluster_id
  cluster_secret = dependency.cluster.outputs.cluster_secret
  mesh_prefix    = dependency.cluster.outputs.mesh_prefix
  agent_url      = "https://downloads.example.com/meshspan-agent/0.1.0/linux_amd64/meshspan-agent"
  agent_sha256   = get_env("MESHSPAN_AGENT_SHA256")
}
