package hcloud_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/acctest"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
	meshhcloud "github.com/meshspan/terraform-provider-meshspan/provider/hcloud"
)

const hcloudResName = "meshspan_hcloud_firewall.mesh"

// startHcloudFake serves a fresh stand-in on loopback and points the
// provider (through HCLOUD_ENDPOINT / HCLOUD_TOKEN) and a direct hcloud-go
// client at it.
func startHcloudFake(t *testing.T) (*hcloudfake.Running, *hcloud.Client) {
	t.Helper()
	acctest.PreCheck(t)
	r, err := hcloudfake.Start(hcloudfake.New(hcloudfake.Options{}), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	t.Setenv("HCLOUD_ENDPOINT", r.Endpoint)
	t.Setenv("HCLOUD_TOKEN", r.Token())
	t.Setenv(meshhcloud.PollIntervalEnv, "20ms")
	c := hcloud.NewClient(hcloud.WithEndpoint(r.Endpoint), hcloud.WithToken(r.Token()),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(10 * time.Millisecond)}))
	return r, c
}

// ruleLine writes a rule as direction|protocol|port|cidrs|description with
// sorted CIDRs, so expected rule sets read plainly.
func ruleLine(direction, protocol string, port *string, src, dst []string, desc *string) string {
	cidrs := slices.Concat(src, dst)
	sort.Strings(cidrs)
	p, d := "", ""
	if port != nil {
		p = *port
	}
	if desc != nil {
		d = *desc
	}
	return strings.Join([]string{direction, protocol, p, strings.Join(cidrs, ","), d}, "|")
}

// checkFakeRules asserts the firewall's rules in the stand-in are exactly want.
func checkFakeRules(r *hcloudfake.Running, want ...string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		fws := r.Firewalls()
		if len(fws) != 1 {
			return fmt.Errorf("stand-in holds %d firewalls, want 1", len(fws))
		}
		var got []string
		for _, x := range fws[0].Rules {
			got = append(got, ruleLine(x.Direction, x.Protocol, x.Port, x.SourceIPs, x.DestinationIPs, x.Description))
		}
		sort.Strings(got)
		w := slices.Sorted(slices.Values(want))
		if !slices.Equal(got, w) {
			return fmt.Errorf("rules in the stand-in:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(w, "\n  "))
		}
		return nil
	}
}

func checkFakeAttachments(r *hcloudfake.Running, servers []int64, selectors ...string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		fw := r.Firewalls()[0]
		gotS, gotL := slices.Sorted(slices.Values(fw.ServerIDs)), slices.Sorted(slices.Values(fw.Selectors))
		if !slices.Equal(gotS, slices.Sorted(slices.Values(servers))) || !slices.Equal(gotL, slices.Sorted(slices.Values(selectors))) {
			return fmt.Errorf("applied to servers %v selectors %v, want %v %v", gotS, gotL, servers, selectors)
		}
		return nil
	}
}

func checkHcloudDestroyed(r *hcloudfake.Running) resource.TestCheckFunc {
	return func(*terraform.State) error {
		if fws := r.Firewalls(); len(fws) != 0 {
			return fmt.Errorf("%d firewall(s) left in the stand-in after destroy: %+v", len(fws), fws)
		}
		return nil
	}
}

