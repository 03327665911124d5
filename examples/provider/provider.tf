terraform {
  required_providers {
    meshspan = {
      source = "meshspan/meshspan"
    }
  }
}

# Cluster secrets and machine configs need no credentials. The tokens are used
# only by meshspan_hcloud_firewall and meshspan_digitalocean_firewall, and
# default to HCLOUD_TOKEN and DIGITALOCEAN_TOKEN from the environment.
provider "meshspan" {}
