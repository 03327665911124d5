package digitalocean_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/acctest"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/dofake"
	"github.com/meshspan/terraform-provider-meshspan/provider/digitalocean"
)

const (
	doTestToken   = "dop_v1_acctest"
	doTestRes     = "meshspan_digitalocean_firewall.mesh"
	doTestROnly   = "dop_v1_readonly"
	doMgmtCIDR    = "100.64.0.0/10"
	doAnyV4, doV6 = "0.0.0.0/0", "::/0"
)

// doStandIn is the DigitalOcean stand-in served on 127.0.0.1 for one test,
// seeded with droplets 101-103 and tags "mesh" and "edge".
type doStandIn struct {
	*dofake.Server
	url string
	t   *testing.T
}

func startDOStandIn(t *testing.T) *doStandIn {
	t.Helper()
	srv := dofake.New(dofake.Options{Token: doTestToken, ReadOnlyToken: doTestROnly})
	for _, id := range []int{101, 102, 103} {
		srv.AddDroplet(id, fmt.Sprintf("node-%d", id))
	}
	srv.AddTag("mesh")
	srv.AddTag("edge")
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &doStandIn{Server: srv, url: ts.URL, t: t}
}

// godo is an out-of-band client: someone changing the firewall by hand.
func (s *doStandIn) godo() *godo.Client {
	c, err := digitalocean.NewClient(digitalocean.Config{Token: doTestToken, Endpoint: s.url, Version: "test"})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func (s *doStandIn) config(body string) string { return s.configToken(doTestToken, body) }

func (s *doStandIn) configToken(token, body string) string {
	return fmt.Sprintf(`
provider "meshspan" {
  digitalocean_token    = %q
  digitalocean_endpoint = %q
}

resource "meshspan_digitalocean_firewall" "mesh" {
%s
}
`, token, s.url, body)
}

// byName returns the stored firewall called name.
func (s *doStandIn) byName(name string) (dofake.Firewall, error) {
	for _, fw := range s.Firewalls() {
		if fw.Name == name {
			return fw, nil
		}
	}
	return dofake.Firewall{}, fmt.Errorf("stand-in holds no firewall named %q", name)
}

// doRule is a rule as the tests write it; model turns it into the shared
// rule model, which decides what counts as equal.
type doRule struct {
	Protocol, Ports, Action string
	Addresses, Tags         []string
	DropletIDs              []int64
}

func (r doRule) model(dir string) cloudfw.Rule {
	m := cloudfw.Rule{Direction: dir, Protocol: r.Protocol, Port: r.Ports, Action: r.Action, Tags: r.Tags, DropletIDs: r.DropletIDs}
	for _, a := range r.Addresses {
		p, err := cloudfw.ParseCIDR(a)
		if err != nil {
			panic(err)
		}
		m.CIDRs = append(m.CIDRs, p)
	}
	return m
}

func models(dir string, rules []doRule) []cloudfw.Rule {
	out := make([]cloudfw.Rule, len(rules))
	for i, r := range rules {
		out[i] = r.model(dir)
	}
	return out
}

func wireGuardDORule(port int) doRule {
	return doRule{Protocol: "udp", Ports: strconv.Itoa(port), Addresses: []string{doAnyV4, doV6}}
}

func doAllowAllOutbound() []doRule {
	return []doRule{
		{Protocol: "tcp", Ports: "all", Addresses: []string{doAnyV4, doV6}},
		{Protocol: "udp", Ports: "all", Addresses: []string{doAnyV4, doV6}},
		{Protocol: "icmp", Addresses: []string{doAnyV4, doV6}},
	}
}

// godoAllowAllOutbound is the default outbound rules as a client sends them.
func godoAllowAllOutbound() []godo.OutboundRule {
	var out []godo.OutboundRule
	for _, r := range doAllowAllOutbound() {
		out = append(out, godo.OutboundRule{Protocol: r.Protocol, PortRange: r.Ports, Destinations: &godo.Destinations{Addresses: r.Addresses}})
	}
	return out
}

func fakeRule(protocol, ports, action string, t *dofake.Targets) doRule {
	return doRule{Protocol: protocol, Ports: ports, Action: action, Addresses: t.Addresses, Tags: t.Tags, DropletIDs: ints64(t.DropletIDs)}
}

func ints64(in []int) []int64 {
	out := make([]int64, len(in))
	for i, v := range in {
		out[i] = int64(v)
	}
	return out
}

func doFakeRules(fw dofake.Firewall) (in, out []doRule) {
	for _, r := range fw.InboundRules {
		in = append(in, fakeRule(r.Protocol, r.Ports, r.Action, r.Sources))
	}
	for _, r := range fw.OutboundRules {
		out = append(out, fakeRule(r.Protocol, r.Ports, r.Action, r.Destinations))
	}
	return in, out
}

// sameRules reports whether got holds exactly want's rules (no duplicates).
func sameRules(dir string, got, want []doRule) bool {
	return len(got) == len(want) && cloudfw.SameSet(models(dir, got), models(dir, want))
}

func ruleKeys(dir string, rules []doRule) []string { return cloudfw.Keys(models(dir, rules)) }

// checkStored asserts the API holds exactly these rules and attachments.
func (s *doStandIn) checkStored(name string, wantIn, wantOut []doRule, droplets []int, tags []string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		fw, err := s.byName(name)
		if err != nil {
			return err
		}
		in, out := doFakeRules(fw)
		if !sameRules(cloudfw.In, in, wantIn) {
			return fmt.Errorf("inbound rules held by the API:\n  %v\nwant exactly:\n  %v", ruleKeys(cloudfw.In, in), ruleKeys(cloudfw.In, wantIn))
		}
		if !sameRules(cloudfw.Out, out, wantOut) {
			return fmt.Errorf("outbound rules held by the API:\n  %v\nwant exactly:\n  %v", ruleKeys(cloudfw.Out, out), ruleKeys(cloudfw.Out, wantOut))
		}
		gotD, gotT := slices.Sorted(slices.Values(fw.DropletIDs)), slices.Sorted(slices.Values(fw.Tags))
		if !slices.Equal(gotD, droplets) || !slices.Equal(gotT, tags) {
			return fmt.Errorf("attached to droplets %v and tags %v, want %v and %v", gotD, gotT, droplets, tags)
		}
		return nil
	}
}

