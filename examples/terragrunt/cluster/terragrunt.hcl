# The root unit: the cluster secrets, created once. Every other unit reads
# them through a dependency block, so they exist in exactly one state.
include "root" {
  path = find_in_parent_folders("root.hcl")
}
