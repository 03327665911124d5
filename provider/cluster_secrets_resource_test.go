package provider

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
)

func TestParseSecretsImportID(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	s, err := parseSecretsImportID(testClusterID+":"+testClusterSecret, getenv)
	if err != nil || s.ID != testClusterID || s.Secret != testClusterSecret {
		t.Fatalf("id:secret = %+v, %v", s, err)
	}
	env[envClusterID], env[envSecret] = testClusterID, testClusterSecret
	if s, err := parseSecretsImportID("env", getenv); err != nil || s.ID != testClusterID || s.Secret != testClusterSecret {
		t.Fatalf("env = %+v, %v", s, err)
	}
	for _, tc := range []struct{ id, want string }{
		{"just-one-value", `use "<cluster_id>:<cluster_secret>", or "env"`},
		{"abc:" + testClusterSecret, "cluster_id must be 32 bytes"},
		{testClusterID + ":abc", "cluster_secret must be 32 bytes in standard padded base64"},
		{testClusterID + ":" + strings.ReplaceAll(testClusterID, "_", "/"), "cluster_secret must be 32 bytes in standard"}, // URL-safe alphabet is fine for IDs only
	} {
		if _, err := parseSecretsImportID(tc.id, getenv); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("import %q: %v, want %q", tc.id, err, tc.want)
		}
	}
	// A trailing line break (from a file, echo or $(cat ...)) would derive
	// another mesh prefix: refused, in either variable.
	for _, tail := range []string{"\n", "\r\n", " "} {
		env[envClusterID], env[envSecret] = testClusterID+tail, testClusterSecret
		if _, err := parseSecretsImportID("env", getenv); err == nil || !strings.Contains(err.Error(), "cluster_id has whitespace") {
			t.Errorf("env cluster id with %q: %v", tail, err)
		}
		env[envClusterID], env[envSecret] = testClusterID, testClusterSecret+tail
		if _, err := parseSecretsImportID("env", getenv); err == nil || !strings.Contains(err.Error(), "cluster_secret has whitespace") {
			t.Errorf("env cluster secret with %q: %v", tail, err)
		}
	}
	delete(env, envSecret)
	if _, err := parseSecretsImportID("env", getenv); err == nil || !strings.Contains(err.Error(), "MESHSPAN_CLUSTER_SECRET") {
		t.Errorf("env without the secret: %v", err)
	}
}

// checkSecrets checks the Talos encoding and the derived attributes.
func checkSecrets(name string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		a := s.RootModule().Resources[name].Primary.Attributes
		// Talos IDs before 1.14 used the URL-safe alphabet; secrets are always std.
		id, err := base64.StdEncoding.DecodeString(a["cluster_id"])
		if err != nil {
			id, err = base64.URLEncoding.DecodeString(a["cluster_id"])
		}
		if err != nil || len(id) != 32 || len(a["cluster_id"]) != 44 {
			return fmt.Errorf("cluster_id = %q is not 32 bytes of padded base64", a["cluster_id"])
		}
		if b, err := base64.StdEncoding.DecodeString(a["cluster_secret"]); err != nil || len(b) != 32 || len(a["cluster_secret"]) != 44 {
			return fmt.Errorf("cluster_secret is not 32 bytes of padded std base64")
		}
		if a["cluster_id"] == a["cluster_secret"] {
			return fmt.Errorf("cluster_id equals cluster_secret")
		}
		if want := clusterkey.MeshPrefix(a["cluster_id"]).String(); a["mesh_prefix"] != want {
			return fmt.Errorf("mesh_prefix = %q, want %q", a["mesh_prefix"], want)
		}
		if want := secretsID(a["cluster_id"]); a["id"] != want {
			return fmt.Errorf("id = %q, want %q", a["id"], want)
		}
		return nil
	}
}

func TestAccClusterSecrets(t *testing.T) {
	const name = "meshspan_cluster_secrets.this"
	var first string
	remember := func(s *terraform.State) error {
		first = s.RootModule().Resources[name].Primary.Attributes["cluster_secret"]
		return nil
	}
	rotated := func(s *terraform.State) error {
		if now := s.RootModule().Resources[name].Primary.Attributes["cluster_secret"]; now == first || first == "" {
			return fmt.Errorf("changing keepers did not rotate the secret")
		}
		return nil
	}
	unchanged := func(s *terraform.State) error {
		if now := s.RootModule().Resources[name].Primary.Attributes["cluster_secret"]; now != first {
			return fmt.Errorf("the secret changed without a rotation")
		}
		return nil
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: `resource "meshspan_cluster_secrets" "this" {}`,
				Check:  resource.ComposeTestCheckFunc(checkSecrets(name), remember),
			},
			{
				// Re-plan: nothing changes.
				Config: `resource "meshspan_cluster_secrets" "this" {}`,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: unchanged,
			},
			{
				// Import by "<cluster_id>:<cluster_secret>".
				ResourceName:      name,
				ImportState:       true,
				ImportStateVerify: true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					a := s.RootModule().Resources[name].Primary.Attributes
					return a["cluster_id"] + ":" + a["cluster_secret"], nil
				},
			},
			{
				// Adding keepers to secrets without any adopts them: no rotation.
				Config: `resource "meshspan_cluster_secrets" "this" { keepers = { rotation = "1" } }`,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(name, plancheck.ResourceActionUpdate)},
				},
				Check: unchanged,
			},
			{
				// Changing a keeper is a visible replacement: new secrets.
				Config: `resource "meshspan_cluster_secrets" "this" { keepers = { rotation = "2" } }`,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(name, plancheck.ResourceActionReplace)},
				},
				Check: resource.ComposeTestCheckFunc(checkSecrets(name), rotated),
			},
		},
	})
}

func TestAccClusterSecretsImportFromEnv(t *testing.T) {
	t.Setenv(envClusterID, testClusterID)
	t.Setenv(envSecret, testClusterSecret)
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: `
import {
  to = meshspan_cluster_secrets.talos
  id = "env"
}
resource "meshspan_cluster_secrets" "talos" {}`,
				Check: resource.ComposeTestCheckFunc(
					checkSecrets("meshspan_cluster_secrets.talos"),
					resource.TestCheckResourceAttr("meshspan_cluster_secrets.talos", "cluster_id", testClusterID),
					resource.TestCheckResourceAttr("meshspan_cluster_secrets.talos", "cluster_secret", testClusterSecret),
					resource.TestCheckResourceAttr("meshspan_cluster_secrets.talos", "mesh_prefix", "fd7f:175a:b97c:5602::/64"),
				),
			},
			{
				Config: `
import {
  to = meshspan_cluster_secrets.bad
  id = "not-a-secret"
}
resource "meshspan_cluster_secrets" "bad" {}`,
				ExpectError: regexp.MustCompile(`Invalid import ID for meshspan_cluster_secrets`),
			},
		},
	})
}
