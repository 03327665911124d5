package talos

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	talosconfig "github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/config/configpatcher"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/constants"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/talospatch"
)

// metal is the runtime mode of an installed bare-metal node.
type metal struct{}

func (metal) String() string        { return "metal" }
func (metal) RequiresInstall() bool { return true }
func (metal) InContainer() bool     { return false }

// workerConfig is what `talosctl gen config` makes for a worker, by
// machinery's own generator (Talos 1.11 contract).
func workerConfig(t *testing.T) (talosconfig.Provider, *secrets.Bundle) {
	t.Helper()
	bundle, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersion1_11)
	if err != nil {
		t.Fatal(err)
	}
	in, err := generate.NewInput("hybrid", "https://192.0.2.10:6443", constants.DefaultKubernetesVersion,
		generate.WithSecretsBundle(bundle), generate.WithVersionContract(talosconfig.TalosVersion1_11),
		generate.WithInstallDisk("/dev/sda"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := in.Config(machine.TypeWorker)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, bundle
}

// applyPatch patches cfg with machinery's patcher, validates the result
// with machinery's validator and parses its encoding back with the loader,
// as a node reads its config.
func applyPatch(cfg talosconfig.Provider, patch string) (talosconfig.Provider, error) {
	patches, err := configpatcher.LoadPatches([]string{patch})
	if err != nil {
		return nil, err
	}
	out, err := configpatcher.Apply(configpatcher.WithConfig(cfg), patches)
	if err != nil {
		return nil, err
	}
	patched, err := out.Config()
	if err != nil {
		return nil, err
	}
	if _, err := patched.Validate(metal{}); err != nil {
		return nil, err
	}
	raw, err := patched.EncodeBytes()
	if err != nil {
		return nil, err
	}
	return configloader.NewFromBytes(raw)
}

// TestPatchAppliesToGeneratedWorker: for both cluster ID sources (the
// Talos cluster's own URL-safe ID, or meshspan_cluster_secrets' std one),
// the legacy-form patch applies to a generated worker config, the result
// validates, and it carries exactly what the patch said.
func TestPatchAppliesToGeneratedWorker(t *testing.T) {
	meshspanSecrets, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"talos secrets", "meshspan secrets"} {
		t.Run(src, func(t *testing.T) {
			cfg, bundle := workerConfig(t)
			id, secret := bundle.Cluster.ID, bundle.Cluster.Secret
			if src == "meshspan secrets" {
				id, secret = meshspanSecrets.ID, meshspanSecrets.Secret
			}
			o := talospatch.Options{
				TalosVersion: "v1.11.5", ClusterID: id, ClusterSecret: secret,
				DiscoveryEndpoint: "https://discovery.example.com:3000/", MTU: 1380,
				EndpointFilters:     []string{"0.0.0.0/0", "!192.168.0.0/16", "::/0", "203.0.113.7"},
				AllowDownPeerBypass: true, HarvestExtraEndpoints: true,
			}
			p, err := talospatch.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			res, err := applyPatch(cfg, p.YAML)
			if err != nil {
				t.Fatalf("machinery refused the patched config: %v\npatch:\n%s", err, p.YAML)
			}
			ks := res.Machine().Network().KubeSpan()
			if !ks.Enabled() || ks.ForceRouting() || ks.AdvertiseKubernetesNetworks() || !ks.HarvestExtraEndpoints() || ks.MTU() != 1380 ||
				strings.Join(ks.Filters().Endpoints(), ",") != strings.Join(o.EndpointFilters, ",") {
				t.Fatalf("kubespan after patch: enabled %v forceRouting %v advertise %v harvest %v mtu %d filters %v",
					ks.Enabled(), ks.ForceRouting(), ks.AdvertiseKubernetesNetworks(), ks.HarvestExtraEndpoints(), ks.MTU(), ks.Filters().Endpoints())
			}
			c := res.Cluster()
			if c.ID() != id || c.Secret() != secret {
				t.Fatalf("cluster id/secret after patch: %q/%q, want %q/%q", c.ID(), c.Secret(), id, secret)
			}
			d := c.Discovery()
			if !d.Enabled() || !d.Registries().Service().Enabled() || d.Registries().Service().Endpoint() != o.DiscoveryEndpoint ||
				d.Registries().Kubernetes().Enabled() {
				t.Fatalf("discovery after patch: enabled %v service %v %q kubernetes %v", d.Enabled(),
					d.Registries().Service().Enabled(), d.Registries().Service().Endpoint(), d.Registries().Kubernetes().Enabled())
			}
			// The rest of the generated worker config is untouched.
			if got, want := res.Machine().Install().Disk(), "/dev/sda"; got != want {
				t.Fatalf("install disk %q after patch, want %q", got, want)
			}
			if res.Cluster().Endpoint().String() != "https://192.0.2.10:6443" {
				t.Fatalf("control plane endpoint changed: %s", res.Cluster().Endpoint())
			}
		})
	}
}

