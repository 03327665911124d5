package provider

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
)

// reimport forgets the resource (a removed block) and imports it again by
// the ID idOf returns, so the following steps plan against imported state.
func reimport(resName, providerBlock, cfg string, idOf func() string) []resource.TestStep {
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

func hcloudFakeID(r interface{ Firewalls() []hcloudfake.Firewall }) func() string {
	return func() string {
		if fws := r.Firewalls(); len(fws) == 1 {
			return fmt.Sprint(fws[0].ID)
		}
		return "no-single-firewall"
	}
}

func (s *doStandIn) idOf(name string) func() string {
	return func() string {
		fw, err := s.byName(name)
		if err != nil {
			return err.Error()
		}
		return fw.ID
	}
}

func (s *doStandIn) providerBlock() string {
	return fmt.Sprintf("provider \"meshspan\" {\n  digitalocean_token    = %q\n  digitalocean_endpoint = %q\n}\n", doTestToken, s.url)
}

// P1: `[]`, null and an omitted attribute mean the same, and one apply
// settles them (the framework checks that the plan after each apply is
// empty). The variable's default stands for the usual `default = []`.
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
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: append([]resource.TestStep{
			{Config: empty, Check: checkFakeAttachments(r, nil)},
			{Config: omitted, ConfigPlanChecks: noChange},
			{Config: nulls, ConfigPlanChecks: noChange},
			{Config: empty, ConfigPlanChecks: noChange},
		}, append(reimport(hcloudResName, "", empty, hcloudFakeID(r)),
			resource.TestStep{Config: empty, ConfigPlanChecks: noChange},
			resource.TestStep{Config: omitted, ConfigPlanChecks: noChange})...),
	})
}

func TestAccDigitalOceanFirewall_emptySetsSettle(t *testing.T) {
	s := startDOStandIn(t)
	empty := s.config(`
  name                = "mesh-fw"
  droplet_ids         = []
  tags                = []
  extra_inbound_rules = []`)
	omitted := s.config(`  name = "mesh-fw"`)
	noChange := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: append([]resource.TestStep{
			{Config: empty, Check: s.checkStored("mesh-fw", []doRule{wireGuardDORule(51820)}, doAllowAllOutbound(), nil, nil)},
			{Config: omitted, ConfigPlanChecks: noChange},
			{Config: empty, ConfigPlanChecks: noChange},
		}, append(reimport(doTestRes, s.providerBlock(), empty, s.idOf("mesh-fw")),
			resource.TestStep{Config: empty, ConfigPlanChecks: noChange})...),
	})
}

// P2: a rule's action is read and compared: a rule switched to deny outside
// Terraform is drift, and `action = "deny"` is sent.
func TestAccDigitalOceanFirewall_ruleAction(t *testing.T) {
	s := startDOStandIn(t)
	allow := s.config(`
  name = "act-fw"
  extra_inbound_rules = [{ protocol = "tcp", port_range = "22", source_addresses = ["100.64.0.0/10"] }]`)
	deny := s.config(`
  name = "act-fw"
  extra_inbound_rules = [{ protocol = "tcp", port_range = "22", source_addresses = ["100.64.0.0/10"], action = "deny" }]`)
	// flip switches every inbound rule on port p to action a, as someone in
	// the console would.
	flip := func(port string, a godo.FirewallRuleAction) func() {
		return func() {
			fw, err := s.byName("act-fw")
			if err != nil {
				t.Fatal(err)
			}
			c := s.godo()
			got, _, err := c.Firewalls.Get(context.Background(), fw.ID)
			if err != nil {
				t.Fatal(err)
			}
			req := &godo.FirewallRequest{Name: got.Name, InboundRules: got.InboundRules, OutboundRules: got.OutboundRules, DropletIDs: got.DropletIDs, Tags: got.Tags}
			// The API returns all ports as "0" but refuses "0" for tcp/udp.
			for i, r := range req.InboundRules {
				if r.PortRange == "0" && r.Protocol != "icmp" {
					req.InboundRules[i].PortRange = "all"
				}
			}
			for i, r := range req.OutboundRules {
				if r.PortRange == "0" && r.Protocol != "icmp" {
					req.OutboundRules[i].PortRange = "all"
				}
			}
			for i := range req.InboundRules {
				if req.InboundRules[i].PortRange == port {
					req.InboundRules[i].Action = a
				}
			}
			if _, _, err := c.Firewalls.Update(context.Background(), fw.ID, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	actionOf := func(port, want string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			fw, err := s.byName("act-fw")
			if err != nil {
				return err
			}
			for _, r := range fw.InboundRules {
				if r.Ports == port {
					if r.Action != want {
						return fmt.Errorf("rule on port %s has action %q in the API, want %q", port, r.Action, want)
					}
					return nil
				}
			}
			return fmt.Errorf("no inbound rule on port %s", port)
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: append([]resource.TestStep{
			{Config: allow, Check: actionOf("22", "allow")},
			{PreConfig: flip("22", godo.FirewallRuleActionDeny), Config: allow, PlanOnly: true, ExpectNonEmptyPlan: true},
			{Config: allow, Check: actionOf("22", "allow")},
			{PreConfig: flip("51820", godo.FirewallRuleActionDeny), Config: allow, PlanOnly: true, ExpectNonEmptyPlan: true},
			{Config: allow, Check: actionOf("51820", "allow")},
			{Config: deny, Check: actionOf("22", "deny")},
		}, append(reimport(doTestRes, s.providerBlock(), deny, s.idOf("act-fw")),
			resource.TestStep{Config: deny, ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}})...),
	})
}

// P3: rules spelled differently from the API's canonical form cause no
// diff, after import too.
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
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: append([]resource.TestStep{
			{Config: cfg},
		}, append(reimport(hcloudResName, "", cfg, hcloudFakeID(r)),
			resource.TestStep{Config: cfg, ConfigPlanChecks: noChange})...),
	})
}