func (s *doStandIn) checkDestroyed(*terraform.State) error {
	if fws := s.Firewalls(); len(fws) != 0 {
		return fmt.Errorf("stand-in still holds %d firewall(s) after destroy, first %q", len(fws), fws[0].Name)
	}
	return nil
}

func doMgmt(port string) doRule {
	return doRule{Protocol: "tcp", Ports: port, Addresses: []string{doMgmtCIDR}}
}

const doLifecycleV1 = `
  name           = "mesh-fw"
  wireguard_port = 51821
  droplet_ids    = [101]
  tags           = ["mesh"]
  extra_inbound_rules = [
    { protocol = "tcp", port_range = "6443", source_addresses = ["100.64.0.0/10"] },
    { protocol = "tcp", port_range = "50000", source_addresses = ["100.64.0.0/10"] },
  ]
`

// v2 changes rules (inbound and outbound), the port, droplets and tags, and
// spells "all ports" two ways that must not cause a perpetual diff.
const doLifecycleV2 = `
  name        = "mesh-fw"
  droplet_ids = [101, 102]
  tags        = ["mesh", "edge"]
  extra_inbound_rules = [
    { protocol = "tcp", port_range = "all", source_tags = ["edge"] },
    { protocol = "udp", port_range = "1-65535", source_droplet_ids = [103] },
    { protocol = "icmp", source_addresses = ["198.51.100.0/24", "2001:db8::/32"] },
  ]
  extra_outbound_rules = [
    { protocol = "udp", port_range = "53", destination_addresses = ["0.0.0.0/0", "::/0"] },
    { protocol = "tcp", port_range = "443", destination_addresses = ["0.0.0.0/0", "::/0"] },
  ]
`

