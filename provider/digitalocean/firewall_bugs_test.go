package digitalocean_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/acctest"
)

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
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: append([]resource.TestStep{
			{Config: empty, Check: s.checkStored("mesh-fw", []doRule{wireGuardDORule(51820)}, doAllowAllOutbound(), nil, nil)},
			{Config: omitted, ConfigPlanChecks: noChange},
			{Config: empty, ConfigPlanChecks: noChange},
		}, append(acctest.Reimport(doTestRes, s.providerBlock(), empty, s.idOf("mesh-fw")),
			resource.TestStep{Config: empty, ConfigPlanChecks: noChange})...),
	})
}

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
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: append([]resource.TestStep{
			{Config: allow, Check: actionOf("22", "allow")},
			{PreConfig: flip("22", godo.FirewallRuleActionDeny), Config: allow, PlanOnly: true, ExpectNonEmptyPlan: true},
			{Config: allow, Check: actionOf("22", "allow")},
			{PreConfig: flip("51820", godo.FirewallRuleActionDeny), Config: allow, PlanOnly: true, ExpectNonEmptyPlan: true},
			{Config: allow, Check: actionOf("51820", "allow")},
			{Config: deny, Check: actionOf("22", "deny")},
		}, append(acctest.Reimport(doTestRes, s.providerBlock(), deny, s.idOf("act-fw")),
			resource.TestStep{Config: deny, ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}})...),
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
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: append([]resource.TestStep{
			{Config: cfg},
		}, append(acctest.Reimport(doTestRes, s.providerBlock(), cfg, s.idOf("spell-fw")),
			resource.TestStep{Config: cfg, ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}})...),
	})
}

// Values the API would refuse (or, worse, accept) are errors at plan that
// name the attribute and the fix; nothing reaches the API.
func TestAccDigitalOceanFirewall_planValidation(t *testing.T) {
	s := startDOStandIn(t)
	step := func(cfg, re string) resource.TestStep {
		return resource.TestStep{Config: cfg, PlanOnly: true, ExpectError: regexp.MustCompile(re)}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		Steps: []resource.TestStep{
			step(s.config(`  name = "v1"
  extra_inbound_rules = [{ protocol = "tcp", port_range = "+24", source_addresses = ["10.0.0.0/8"] }]`), `(?s)extra_inbound_rules.*"\+24" is not a port`),
		},
	})
	if n := len(s.Requests()); n != 0 {
		t.Errorf("invalid configs reached the DigitalOcean stand-in %d times", n)
	}
}
