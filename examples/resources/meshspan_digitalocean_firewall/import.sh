# Import an existing firewall by its UUID (`doctl compute firewall list` shows it).
terraform import meshspan_digitalocean_firewall.mesh 0d7d9d4c-5a43-4c6e-9a3c-0f2b8e1d6a11
