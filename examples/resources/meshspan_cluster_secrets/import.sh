# Bring in an existing cluster's values, e.g. a Talos cluster's cluster.id and
# cluster.secret (from its secrets bundle or machine config), so Talos KubeSpan
# nodes and meshspan nodes share one mesh.

# Preferred: read them from the environment, keeping the secret out of shell
# history and out of the import ID that Terraform prints.
export MESHSPAN_CLUSTER_ID="$(yq .cluster.id secrets.yaml)"
export MESHSPAN_CLUSTER_SECRET="$(yq .cluster.secret secrets.yaml)"
terraform import meshspan_cluster_secrets.this env

# Or give both in the ID, separated by a colon: <cluster_id>:<cluster_secret>
terraform import meshspan_cluster_secrets.this "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo=:$MESHSPAN_CLUSTER_SECRET"