func TestAccHcloudFirewall_lifecycle(t *testing.T) {
	r, c := startHcloudFake(t)
	s1 := r.AddServer("cp-1", map[string]string{"role": "cp"})
	s2 := r.AddServer("worker-1", map[string]string{"role": "worker"})
	var firstID string

	create := fmt.Sprintf(`
locals {
  listen_port = 51821 # stands in for data.meshspan_machine_config.node.listen_port
}
resource "meshspan_hcloud_firewall" "mesh" {
  name           = "mesh"
  labels         = { cluster = "demo" }
  wireguard_port = local.listen_port
  extra_rules = [
    { direction = "in", protocol = "tcp", port = "6443", source_ips = ["100.64.0.0/10"], description = "kubernetes api" },
    { direction = "in", protocol = "tcp", port = "50000-50001", source_ips = ["2001:DB8::7", "100.64.0.0/10"] },
  ]
  server_ids      = [%d]
  label_selectors = ["role=worker"]
}`, s1)
	wantCreate := []string{
		"in|udp|51821|0.0.0.0/0,::/0|meshspan WireGuard",
		"in|tcp|6443|100.64.0.0/10|kubernetes api",
		"in|tcp|50000-50001|100.64.0.0/10,2001:db8::7/128|",
	}
	update := func(order int) string {
		rules := []string{
			`{ direction = "in", protocol = "icmp", source_ips = ["100.64.0.0/10"] }`,
			`{ direction = "out", protocol = "tcp", port = "443", destination_ips = ["0.0.0.0/0", "::/0"] }`,
			`{ direction = "in", protocol = "tcp", port = "6443", source_ips = ["100.64.0.0/10"] }`,
		}
		if order == 1 {
			slices.Reverse(rules)
		}
		return fmt.Sprintf(`
resource "meshspan_hcloud_firewall" "mesh" {
  name        = "mesh-renamed"
  labels      = { cluster = "demo", tier = "edge" }
  extra_rules = [%s]
  server_ids  = [%d]
}`, strings.Join(rules, ",\n"), s2)
	}
	wantUpdate := []string{
		"in|udp|51820|0.0.0.0/0,::/0|meshspan WireGuard",
		"in|icmp||100.64.0.0/10|",
		"out|tcp|443|0.0.0.0/0,::/0|",
		"in|tcp|6443|100.64.0.0/10|",
	}

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: []resource.TestStep{
			{
				Config: create,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(hcloudResName, "wireguard_port", "51821"),
					resource.TestCheckResourceAttrSet(hcloudResName, "id"),
					checkFakeRules(r, wantCreate...),
					checkFakeAttachments(r, []int64{s1}, "role=worker"),
					checkSentCreateRules(r, wantCreate...),
					func(s *terraform.State) error {
						firstID = s.RootModule().Resources[hcloudResName].Primary.ID
						return nil
					},
				),
			},
			{Config: create, PlanOnly: true}, // bare IP and upper-case IPv6 cause no diff
			{
				// Out-of-band drift: a rule added and a selector removed outside Terraform.
				PreConfig: func() {
					fw, _, err := c.Firewall.GetByID(context.Background(), r.Firewalls()[0].ID)
					if err != nil || fw == nil {
						t.Fatalf("drift: get firewall: %v", err)
					}
					_, anyV4, _ := net.ParseCIDR("0.0.0.0/0")
					rules := append(fw.Rules, hcloud.FirewallRule{Direction: "in", Protocol: "tcp", Port: hcloud.Ptr("22"), SourceIPs: []net.IPNet{*anyV4}})
					acts, _, err := c.Firewall.SetRules(context.Background(), fw, hcloud.FirewallSetRulesOpts{Rules: rules})
					if err == nil {
						err = c.Action.WaitFor(context.Background(), acts...)
					}
					if err == nil {
						_, _, err = c.Firewall.RemoveResources(context.Background(), fw, []hcloud.FirewallResource{{
							Type: hcloud.FirewallResourceTypeLabelSelector, LabelSelector: &hcloud.FirewallResourceLabelSelector{Selector: "role=worker"}}})
					}
					if err != nil {
						t.Fatalf("drift: %v", err)
					}
				},
				Config:             create,
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
			{
				Config: create, // apply repairs the drift
				Check: resource.ComposeAggregateTestCheckFunc(
					checkFakeRules(r, wantCreate...),
					checkFakeAttachments(r, []int64{s1}, "role=worker"),
				),
			},
			{
				Config: update(0),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkFakeRules(r, wantUpdate...),
					checkFakeAttachments(r, []int64{s2}),
					resource.TestCheckResourceAttr(hcloudResName, "wireguard_port", "51820"),
					resource.TestCheckResourceAttr(hcloudResName, "name", "mesh-renamed"),
					func(s *terraform.State) error {
						fw := r.Firewalls()[0]
						if id := s.RootModule().Resources[hcloudResName].Primary.ID; id != firstID {
							return fmt.Errorf("firewall replaced (%s -> %s); want an update in place", firstID, id)
						}
						if fw.Name != "mesh-renamed" || fw.Labels["tier"] != "edge" || len(fw.Labels) != 2 {
							return fmt.Errorf("stand-in has name %q labels %v", fw.Name, fw.Labels)
						}
						return nil
					},
				),
			},
			{Config: update(1), PlanOnly: true}, // reordered rules: no diff
			{ResourceName: hcloudResName, ImportState: true, ImportStateVerify: true},
			{ResourceName: hcloudResName, ImportState: true, ImportStateId: "mesh", ExpectError: regexp.MustCompile(`not a\s+Hetzner Cloud firewall ID`)},
		},
	})
}