// TestPatchDefaultsAreTalosDefaults: a patch with only the required inputs
// gives Talos's own defaults (MTU 1420, fail closed, Sidero's service).
func TestPatchDefaultsAreTalosDefaults(t *testing.T) {
	cfg, bundle := workerConfig(t)
	p, err := talospatch.Render(talospatch.Options{TalosVersion: "v1.11.5", ClusterID: bundle.Cluster.ID, ClusterSecret: bundle.Cluster.Secret})
	if err != nil {
		t.Fatal(err)
	}
	res, err := applyPatch(cfg, p.YAML)
	if err != nil {
		t.Fatal(err)
	}
	ks := res.Machine().Network().KubeSpan()
	if ks.MTU() != constants.KubeSpanLinkMTU || !ks.ForceRouting() || len(ks.Filters().Endpoints()) != 0 {
		t.Fatalf("defaults: mtu %d forceRouting %v filters %v", ks.MTU(), ks.ForceRouting(), ks.Filters().Endpoints())
	}
	if got := res.Cluster().Discovery().Registries().Service().Endpoint(); got != constants.DefaultDiscoveryServiceEndpoint {
		t.Fatalf("default discovery endpoint %q, Talos's is %q", got, constants.DefaultDiscoveryServiceEndpoint)
	}
}

// TestPatchValidationAgreesWithTalos feeds the same inputs to our plan-time
// validation and to machinery's validator (by editing a valid patch, so
// ours cannot filter first): each must accept or refuse alike.
func TestPatchValidationAgreesWithTalos(t *testing.T) {
	cfg, bundle := workerConfig(t)
	base := talospatch.Options{TalosVersion: "v1.11.5", ClusterID: bundle.Cluster.ID, ClusterSecret: bundle.Cluster.Secret,
		EndpointFilters: []string{"0.0.0.0/0"}}
	p, err := talospatch.Render(base)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(doc map[string]any)) string {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(p.YAML), &doc); err != nil {
			t.Fatal(err)
		}
		f(doc)
		out, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	ks := func(doc map[string]any) map[string]any {
		return doc["machine"].(map[string]any)["network"].(map[string]any)["kubespan"].(map[string]any)
	}
	cases := []struct {
		name  string
		opts  func(o *talospatch.Options)
		patch func(doc map[string]any)
	}{}
	for _, f := range []string{"10.0.0.0/8", "!192.168.0.0/16", "203.0.113.7", "!2001:db8::1", "::/0", "10.0.0.0/33", "garbage", "!", "fe80::/10%eth0"} {
		cases = append(cases, struct {
			name  string
			opts  func(o *talospatch.Options)
			patch func(doc map[string]any)
		}{"filter " + f, func(o *talospatch.Options) { o.EndpointFilters = []string{f} },
			func(doc map[string]any) { ks(doc)["filters"] = map[string]any{"endpoints": []string{f}} }})
	}
	for _, m := range []int{1279, 1280, 1420, 9000} {
		cases = append(cases, struct {
			name  string
			opts  func(o *talospatch.Options)
			patch func(doc map[string]any)
		}{"mtu " + itoa(int64(m)), func(o *talospatch.Options) { o.MTU = m }, func(doc map[string]any) { ks(doc)["mtu"] = m }})
	}
	for _, e := range []string{"https://d.example.com/", "http://192.0.2.5:3000", "https://d.example.com/v1", "d.example.com:3000"} {
		cases = append(cases, struct {
			name  string
			opts  func(o *talospatch.Options)
			patch func(doc map[string]any)
		}{"endpoint " + e, func(o *talospatch.Options) { o.DiscoveryEndpoint = e }, func(doc map[string]any) {
			doc["cluster"].(map[string]any)["discovery"].(map[string]any)["registries"].(map[string]any)["service"].(map[string]any)["endpoint"] = e
		}})
	}
	// Where we are deliberately stricter than Talos's validator.
	stricter := map[string]string{
		"endpoint d.example.com:3000": "Talos parses \"d.example.com\" as the URL scheme; no discovery client can dial it",
	}
	for _, c := range cases {
		o := base
		c.opts(&o)
		ours := len(talospatch.Validate(o)) == 0
		_, err := applyPatch(cfg, edit(c.patch))
		talos := err == nil
		t.Logf("%-34s meshspan accepts %-5v Talos accepts %-5v %v", c.name, ours, talos, err)
		if ours && !talos {
			t.Errorf("%s: meshspan accepts what Talos refuses: %v", c.name, err)
		}
		if why, ok := stricter[c.name]; !ours && talos && !ok {
			t.Errorf("%s: meshspan refuses what Talos accepts", c.name)
		} else if ok && (ours || !talos) {
			t.Errorf("%s: expected meshspan to refuse and Talos to accept (%s)", c.name, why)
		}
	}
}

// TestDocumentFormNeedsNewerTalos: machinery v1.11.5 has no KubeSpanConfig
// document (it came in v1.13.0), so the document form is refused there; that
// is why talos_version chooses the form.
func TestDocumentFormNeedsNewerTalos(t *testing.T) {
	cfg, bundle := workerConfig(t)
	p, err := talospatch.Render(talospatch.Options{TalosVersion: "v1.13.0", ClusterID: bundle.Cluster.ID, ClusterSecret: bundle.Cluster.Secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := applyPatch(cfg, p.YAML); err == nil || !strings.Contains(err.Error(), "KubeSpanConfig") {
		t.Fatalf("machinery v1.11.5 took a KubeSpanConfig document (err %v); the version switch would be pointless", err)
	}
	if _, err := base64.URLEncoding.DecodeString(bundle.Cluster.ID); err != nil {
		t.Fatalf("Talos v1.11 cluster ID %q is not URL-safe base64: %v", bundle.Cluster.ID, err)
	}
}

func itoa(n int64) string {
	b, _ := yaml.Marshal(n)
	return strings.TrimSpace(string(b))
}
