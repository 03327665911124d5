package provider

import (
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/echoprovider"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// The echo provider copies ephemeral values into a test resource's state,
// the only way to observe them.
func echoFactories() map[string]func() (tfprotov6.ProviderServer, error) {
	f := map[string]func() (tfprotov6.ProviderServer, error){"echo": echoprovider.NewProviderServer()}
	for k, v := range testAccProtoV6ProviderFactories {
		f[k] = v
	}
	return f
}

func TestAccClusterSecretsEphemeral(t *testing.T) {
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: echoFactories(),
		Steps: []resource.TestStep{
			{
				Config: `
ephemeral "meshspan_cluster_secrets" "this" {
  cluster_id = "` + testClusterID + `"
}
provider "echo" {
  data = ephemeral.meshspan_cluster_secrets.this
}
resource "echo" "test3" {}`,
				ExpectError: regexp.MustCompile(`cluster_id is set but cluster_secret is not`),
			},
			{
				Config: `
ephemeral "meshspan_cluster_secrets" "this" {
  cluster_id     = "` + testClusterID + `"
  cluster_secret = "short"
}
provider "echo" {
  data = ephemeral.meshspan_cluster_secrets.this
}
resource "echo" "test4" {}`,
				ExpectError: regexp.MustCompile(`cluster_secret must be 32 bytes`),
			},
			{
				// Supplied values pass through, with the mesh prefix added.
				Config: `
ephemeral "meshspan_cluster_secrets" "this" {
  cluster_id     = "` + testClusterID + `"
  cluster_secret = "` + testClusterSecret + `"
}
provider "echo" {
  data = ephemeral.meshspan_cluster_secrets.this
}
resource "echo" "test1" {}`,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("echo.test1", tfjsonpath.New("data").AtMapKey("cluster_id"), knownvalue.StringExact(testClusterID)),
					statecheck.ExpectKnownValue("echo.test1", tfjsonpath.New("data").AtMapKey("cluster_secret"), knownvalue.StringExact(testClusterSecret)),
					statecheck.ExpectKnownValue("echo.test1", tfjsonpath.New("data").AtMapKey("mesh_prefix"), knownvalue.StringExact("fd7f:175a:b97c:5602::/64")),
					statecheck.ExpectKnownValue("echo.test1", tfjsonpath.New("data").AtMapKey("generated"), knownvalue.Bool(false)),
				},
			},
			{
				// Nothing supplied: generated, Talos encoding.
				Config: `
ephemeral "meshspan_cluster_secrets" "this" {}
provider "echo" {
  data = ephemeral.meshspan_cluster_secrets.this
}
resource "echo" "test2" {}`,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("echo.test2", tfjsonpath.New("data").AtMapKey("cluster_secret"), knownvalue.StringRegexp(regexp.MustCompile(`^[A-Za-z0-9+/]{43}=$`))),
					statecheck.ExpectKnownValue("echo.test2", tfjsonpath.New("data").AtMapKey("generated"), knownvalue.Bool(true)),
				},
			},
		},
	})
}
