//go:build tools

// Package tools pins the versions of build tools the GNUmakefile runs with
// `go run`, so CI installs exactly these from the module proxy.
package tools

import (
	_ "github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs"
	_ "honnef.co/go/tools/cmd/staticcheck"
)
