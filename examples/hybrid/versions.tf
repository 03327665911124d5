terraform {
  # terraform_data needs Terraform >= 1.4 (OpenTofu >= 1.6); nothing here
  # needs ephemeral resources.
  required_version = ">= 1.5.0"

  required_providers {
    meshspan = {
      source  = "meshspan/meshspan"
      version = "~> 0.1"
    }
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "~> 1.49"
    }
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.44"
    }
  }
}

provider "hcloud" {
  token = var.hcloud_token
}

provider "digitalocean" {
  token = var.digitalocean_token
}

# The meshspan provider talks to the same two APIs for its firewalls.
provider "meshspan" {
  hcloud_token       = var.hcloud_token
  digitalocean_token = var.digitalocean_token
}