func TestAccDigitalOceanFirewall_lifecycle(t *testing.T) {
	s := startDOStandIn(t)
	var firstID string
	v2In := []doRule{
		wireGuardDORule(51820),
		{Protocol: "tcp", Ports: "all", Tags: []string{"edge"}},
		{Protocol: "udp", Ports: "all", DropletIDs: []int64{103}},
		{Protocol: "icmp", Addresses: []string{"198.51.100.0/24", "2001:db8::/32"}},
	}
	v2Out := []doRule{
		{Protocol: "udp", Ports: "53", Addresses: []string{doAnyV4, doV6}},
		{Protocol: "tcp", Ports: "443", Addresses: []string{doAnyV4, doV6}},
	}
	v1In := []doRule{wireGuardDORule(51821), doMgmt("6443"), doMgmt("50000")}
	// Destroy detaches droplets and tags before deleting.
	detachedFirst := func(st *terraform.State) error {
		if err := s.checkDestroyed(st); err != nil {
			return err
		}
		var order []string
		for _, r := range s.Requests() {
			if r.Method == http.MethodDelete {
				order = append(order, strings.TrimPrefix(r.Path, "/v2/firewalls/"+firstID))
			}
		}
		// The earlier DELETEs are the out-of-band changes of step 5.
		if len(order) < 3 || !slices.Equal(order[len(order)-3:], []string{"/droplets", "/tags", ""}) {
			return fmt.Errorf("destroy sent DELETEs %q, want /droplets, /tags, then the firewall", order)
		}
		return nil
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { acctest.PreCheck(t) },
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             detachedFirst,
		Steps: []resource.TestStep{
			{ // create
				Config: s.config(doLifecycleV1),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(doTestRes, "status", "succeeded"),
					resource.TestCheckResourceAttr(doTestRes, "wireguard_port", "51821"),
					resource.TestCheckResourceAttr(doTestRes, "extra_inbound_rules.#", "2"),
					resource.TestCheckResourceAttr(doTestRes, "extra_outbound_rules.#", "0"),
					resource.TestMatchResourceAttr(doTestRes, "id", regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)),
					resource.TestCheckResourceAttrSet(doTestRes, "created_at"),
					s.checkStored("mesh-fw", v1In, doAllowAllOutbound(), []int{101}, []string{"mesh"}),
					func(st *terraform.State) error {
						firstID = st.RootModule().Resources[doTestRes].Primary.ID
						return nil
					},
				),
			},
			{ // re-plan: no diff
				Config:   s.config(doLifecycleV1),
				PlanOnly: true,
			},
			{ // a rule added outside Terraform shows as a diff...
				PreConfig: func() {
					_, err := s.godo().Firewalls.AddRules(context.Background(), firstID, &godo.FirewallRulesRequest{
						InboundRules: []godo.InboundRule{{Protocol: "tcp", PortRange: "22", Sources: &godo.Sources{Addresses: []string{doAnyV4}}}}})
					if err != nil {
						t.Fatal(err)
					}
				},
				Config:             s.config(doLifecycleV1),
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
			{ // ...and is repaired in place.
				Config: s.config(doLifecycleV1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(doTestRes, plancheck.ResourceActionUpdate)}},
				Check: s.checkStored("mesh-fw", v1In, doAllowAllOutbound(), []int{101}, []string{"mesh"}),
			},
			{ // the WireGuard rule and the outbound rules removed outside, a droplet detached
				PreConfig: func() {
					c, ctx := s.godo(), context.Background()
					_, err := c.Firewalls.RemoveRules(ctx, firstID, &godo.FirewallRulesRequest{
						InboundRules:  []godo.InboundRule{{Protocol: "udp", PortRange: "51821", Sources: &godo.Sources{Addresses: []string{doAnyV4, doV6}}}},
						OutboundRules: godoAllowAllOutbound(),
					})
					if err == nil {
						_, err = c.Firewalls.RemoveDroplets(ctx, firstID, 101)
					}
					if err != nil {
						t.Fatal(err)
					}
				},
				Config: s.config(doLifecycleV1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(doTestRes, plancheck.ResourceActionUpdate)}},
				Check: s.checkStored("mesh-fw", v1In, doAllowAllOutbound(), []int{101}, []string{"mesh"}),
			},
			{ // update rules, port, droplets and tags in place
				// A tag added by hand while the API is slow: the refresh
				// stores status "waiting"; the update must end "succeeded"
				// without an inconsistent-result error.
				PreConfig: func() {
					s.SetSlowStatus(2)
					if _, err := s.godo().Firewalls.AddTags(context.Background(), firstID, "edge"); err != nil {
						t.Fatal(err)
					}
				},
				Config: s.config(doLifecycleV2),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(doTestRes, plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(doTestRes, "status", "succeeded"),
					resource.TestCheckResourceAttr(doTestRes, "wireguard_port", "51820"),
					resource.TestCheckResourceAttr(doTestRes, "extra_outbound_rules.#", "2"),
					resource.TestCheckTypeSetElemNestedAttrs(doTestRes, "extra_inbound_rules.*", map[string]string{"protocol": "udp", "port_range": "1-65535"}),
					s.checkStored("mesh-fw", v2In, v2Out, []int{101, 102}, []string{"edge", "mesh"}),
					func(st *terraform.State) error {
						if id := st.RootModule().Resources[doTestRes].Primary.ID; id != firstID {
							return fmt.Errorf("update replaced the firewall: id %s, was %s", id, firstID)
						}
						return nil
					},
				),
			},
			{ // import by UUID
				ResourceName:      doTestRes,
				ImportState:       true,
				ImportStateVerify: true,
			},
		},
	})
}

