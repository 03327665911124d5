include "root" {
  path = find_in_parent_folders("root.hcl")
}

# The cluster secrets from the cluster unit, and the variables every node
# unit declares.
include "node" {
  path = find_in_parent_folders("node.hcl")
}
