package provider

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"gopkg.in/yaml.v3"
)

// TestAccTalosPatch renders both forms through the real terraform and reads
// the patch back as YAML documents.
func TestAccTalosPatch(t *testing.T) {
	cfg := func(version, extra string) string {
		return `
data "meshspan_talos_patch" "p" {
  talos_version      = "` + version + `"
  cluster_id         = "` + testClusterID + `"
  cluster_secret     = "` + testClusterSecret + `"
  discovery_endpoint = "https://discovery.example.com:3000/"
  endpoint_filters   = ["0.0.0.0/0", "!192.168.0.0/16", "::/0"]
` + extra + `
}`
	}
	docs := func(want int, check func([]map[string]any) string) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			raw := s.RootModule().Resources["data.meshspan_talos_patch.p"].Primary.Attributes["patch"]
			dec := yaml.NewDecoder(strings.NewReader(raw))
			var out []map[string]any
			for {
				var d map[string]any
				if err := dec.Decode(&d); err != nil {
					break
				}
				out = append(out, d)
			}
			if len(out) != want {
				return fmt.Errorf("patch has %d documents, want %d:\n%s", len(out), want, raw)
			}
			if msg := check(out); msg != "" {
				return fmt.Errorf("%s:\n%s", msg, raw)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: cfg("v1.11.5", `allow_down_peer_bypass = true`),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("data.meshspan_talos_patch.p", "form", "machine.network.kubespan"),
					resource.TestCheckResourceAttr("data.meshspan_talos_patch.p", "mesh_prefix", "fd7f:175a:b97c:5602::/64"),
					resource.TestCheckResourceAttr("data.meshspan_talos_patch.p", "mtu", "1420"),
					docs(1, func(d []map[string]any) string {
						ks := dig(d[0], "machine", "network", "kubespan")
						if ks["enabled"] != true || ks["allowDownPeerBypass"] != true || ks["mtu"] != 1420 {
							return "machine.network.kubespan is not as configured"
						}
						c := dig(d[0], "cluster")
						if c["id"] != testClusterID || c["secret"] != testClusterSecret {
							return "cluster id/secret differ"
						}
						if dig(d[0], "cluster", "discovery", "registries", "service")["endpoint"] != "https://discovery.example.com:3000/" {
							return "discovery endpoint differs"
						}
						return ""
					}),
				),
			},
			{
				Config: cfg("v1.13.2", `exclude_advertised_networks = ["10.244.0.0/16"]
  mtu = 1380`),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("data.meshspan_talos_patch.p", "form", "KubeSpanConfig"),
					docs(2, func(d []map[string]any) string {
						if _, ok := d[0]["machine"]; ok {
							return "document form also sets machine.network.kubespan (Talos 1.13 refuses both)"
						}
						if d[1]["kind"] != "KubeSpanConfig" || d[1]["apiVersion"] != "v1alpha1" || d[1]["mtu"] != 1380 {
							return "second document is not the KubeSpanConfig"
						}
						f := dig(d[1], "filters")
						if ex, _ := f["excludeAdvertisedNetworks"].([]any); len(ex) != 1 || ex[0] != "10.244.0.0/16" {
							return "excludeAdvertisedNetworks differs"
						}
						return ""
					}),
				),
			},
		},
	})
}

func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, _ := m[k].(map[string]any)
		m = next
	}
	return m
}

// TestAccTalosPatchPlanErrors: bad inputs and bad combinations fail at
// plan time on the attribute, even while the secrets are unknown.
func TestAccTalosPatchPlanErrors(t *testing.T) {
	cfg := func(version, extra string) string {
		return `
resource "meshspan_cluster_secrets" "this" {}
data "meshspan_talos_patch" "p" {
  talos_version  = "` + version + `"
  cluster_id     = meshspan_cluster_secrets.this.cluster_id
  cluster_secret = meshspan_cluster_secrets.this.cluster_secret
` + extra + `
}`
	}
	step := func(version, extra, re string) resource.TestStep {
		return resource.TestStep{Config: cfg(version, extra), PlanOnly: true, ExpectError: regexp.MustCompile(re)}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			step("v1.11.5", `exclude_advertised_networks = ["10.244.0.0/16"]`, `(?s)Invalid exclude_advertised_networks.*needs talos_version v1\.13 or later`),
			step("latest", ``, `(?s)Invalid talos_version.*"latest" is not a Talos version`),
			step("v1.11.5", `mtu = 1000`, `(?s)Invalid mtu.*1000 is out of range`),
			step("v1.11.5", `mtu = 0`, `(?s)Invalid mtu.*leave mtu unset`),
			step("v1.11.5", `discovery_endpoint = "https://d.example.com/v1"`, `(?s)Invalid discovery_endpoint.*Talos\s+wants\s+none`),
			step("v1.11.5", `endpoint_filters = ["0.0.0.0/0", "!10.0.0.0/33"]`, `(?s)Invalid endpoint_filters\[1\].*"!10\.0\.0\.0/33" is not a CIDR or IP`),
		},
	})
}
