#!/bin/sh
# build-tofu.sh VERSION OUT builds OpenTofu VERSION into OUT from its Go
# module source. `go install ...@VERSION` refuses it (its go.mod replaces
# hcl with OpenTofu's fork), so the source is copied and built as the main
# module, replace directive included. Only the Go module proxy is needed.
set -eu
version=$1
out=$2
dir=$(go mod download -json "github.com/opentofu/opentofu@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ]; then
	echo "build-tofu: could not download github.com/opentofu/opentofu@$version from the Go module proxy" >&2
	exit 1
fi
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -R "$dir/." "$src"
chmod -R u+w "$src" # the module cache is read-only
mkdir -p "$(dirname "$out")"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" ./cmd/tofu)
mv -f "$out.tmp" "$out"
"$out" version
