package provider

import (
	"os"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
)

// testAccProtoV6ProviderFactories serves the provider in-process to the real
// terraform binary named by TF_ACC_TERRAFORM_PATH.
var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"meshspan": providerserver.NewProtocol6WithError(New("test")()),
}

// testAccPreCheck fails (never skips) when the acceptance environment is
// incomplete: CI must run these tests.
func testAccPreCheck(t *testing.T) {
	t.Helper()
	path := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if path == "" {
		t.Fatal("TF_ACC_TERRAFORM_PATH is not set; run acceptance tests through `make testacc` (it points at /usr/local/bin/terraform)")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("TF_ACC_TERRAFORM_PATH=%s: %v", path, err)
	}
}
