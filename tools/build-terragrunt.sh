#!/bin/sh
# build-terragrunt.sh VERSION OUT builds Terragrunt into OUT from the Go
# module proxy. `go install module@version` is refused (the proxy does not
# list its versions and its go.mod has replace directives), so it is built
# as a tool of its own module, tools/terragrunt/go.mod, which pins VERSION
# and repeats terragrunt's replace directives.
set -eu
version=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
pinned=$(cd "$here/terragrunt" && go list -m -f '{{.Version}}' github.com/gruntwork-io/terragrunt)
if [ "$pinned" != "$version" ]; then
	echo "build-terragrunt: tools/terragrunt/go.mod pins $pinned, not $version: change both together" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
(cd "$here/terragrunt" && CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X github.com/gruntwork-io/go-commons/version.Version=$version" \
	-o "$out.tmp" github.com/gruntwork-io/terragrunt)
mv -f "$out.tmp" "$out"
"$out" --version