func TestAccDigitalOceanFirewall_importedSpellingNoDiff(t *testing.T) {
	s := startDOStandIn(t)
	cfg := s.config(`
  name = "spell-fw"
  extra_inbound_rules = [
    { protocol = "tcp", port_range = "1-65535", source_addresses = ["2001:DB8::/32", "198.51.100.7"] },
    { protocol = "udp", port_range = "all", source_addresses = ["::0/0"] },
  ]`)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: append([]resource.TestStep{
			{Config: cfg},
		}, append(reimport(doTestRes, s.providerBlock(), cfg, s.idOf("spell-fw")),
			resource.TestStep{Config: cfg, ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}})...),
	})
}

// Values the APIs would refuse (or, worse, accept) are errors at plan that
// name the attribute and the fix; nothing reaches the API.
func TestAccCloudFirewalls_planValidation(t *testing.T) {
	r, _ := startHcloudFake(t)
	s := startDOStandIn(t)
	hc := func(body string) string {
		return "resource \"meshspan_hcloud_firewall\" \"mesh\" {\n  name = \"a\"\n" + body + "\n}"
	}
	step := func(cfg, re string) resource.TestStep {
		return resource.TestStep{Config: cfg, PlanOnly: true, ExpectError: regexp.MustCompile(re)}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			step(hc(`extra_rules = [{ direction = "in", protocol = "tcp", port = "+80", source_ips = ["10.0.0.0/8"] }]`), `(?s)extra_rules.*"\+80" is not a port`),
			step(hc(`extra_rules = [{ direction = "in", protocol = "tcp", port = "+1-+65535", source_ips = ["10.0.0.0/8"] }]`), `(?s)extra_rules.*is not a port or range`),
			step(hc(`labels = { "hetzner.cloud/owner" = "me" }`), `(?s)Invalid label.*"hetzner.cloud/owner" uses the prefix`),
			step(hc(`labels = { team = "a\nb" }`), `(?s)Invalid label.*label value "a\\nb" is invalid`),
			step(hc(`label_selectors = ["role=worker,,env=prod"]`), `(?s)Invalid label selector.*requirement is empty`),
			step(hc(`label_selectors = ["env in prod"]`), `(?s)Invalid label selector.*parentheses`),
			step(hc(`label_selectors = ["role=work er"]`), `(?s)Invalid label selector.*label value`),
			step(s.config(`  name = "v1"
  extra_inbound_rules = [{ protocol = "tcp", port_range = "+24", source_addresses = ["10.0.0.0/8"] }]`), `(?s)extra_inbound_rules.*"\+24" is not a port`),
		},
	})
	if n := len(r.Requests()); n != 0 {
		t.Errorf("invalid configs reached the Hetzner stand-in %d times", n)
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("invalid configs reached the DigitalOcean stand-in %d times", n)
	}
}
