package hcloud_test

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/acctest"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
)

func hcloudFakeID(r interface{ Firewalls() []hcloudfake.Firewall }) func() string {
	return func() string {
		if fws := r.Firewalls(); len(fws) == 1 {
			return fmt.Sprint(fws[0].ID)
		}
		return "no-single-firewall"
	}
}

func TestAccHcloudFirewall_emptySetsSettle(t *testing.T) {
	r, _ := startHcloudFake(t)
	empty := `
variable "servers" {
  type    = list(number)
  default = []
}
resource "meshspan_hcloud_firewall" "mesh" {
  name            = "mesh"
  labels          = {}
  extra_rules     = []
  server_ids      = var.servers
  label_selectors = []
}`
	omitted := `
resource "meshspan_hcloud_firewall" "mesh" {
  name = "mesh"
}`
	nulls := `
resource "meshspan_hcloud_firewall" "mesh" {
  name            = "mesh"
  server_ids      = null
  label_selectors = null
}`
	noChange := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: append([]resource.TestStep{
			{Config: empty, Check: checkFakeAttachments(r, nil)},
			{Config: omitted, ConfigPlanChecks: noChange},
			{Config: nulls, ConfigPlanChecks: noChange},
			{Config: empty, ConfigPlanChecks: noChange},
		}, append(acctest.Reimport(hcloudResName, "", empty, hcloudFakeID(r)),
			resource.TestStep{Config: empty, ConfigPlanChecks: noChange},
			resource.TestStep{Config: omitted, ConfigPlanChecks: noChange})...),
	})
}

func TestAccHcloudFirewall_importedSpellingNoDiff(t *testing.T) {
	r, _ := startHcloudFake(t)
	cfg := `
resource "meshspan_hcloud_firewall" "mesh" {
  name = "mesh"
  extra_rules = [
    { direction = "in", protocol = "tcp", port = "6443", source_ips = ["198.51.100.7", "2001:DB8::/32"] },
    { direction = "in", protocol = "tcp", port = "any", source_ips = ["::0/0"] },
    { direction = "in", protocol = "udp", port = "1-65535", source_ips = ["203.0.113.0/24"] },
    { direction = "in", protocol = "tcp", source_ips = ["192.0.2.0/24"] },
    { direction = "out", protocol = "tcp", port = "443", destination_ips = ["2001:0db8:0:0::1"] },
  ]
}`
	noChange := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: append([]resource.TestStep{
			{Config: cfg},
		}, append(acctest.Reimport(hcloudResName, "", cfg, hcloudFakeID(r)),
			resource.TestStep{Config: cfg, ConfigPlanChecks: noChange})...),
	})
}

// Values the API would refuse are errors at plan that name the attribute
// and the fix; nothing reaches the API.
func TestAccHcloudFirewall_planValidation(t *testing.T) {
	r, _ := startHcloudFake(t)
	hc := func(body string) string {
		return "resource \"meshspan_hcloud_firewall\" \"mesh\" {\n  name = \"a\"\n" + body + "\n}"
	}
	step := func(cfg, re string) resource.TestStep {
		return resource.TestStep{Config: cfg, PlanOnly: true, ExpectError: regexp.MustCompile(re)}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		Steps: []resource.TestStep{
			step(hc(`extra_rules = [{ direction = "in", protocol = "tcp", port = "+80", source_ips = ["10.0.0.0/8"] }]`), `(?s)extra_rules.*"\+80" is not a port`),
			step(hc(`extra_rules = [{ direction = "in", protocol = "tcp", port = "+1-+65535", source_ips = ["10.0.0.0/8"] }]`), `(?s)extra_rules.*is not a port or range`),
			step(hc(`labels = { "hetzner.cloud/owner" = "me" }`), `(?s)Invalid label.*"hetzner.cloud/owner" uses the prefix`),
			step(hc(`labels = { team = "a\nb" }`), `(?s)Invalid label.*label value "a\\nb" is invalid`),
			step(hc(`label_selectors = ["role=worker,,env=prod"]`), `(?s)Invalid label selector.*requirement is empty`),
			step(hc(`label_selectors = ["env in prod"]`), `(?s)Invalid label selector.*parentheses`),
			step(hc(`label_selectors = ["role=work er"]`), `(?s)Invalid label selector.*label value`),
		},
	})
	if n := len(r.Requests()); n != 0 {
		t.Errorf("invalid configs reached the Hetzner stand-in %d times", n)
	}
}
