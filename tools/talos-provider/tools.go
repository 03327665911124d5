//go:build tools

// Package tools pins github.com/siderolabs/terraform-provider-talos, built by
// tools/build-talos-provider.sh for the talos-hybrid journey test.
package tools

import _ "github.com/siderolabs/terraform-provider-talos"
