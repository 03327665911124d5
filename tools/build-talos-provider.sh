#!/bin/sh
# build-talos-provider.sh OUT builds github.com/siderolabs/terraform-provider-talos
# at the version pinned in tools/talos-provider/go.mod into OUT. `go install
# module@version` is refused (the proxy does not list its versions), so it is
# built from that tools module. Only the Go module proxy is needed. The
# talos-hybrid journey test uses it offline through dev_overrides.
set -eu
out=$1
cd "$(dirname "$0")/talos-provider"
mkdir -p "$(dirname "$out")"
CGO_ENABLED=0 go build -trimpath -o "$out.tmp" github.com/siderolabs/terraform-provider-talos
mv -f "$out.tmp" "$out"