// checkSentCreateRules asserts the POST /firewalls body carried exactly the
// WireGuard rule plus the configured extras, nothing more.
func checkSentCreateRules(r *hcloudfake.Running, want ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var bodies []string
		for _, q := range r.Requests() {
			if q.Method == "POST" && q.Path == "/firewalls" && q.Status == 201 {
				bodies = append(bodies, q.Body)
			}
		}
		if len(bodies) != 1 {
			return fmt.Errorf("saw %d successful POST /firewalls, want 1", len(bodies))
		}
		var req struct {
			Rules []hcloudfake.FirewallRule `json:"rules"`
		}
		if err := json.Unmarshal([]byte(bodies[0]), &req); err != nil {
			return err
		}
		var got []string
		for _, x := range req.Rules {
			got = append(got, ruleLine(x.Direction, x.Protocol, x.Port, x.SourceIPs, x.DestinationIPs, x.Description))
		}
		sort.Strings(got)
		if w := slices.Sorted(slices.Values(want)); !slices.Equal(got, w) {
			return fmt.Errorf("rules sent:\n  %s\nwant exactly:\n  %s", strings.Join(got, "\n  "), strings.Join(w, "\n  "))
		}
		return nil
	}
}

func TestAccHcloudFirewall_deletedOutsideIsRecreated(t *testing.T) {
	r, c := startHcloudFake(t)
	s1 := r.AddServer("n1", nil)
	cfg := fmt.Sprintf(`
resource "meshspan_hcloud_firewall" "mesh" {
  name       = "mesh"
  server_ids = [%d]
}`, s1)
	var firstID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: []resource.TestStep{
			{Config: cfg, Check: func(s *terraform.State) error {
				firstID = s.RootModule().Resources[hcloudResName].Primary.ID
				return checkFakeRules(r, "in|udp|51820|0.0.0.0/0,::/0|meshspan WireGuard")(s)
			}},
			{
				PreConfig: func() {
					ctx := context.Background()
					fw, _, err := c.Firewall.GetByID(ctx, r.Firewalls()[0].ID)
					if err == nil {
						var acts []*hcloud.Action
						var direct []hcloud.FirewallResource
						for _, a := range fw.AppliedTo {
							direct = append(direct, hcloud.FirewallResource{Type: a.Type, Server: a.Server, LabelSelector: a.LabelSelector})
						}
						acts, _, err = c.Firewall.RemoveResources(ctx, fw, direct)
						if err == nil {
							err = c.Action.WaitFor(ctx, acts...)
						}
					}
					if err == nil {
						_, err = c.Firewall.Delete(ctx, fw)
					}
					if err != nil {
						t.Fatalf("delete outside terraform: %v", err)
					}
				},
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					checkFakeAttachments(r, []int64{s1}),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources[hcloudResName].Primary.ID; id == firstID {
							return fmt.Errorf("firewall %s was not recreated", id)
						}
						return nil
					},
				),
			},
		},
	})
}

func TestAccHcloudFirewall_faults(t *testing.T) {
	r, _ := startHcloudFake(t)
	cfg := func(name, extra string) string {
		return fmt.Sprintf(`
resource "meshspan_hcloud_firewall" "mesh" {
  name = %q
  %s
}`, name, extra)
	}
	var started time.Time
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: []resource.TestStep{
			{
				// A 429 burst on create is retried after RateLimit-Reset; a slow
				// action is waited for.
				PreConfig: func() {
					r.Inject(hcloudfake.Fault{Status: 429, Count: 3, Method: "POST", Path: "/firewalls"})
					r.SetActionDelay(1500 * time.Millisecond)
					started = time.Now()
				},
				Config: cfg("mesh", ""),
				Check: func(*terraform.State) error {
					n429, polls := 0, 0
					for _, q := range r.Requests() {
						if q.Method == "POST" && q.Path == "/firewalls" && q.Status == 429 {
							n429++
						}
						if q.Path == "/actions" && strings.Contains(q.Query, "id=") {
							polls++
						}
					}
					if n429 != 3 || polls == 0 {
						return fmt.Errorf("saw %d 429s (want 3) and %d action polls (want some)", n429, polls)
					}
					if el := time.Since(started); el < 1500*time.Millisecond {
						return fmt.Errorf("apply returned after %v, before the slow action finished", el)
					}
					return nil
				},
			},
			{
				// A 500 is surfaced with a clear error.
				PreConfig: func() {
					r.SetActionDelay(0)
					r.Inject(hcloudfake.Fault{Status: 500, Count: 1, Method: "PUT", Path: "/firewalls/"})
				},
				Config:      cfg("renamed", ""),
				ExpectError: regexp.MustCompile(`(?s)HTTP 500 server_error.*failed on its side`),
			},
			{Config: cfg("renamed", ""), Check: resource.TestCheckResourceAttr(hcloudResName, "name", "renamed")},
			{
				// An action slower than the resource's timeout fails with a
				// message naming the timeout.
				PreConfig: func() { r.SetActionDelay(time.Minute) },
				Config: cfg("renamed", `extra_rules = [{ direction = "in", protocol = "tcp", port = "22", source_ips = ["192.0.2.0/24"] }]
  timeouts { update = "1s" }`),
				ExpectError: regexp.MustCompile(`timeouts\.update`),
			},
			{
				PreConfig: func() { r.SetActionDelay(0) },
				Config:    cfg("renamed", `extra_rules = [{ direction = "in", protocol = "tcp", port = "22", source_ips = ["192.0.2.0/24"] }]`),
				Check: checkFakeRules(r, "in|udp|51820|0.0.0.0/0,::/0|meshspan WireGuard",
					"in|tcp|22|192.0.2.0/24|"),
			},
			{
				// The destroy that follows meets resource_in_use twice and retries.
				PreConfig: func() {
					r.Inject(hcloudfake.Fault{Status: 422, Code: "resource_in_use", Count: 2, Method: "DELETE", Path: "/firewalls/"})
				},
				Config:   cfg("renamed", `extra_rules = [{ direction = "in", protocol = "tcp", port = "22", source_ips = ["192.0.2.0/24"] }]`),
				PlanOnly: true,
			},
		},
	})
	inUse := 0
	for _, q := range r.Requests() {
		if q.Method == "DELETE" && q.Status == 422 {
			inUse++
		}
	}
	if inUse != 2 {
		t.Errorf("destroy met resource_in_use %d times, want 2 (then retried)", inUse)
	}
}

