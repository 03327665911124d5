# Shared by every unit: local state per unit (swap in your remote backend,
# e.g. s3 with encrypt = true, or pg as in the Supabase setup), and the
# meshspan provider requirement.
remote_state {
  backend = "local"
  generate = {
    path      = "backend.tf"
    if_exists = "overwrite_terragrunt"
  }
  config = {
    path = "${get_parent_terragrunt_dir()}/.state/${path_relative_to_include()}/terraform.tfstate"
  }
}

generate "meshspan_provider" {
  path      = "meshspan_provider.tf"
  if_exists = "overwrite_terragrunt"
  contents  = <<-EOF
    terraform {
      required_providers {
        meshspan = {
          source  = "meshspan/meshspan"
          version = "~> 0.1"
        }
      }
    }
  EOF
}

inputs = {
  discovery_endpoint = "https://discovery.talos.dev/"
  listen_port        = 51820
  admin_cidrs        = ["100.64.0.0/10"]
}