func TestAccDigitalOceanFirewall_deletedOutside(t *testing.T) {
	s := startDOStandIn(t)
	var firstID string
	body := `  name = "gone-fw"`
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { acctest.PreCheck(t) },
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: []resource.TestStep{
			{
				Config: s.config(body),
				Check: func(st *terraform.State) error {
					firstID = st.RootModule().Resources[doTestRes].Primary.ID
					return nil
				},
			},
			{
				PreConfig: func() {
					if _, err := s.godo().Firewalls.Delete(context.Background(), firstID); err != nil {
						t.Fatal(err)
					}
				},
				Config: s.config(body),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(doTestRes, plancheck.ResourceActionCreate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					s.checkStored("gone-fw", []doRule{wireGuardDORule(51820)}, doAllowAllOutbound(), nil, nil),
					func(st *terraform.State) error {
						if id := st.RootModule().Resources[doTestRes].Primary.ID; id == firstID {
							return fmt.Errorf("firewall not recreated: id still %s", id)
						}
						return nil
					},
				),
			},
		},
	})
}

// sentRules decodes the rules of every create and update request the API
// received.
func (s *doStandIn) sentRules() (bodies []godo.FirewallRequest) {
	for _, r := range s.Requests() {
		if (r.Method == http.MethodPost && r.Path == "/v2/firewalls") || (r.Method == http.MethodPut && strings.HasPrefix(r.Path, "/v2/firewalls/")) {
			var b godo.FirewallRequest
			if err := json.Unmarshal(r.Body, &b); err != nil {
				s.t.Fatalf("request body %s: %v", r.Body, err)
			}
			bodies = append(bodies, b)
		}
	}
	return bodies
}

func doRequestRules(b godo.FirewallRequest) (in, out []doRule) {
	for _, r := range b.InboundRules {
		in = append(in, doRule{Protocol: r.Protocol, Ports: r.PortRange, Action: string(r.Action), Addresses: r.Sources.Addresses, Tags: r.Sources.Tags, DropletIDs: ints64(r.Sources.DropletIDs)})
	}
	for _, r := range b.OutboundRules {
		d := r.Destinations
		out = append(out, doRule{Protocol: r.Protocol, Ports: r.PortRange, Action: string(r.Action), Addresses: d.Addresses, Tags: d.Tags, DropletIDs: ints64(d.DropletIDs)})
	}
	return in, out
}

