// Package acctest holds what every acceptance test of the provider needs:
// the provider served in-process to the real terraform binary, and the
// check that the acceptance environment is complete.
package acctest

import (
	"fmt"
	"os"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/meshspan/terraform-provider-meshspan/provider"
)

// ProviderFactories serves the provider in-process to the real terraform
// binary named by TF_ACC_TERRAFORM_PATH.
var ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"meshspan": providerserver.NewProtocol6WithError(provider.New("test")()),
}

// PreCheck fails (never skips) when the acceptance environment is
// incomplete: CI must run these tests.
func PreCheck(t *testing.T) {
	t.Helper()
	path := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if path == "" {
		t.Fatal("TF_ACC_TERRAFORM_PATH is not set; run acceptance tests through `make testacc` (it points at /usr/local/bin/terraform)")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("TF_ACC_TERRAFORM_PATH=%s: %v", path, err)
	}
}

// Reimport forgets a resource (a removed block) and imports it again by
// the ID idOf returns, so the steps that follow plan against imported
// state. providerBlock is written beside the removed block (may be empty).
func Reimport(resName, providerBlock, cfg string, idOf func() string) []resource.TestStep {
	forget := fmt.Sprintf(`%s
removed {
  from = %s
  lifecycle {
    destroy = false
  }
}`, providerBlock, resName)
	return []resource.TestStep{
		{Config: forget},
		{Config: cfg, ResourceName: resName, ImportState: true, ImportStatePersist: true,
			ImportStateIdFunc: func(*terraform.State) (string, error) { return idOf(), nil }},
	}
}
