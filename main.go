// Command terraform-provider-meshspan serves the meshspan Terraform provider.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/meshspan/terraform-provider-meshspan/provider"
)

// version is stamped by goreleaser.
var version = "dev"

//go:generate go run github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs generate --provider-name meshspan

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run the provider with support for debuggers like delve")
	flag.Parse()

	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.terraform.io/meshspan/meshspan",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