// TestAccDigitalOceanFirewall_rulesSent checks the requests themselves: the
// WireGuard rule (port from the config, as listen_port would give it) plus
// the extras, nothing else; allow-all outbound only when no outbound rule
// is configured.
func TestAccDigitalOceanFirewall_rulesSent(t *testing.T) {
	s := startDOStandIn(t)
	withPort := func(port int, extraOut string) string {
		return fmt.Sprintf(`
  name           = "sent-fw"
  wireguard_port = local.listen_port
  extra_inbound_rules = [
    { protocol = "tcp", port_range = "6443", source_addresses = ["100.64.0.0/10"] },
  ]
%s
}

locals {
  listen_port = %d
`, extraOut, port)
	}
	check := func(n int, wantIn, wantOut []doRule) resource.TestCheckFunc {
		return func(*terraform.State) error {
			bodies := s.sentRules()
			if len(bodies) != n {
				return fmt.Errorf("%d create/update requests, want %d", len(bodies), n)
			}
			in, out := doRequestRules(bodies[n-1])
			if !sameRules(cloudfw.In, in, wantIn) {
				return fmt.Errorf("sent inbound %v, want exactly %v", ruleKeys(cloudfw.In, in), ruleKeys(cloudfw.In, wantIn))
			}
			if !sameRules(cloudfw.Out, out, wantOut) {
				return fmt.Errorf("sent outbound %v, want exactly %v", ruleKeys(cloudfw.Out, out), ruleKeys(cloudfw.Out, wantOut))
			}
			return nil
		}
	}
	dns := []doRule{{Protocol: "udp", Ports: "53", Addresses: []string{"203.0.113.53"}}}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { acctest.PreCheck(t) },
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: []resource.TestStep{
			{
				Config: s.config(withPort(41641, "")),
				Check:  check(1, []doRule{wireGuardDORule(41641), doMgmt("6443")}, doAllowAllOutbound()),
			},
			{
				Config: s.config(withPort(41642, `  extra_outbound_rules = [{ protocol = "udp", port_range = "53", destination_addresses = ["203.0.113.53"] }]`)),
				Check:  check(2, []doRule{wireGuardDORule(41642), doMgmt("6443")}, dns),
			},
		},
	})
}

