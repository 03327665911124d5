# Import an existing firewall by its numeric ID (`hcloud firewall list` shows it).
terraform import meshspan_hcloud_firewall.mesh 1103544
