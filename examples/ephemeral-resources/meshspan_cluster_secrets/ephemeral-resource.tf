# Secrets that never enter the state (Terraform 1.10+).

# 1. Once: generate them and store them in a secret manager through a
#    write-only argument. The ephemeral resource generates new values on every
#    run, but a write-only argument is sent only when its version changes, so
#    the stored values stay put until you bump the version (a rotation).
ephemeral "meshspan_cluster_secrets" "seed" {}

resource "aws_secretsmanager_secret" "mesh" {
  name = "meshspan/cluster"
}

resource "aws_secretsmanager_secret_version" "mesh" {
  secret_id = aws_secretsmanager_secret.mesh.id
  secret_string_wo = jsonencode({
    cluster_id     = ephemeral.meshspan_cluster_secrets.seed.cluster_id
    cluster_secret = ephemeral.meshspan_cluster_secrets.seed.cluster_secret
  })
  secret_string_wo_version = 1
}

# 2. Every run: read them back, check them, and derive the mesh prefix.
ephemeral "aws_secretsmanager_secret_version" "mesh" {
  secret_id = aws_secretsmanager_secret.mesh.id
}

ephemeral "meshspan_cluster_secrets" "this" {
  cluster_id     = jsondecode(ephemeral.aws_secretsmanager_secret_version.mesh.secret_string).cluster_id
  cluster_secret = jsondecode(ephemeral.aws_secretsmanager_secret_version.mesh.secret_string).cluster_secret
}