func TestAccDigitalOceanFirewall_faults(t *testing.T) {
	simple := func(name string) string { return fmt.Sprintf("  name = %q\n  tags = [\"mesh\"]", name) }
	// countStatus counts API answers with this method, path prefix and status.
	countStatus := func(s *doStandIn, method, prefix string, status int) int {
		n := 0
		for _, r := range s.Requests() {
			if r.Method == method && strings.HasPrefix(r.Path, prefix) && r.Status == status {
				n++
			}
		}
		return n
	}
	expectCount := func(s *doStandIn, method, prefix string, status, want int) resource.TestCheckFunc {
		return func(*terraform.State) error {
			if n := countStatus(s, method, prefix, status); n != want {
				return fmt.Errorf("%d %s %s answered %d, want %d", n, method, prefix, status, want)
			}
			return nil
		}
	}
	run := func(t *testing.T, s *doStandIn, steps ...resource.TestStep) {
		resource.Test(t, resource.TestCase{
			PreCheck:                 func() { acctest.PreCheck(t) },
			ProtoV6ProviderFactories: acctest.ProviderFactories,
			CheckDestroy:             s.checkDestroyed,
			Steps:                    steps,
		})
	}

	t.Run("429 burst honours retry-after", func(t *testing.T) {
		s := startDOStandIn(t)
		s.InjectFault(dofake.Fault{Method: http.MethodPost, Path: "/v2/firewalls", Status: 429, Count: 2, RetryAfter: 1})
		run(t, s, resource.TestStep{
			Config: s.config(simple("burst-fw")),
			Check: resource.ComposeAggregateTestCheckFunc(
				expectCount(s, http.MethodPost, "/v2/firewalls", 429, 2),
				expectCount(s, http.MethodPost, "/v2/firewalls", 202, 1),
			),
		})
	})
	t.Run("429 exhausted window waits for ratelimit-reset", func(t *testing.T) {
		s := startDOStandIn(t)
		s.InjectFault(dofake.Fault{Method: http.MethodGet, Status: 429, Count: 1, ResetIn: 1})
		run(t, s, resource.TestStep{
			Config: s.config(simple("reset-fw")),
			Check:  expectCount(s, http.MethodGet, "/v2/firewalls/", 429, 1),
		})
	})
	t.Run("429 beyond the bound fails clearly", func(t *testing.T) {
		s := startDOStandIn(t)
		s.InjectFault(dofake.Fault{Method: http.MethodPost, Path: "/v2/firewalls", Status: 429, Count: 1, RetryAfter: 3600})
		run(t, s,
			resource.TestStep{Config: s.config(simple("limited-fw")), ExpectError: regexp.MustCompile(`rate limit`)},
			resource.TestStep{Config: s.config(simple("limited-fw"))}, // fault spent: works
		)
	})
	t.Run("500s on reads are retried", func(t *testing.T) {
		s := startDOStandIn(t)
		s.InjectFault(dofake.Fault{Method: http.MethodGet, Status: 500, Count: 3})
		run(t, s, resource.TestStep{
			Config: s.config(simple("flaky-fw")),
			Check:  expectCount(s, http.MethodGet, "/v2/firewalls/", 500, 3),
		})
	})
	t.Run("500 on create is not retried", func(t *testing.T) {
		s := startDOStandIn(t)
		s.InjectFault(dofake.Fault{Method: http.MethodPost, Path: "/v2/firewalls", Status: 500, Count: 1})
		run(t, s,
			resource.TestStep{Config: s.config(simple("once-fw")), ExpectError: regexp.MustCompile(`HTTP 500`)},
			resource.TestStep{
				Config: s.config(simple("once-fw")),
				Check:  expectCount(s, http.MethodPost, "/v2/firewalls", 500, 1),
			},
		)
	})
	t.Run("slow status is waited for", func(t *testing.T) {
		s := startDOStandIn(t)
		s.SetSlowStatus(4)
		run(t, s, resource.TestStep{
			Config: s.config(simple("slow-fw")),
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr(doTestRes, "status", "succeeded"),
				func(*terraform.State) error {
					if n := countStatus(s, http.MethodGet, "/v2/firewalls/", 200); n < 4 {
						return fmt.Errorf("only %d GETs: the provider did not wait for \"succeeded\"", n)
					}
					return nil
				},
			),
		})
	})
	t.Run("401 names the token", func(t *testing.T) {
		s := startDOStandIn(t)
		run(t, s, resource.TestStep{Config: s.configToken("wrong", simple("auth-fw")), ExpectError: regexp.MustCompile(`digitalocean_token`)})
	})
	t.Run("403 read-only token", func(t *testing.T) {
		s := startDOStandIn(t)
		run(t, s, resource.TestStep{Config: s.configToken(doTestROnly, simple("ro-fw")), ExpectError: regexp.MustCompile(`(?s)HTTP 403.*write\s+scope`)})
	})
	t.Run("409 name taken", func(t *testing.T) {
		s := startDOStandIn(t)
		c := s.godo()
		fw, _, err := c.Firewalls.Create(context.Background(), &godo.FirewallRequest{Name: "taken-fw",
			InboundRules: []godo.InboundRule{{Protocol: "udp", PortRange: "51820", Sources: &godo.Sources{Addresses: []string{doAnyV4, doV6}}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.Firewalls.Delete(context.Background(), fw.ID) })
		resource.Test(t, resource.TestCase{
			PreCheck:                 func() { acctest.PreCheck(t) },
			ProtoV6ProviderFactories: acctest.ProviderFactories,
			CheckDestroy: func(*terraform.State) error {
				if fws := s.Firewalls(); len(fws) != 1 || fws[0].ID != fw.ID {
					return fmt.Errorf("stand-in holds %d firewalls, want only the pre-existing one", len(fws))
				}
				return nil
			},
			Steps: []resource.TestStep{{
				Config:      s.config(simple("taken-fw")),
				ExpectError: regexp.MustCompile(`(?s)HTTP 409.*already\s+exists`),
			}},
		})
	})
	t.Run("422 names the attribute", func(t *testing.T) {
		s := startDOStandIn(t)
		run(t, s, resource.TestStep{
			Config:      s.config("  name = \"ghost-fw\"\n  tags = [\"ghost\"]"),
			ExpectError: regexp.MustCompile(`(?s)HTTP 422.*tags.*ghost`),
		})
	})
}

// TestAccDigitalOceanFirewall_validation: bad input is refused at plan
// time, naming the field and the fix, before any API call.
func TestAccDigitalOceanFirewall_validation(t *testing.T) {
	s := startDOStandIn(t)
	cases := []struct{ body, want string }{
		{`name = "v0"
  extra_inbound_rules = [{ protocol = "tcp", source_addresses = ["10.0.0.0/8"] }]`, `port_range is required`},
		{`name = "v1"
  extra_inbound_rules = [{ protocol = "icmp", port_range = "0", source_addresses = ["10.0.0.0/8"] }]`, `icmp rule`},
		{`name = "v2"
  extra_inbound_rules = [{ protocol = "tcp", port_range = "22", source_addresses = ["10.0.0.1/8"] }]`, `host bits`},
		{`name = "v3"
  extra_inbound_rules = [{ protocol = "gre", port_range = "22", source_addresses = ["10.0.0.0/8"] }]`, `value must be one of: \["tcp" "udp" "icmp"\], got: "gre"`},
		{`name = "v4"
  extra_inbound_rules = [{ protocol = "udp", port_range = "51820", source_addresses = ["::/0", "0.0.0.0/0"] }]`, `repeats the WireGuard`},
		{`name = "v5"
  extra_outbound_rules = [{ protocol = "tcp", port_range = "443" }]`, `at least one of`},
		{`name = "bad name"`, `(?s)name must be at least two letters.*got: bad name`},
		{`name = "v6"
  wireguard_port = 70000`, `wireguard_port`},
		{`name = "v7"
  extra_inbound_rules = [{ protocol = "tcp", port_range = "22", source_tags = ["mesh"], action = "drop" }]`, `action`},
	}
	var steps []resource.TestStep
	for _, c := range cases {
		steps = append(steps, resource.TestStep{Config: s.config("  " + c.body), PlanOnly: true, ExpectError: regexp.MustCompile(c.want)})
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { acctest.PreCheck(t) },
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		Steps:                    steps,
	})
	if n := len(s.Requests()); n != 0 {
		t.Fatalf("invalid configs reached the API %d times", n)
	}
}

