# With MESHSPAN_CLUSTER_ID and MESHSPAN_CLUSTER_SECRET exported, an import block
# adopts an existing cluster's secrets without writing them down.
import {
  to = meshspan_cluster_secrets.this
  id = "env"
}