func TestAccHcloudFirewall_errors(t *testing.T) {
	r, c := startHcloudFake(t)
	if _, _, err := c.Firewall.Create(context.Background(), hcloud.FirewallCreateOpts{Name: "taken"}); err != nil {
		t.Fatal(err)
	}
	one := func(body string) string { return `resource "meshspan_hcloud_firewall" "mesh" {` + "\n" + body + "\n}" }
	step := func(cfg, re string) resource.TestStep {
		return resource.TestStep{Config: cfg, ExpectError: regexp.MustCompile(re)}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		Steps: []resource.TestStep{
			step(`provider "meshspan" { hcloud_token = "wrong" }`+"\n"+one(`name = "a"`), `(?s)token is invalid or lacks write.*hcloud_token`),
			step(one(`name = "taken"`), `(?s)already exists in the Hetzner Cloud.*project`),
			step(one(`name = "a"
labels = { "bad key!" = "x" }`), `(?s)Invalid label.*label key "bad key!" is invalid`),
			step(one(`name = "a"
server_ids = [424242]`), `(?s)server in server_ids does not exist`),
			// Caught at plan, before any request:
			step(one(`name = "a"
extra_rules = [{ direction = "in", protocol = "tcp", port = "22", source_ips = ["10.0.0.1/8"] }]`), `(?s)host bits set; did you mean 10.0.0.0/8`),
			step(one(`name = "a"
extra_rules = [{ direction = "in", protocol = "icmp", port = "22", source_ips = ["10.0.0.0/8"] }]`), `(?s)has no ports; remove it`),
			step(one(`name = "a"
extra_rules = [{ direction = "in", protocol = "tcp", port = "22", destination_ips = ["10.0.0.0/8"] }]`), `(?s)destination_ips is set on an "in" rule`),
			step(one(`name = "a"
extra_rules = [{ direction = "in", protocol = "udp", port = "51820", source_ips = ["::/0", "0.0.0.0/0"] }]`), `(?s)Duplicate of the WireGuard rule`),
			step(one(`name = "a"
wireguard_port = 70000`), `(?s)wireguard_port value must be between 1 and 65535, got: 70000`),
		},
	})
	for _, q := range r.Requests() {
		if q.Method == "POST" && q.Status == 201 && q.Path == "/firewalls" && !strings.Contains(q.Body, `"taken"`) {
			t.Errorf("a firewall was created despite the errors: %s", q.Body)
		}
	}
}

// The documented wiring: the WireGuard port comes from the machine config
// (unknown at the first plan, since the cluster secrets are created in the
// same apply).
func TestAccHcloudFirewall_portFromMachineConfig(t *testing.T) {
	r, _ := startHcloudFake(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: acctest.ProviderFactories,
		CheckDestroy:             checkHcloudDestroyed(r),
		Steps: []resource.TestStep{{
			Config: `
resource "meshspan_cluster_secrets" "this" {}

data "meshspan_machine_config" "node" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "hel1-worker-1"
  discovery_endpoints = ["https://discovery.example/"]
  platform            = "hcloud"
  listen_port         = 51900
}

resource "meshspan_hcloud_firewall" "mesh" {
  name           = "mesh"
  wireguard_port = data.meshspan_machine_config.node.listen_port
}`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr(hcloudResName, "wireguard_port", "51900"),
				checkFakeRules(r, "in|udp|51900|0.0.0.0/0,::/0|meshspan WireGuard"),
			),
		}},
	})
}