// TestAccDigitalOceanFirewall_machineConfigPort wires the port the way the
// docs say: from the node's machine config, so firewall and node agree.
func TestAccDigitalOceanFirewall_machineConfigPort(t *testing.T) {
	s := startDOStandIn(t)
	body := func(listenPort string) string {
		return `  name           = "cfg-fw"
  wireguard_port = data.meshspan_machine_config.node.listen_port
}

resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "do-1"
  discovery_endpoints = ["https://discovery.example.test/"]
  platform            = "digitalocean"
` + listenPort
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { acctest.PreCheck(t) },
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: []resource.TestStep{
			{
				Config: s.config(body("  listen_port = 41000")),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(doTestRes, "wireguard_port", "41000"),
					s.checkStored("cfg-fw", []doRule{wireGuardDORule(41000)}, doAllowAllOutbound(), nil, nil),
				),
			},
			{ // the machine config's default port flows through too
				Config: s.config(body("")),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPair(doTestRes, "wireguard_port", "data.meshspan_machine_config.node", "listen_port"),
					s.checkStored("cfg-fw", []doRule{wireGuardDORule(51820)}, doAllowAllOutbound(), nil, nil),
				),
			},
		},
	})
}

// Terraform validates a configuration before its variables are known:
// addresses from a variable (the journeys' var.admin_cidrs) are then
// unknown inside a known rule set, and must not fail validation.
func TestAccDigitalOceanFirewall_addressesFromVariable(t *testing.T) {
	s := startDOStandIn(t)
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { acctest.PreCheck(t) },
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             s.checkDestroyed,
		Steps: []resource.TestStep{{
			Config: s.config(`
  name = "var-fw"
  tags = ["mesh"]
  extra_inbound_rules = [{ protocol = "tcp", port_range = "6443", source_addresses = var.admin_cidrs }]
}

variable "admin_cidrs" {
  type    = list(string)
  default = ["100.64.0.0/10"]
`),
			Check: func(*terraform.State) error {
				fw, err := s.byName("var-fw")
				if err != nil {
					return err
				}
				for _, r := range fw.InboundRules {
					if r.Ports == "6443" && r.Sources != nil && len(r.Sources.Addresses) == 1 && r.Sources.Addresses[0] == "100.64.0.0/10" {
						return nil
					}
				}
				return fmt.Errorf("no tcp 6443 rule from 100.64.0.0/10 in %+v", fw.InboundRules)
			},
		}},
	})
}
