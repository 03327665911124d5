package talos

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/resources/network"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
)

// talosProviderBin is where `make talos-provider` (tools/build-talos-provider.sh)
// caches terraform-provider-talos v0.7.1.
func talosProviderBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("MESHSPAN_TALOS_PROVIDER")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache/meshspan/terraform-provider-talos-v0.7.1/terraform-provider-talos")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("terraform-provider-talos not built (%v): run `make talos-provider` (make test does)", err)
	}
	return p
}

// TestTalosHybridJourney applies examples/talos-hybrid for real with
// Terraform: Talos's own secrets and configs from terraform-provider-talos
// v0.7.1 (offline, through dev_overrides), meshspan's patch in their
// config_patches, meshspan machine configs from the same secrets, and the
// Hetzner Cloud firewall against the loopback stand-in. Then machinery
// parses and validates the Talos configs Terraform produced.
func TestTalosHybridJourney(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC not set: the journey applies with real Terraform (make test sets it)")
	}
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		tf = "/usr/local/bin/terraform"
	}
	mirror, err := filepath.Abs("../../bin/mirror")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mirror, "registry.terraform.io/meshspan/meshspan")); err != nil {
		t.Fatalf("the meshspan provider is not in bin/mirror (%v): run `make install`", err)
	}
	talosBin := talosProviderBin(t)

	fake := hcloudfake.New(hcloudfake.Options{})
	talosServer := fake.AddServer("talos-cp-1", map[string]string{"mesh": "true"})
	meshServer := fake.AddServer("hetzner-1", map[string]string{"mesh": "true"})
	other := fake.AddServer("unrelated", map[string]string{"role": "db"})
	api, err := hcloudfake.Start(fake, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	work := t.TempDir()
	tfs, _ := filepath.Glob("../../examples/talos-hybrid/*.tf")
	if len(tfs) < 3 {
		t.Fatalf("examples/talos-hybrid has %d .tf files", len(tfs))
	}
	for _, f := range tfs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Talos through dev_overrides (no registry), meshspan from make
	// install's filesystem mirror. `terraform init` still looks the
	// overridden provider up, so a second mirror holds a link to the same
	// binary for it.
	talosMirror := filepath.Join(work, "talos-mirror")
	platform := filepath.Join(talosMirror, "registry.terraform.io/siderolabs/talos/0.7.1", runtime.GOOS+"_"+runtime.GOARCH)
	if err := os.MkdirAll(platform, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(talosBin, filepath.Join(platform, "terraform-provider-talos_v0.7.1")); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(work, "terraformrc")
	if err := os.WriteFile(rc, []byte(`provider_installation {
  dev_overrides {
    "registry.terraform.io/siderolabs/talos" = "`+filepath.Dir(talosBin)+`"
  }
  filesystem_mirror {
    path    = "`+mirror+`"
    include = ["registry.terraform.io/meshspan/*"]
  }
  filesystem_mirror {
    path    = "`+talosMirror+`"
    include = ["registry.terraform.io/siderolabs/talos"]
  }
  direct {
    exclude = ["registry.terraform.io/meshspan/*", "registry.terraform.io/siderolabs/*"]
  }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	const discoveryURL = "https://discovery.example.com:3000/"
	vars := `hcloud_token = "` + fake.Token() + `"
hcloud_endpoint = "` + api.Endpoint + `"
discovery_endpoint = "` + discoveryURL + `"
`
	if err := os.WriteFile(filepath.Join(work, "terraform.tfvars"), []byte(vars), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(tf, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("terraform %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return []byte(stdout.String())
	}
	run("init", "-input=false", "-no-color")
	run("apply", "-input=false", "-auto-approve", "-no-color")
	destroyed := false
	defer func() {
		if !destroyed {
			cmd := exec.Command(tf, "destroy", "-auto-approve", "-no-color")
			cmd.Dir, cmd.Env = work, append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc)
			_ = cmd.Run()
		}
	}()

	var out map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(run("output", "-json"), &out); err != nil {
		t.Fatal(err)
	}
	var talosConfigs, meshConfigs, userData map[string]string
	var prefix, form string
	for name, dst := range map[string]any{"talos_machine_configuration": &talosConfigs, "meshspan_machine_config": &meshConfigs,
		"meshspan_user_data": &userData, "mesh_prefix": &prefix, "talos_patch_form": &form} {
		if err := json.Unmarshal(out[name].Value, dst); err != nil {
			t.Fatalf("output %s: %v", name, err)
		}
	}
	if form != "machine.network.kubespan" {
		t.Fatalf("talos_patch_form = %q for Talos v1.9", form)
	}

	// Every Talos config parses and validates with machinery, has KubeSpan
	// on and discovery at our service.
	var clusterID, clusterSecret string
	for _, kind := range []string{"controlplane", "worker"} {
		raw, ok := talosConfigs[kind]
		if !ok {
			t.Fatalf("no %s config in %v", kind, slices.Collect(mapKeys(talosConfigs)))
		}
		cfg, err := configloader.NewFromBytes([]byte(raw))
		if err != nil {
			t.Fatalf("machinery cannot parse the %s config terraform-provider-talos rendered: %v", kind, err)
		}
		if _, err := cfg.Validate(metal{}); err != nil {
			t.Fatalf("machinery refuses the %s config: %v", kind, err)
		}
		ks := cfg.Machine().Network().KubeSpan()
		svc := cfg.Cluster().Discovery().Registries().Service()
		if !ks.Enabled() || !cfg.Cluster().Discovery().Enabled() || svc.Endpoint() != discoveryURL || ks.MTU() != 1420 ||
			strings.Join(ks.Filters().Endpoints(), ",") != "0.0.0.0/0,!10.0.0.0/8,::/0" {
			t.Fatalf("%s config: kubespan %v discovery %v endpoint %q mtu %d filters %v", kind, ks.Enabled(),
				cfg.Cluster().Discovery().Enabled(), svc.Endpoint(), ks.MTU(), ks.Filters().Endpoints())
		}
		if clusterID == "" {
			clusterID, clusterSecret = cfg.Cluster().ID(), cfg.Cluster().Secret()
		} else if cfg.Cluster().ID() != clusterID || cfg.Cluster().Secret() != clusterSecret {
			t.Fatalf("controlplane and worker configs differ in cluster ID or secret")
		}
	}
	if got := network.ULAPrefix(clusterID, network.ULAKubeSpan).String(); got != prefix {
		t.Fatalf("mesh_prefix %s, Talos derives %s from the cluster ID", prefix, got)
	}

	// The meshspan nodes carry the same identity and the same service.
	if len(meshConfigs) != 2 {
		t.Fatalf("meshspan configs for %v", slices.Collect(mapKeys(meshConfigs)))
	}
	for name, raw := range meshConfigs {
		c, err := config.Parse([]byte(raw))
		if err != nil {
			t.Fatalf("%s: the agent refuses its config: %v", name, err)
		}
		if c.Cluster.ID != clusterID || c.Cluster.Secret != clusterSecret {
			t.Fatalf("%s: cluster ID/secret differ from the Talos nodes'", name)
		}
		if !slices.Equal(c.Discovery.Endpoints, []string{discoveryURL}) || c.WireGuard.ListenPort != 51820 {
			t.Fatalf("%s: discovery %v listen port %d", name, c.Discovery.Endpoints, c.WireGuard.ListenPort)
		}
		if !strings.HasPrefix(userData[name], "#cloud-config") {
			t.Fatalf("%s: user_data is not cloud-config", name)
		}
	}

	// One firewall, only WireGuard in, on every mesh server of both kinds.
	fws := fake.Firewalls()
	if len(fws) != 1 {
		t.Fatalf("%d firewalls", len(fws))
	}
	for _, r := range fws[0].Rules {
		if r.Direction == "in" && (r.Protocol != "udp" || r.Port == nil || *r.Port != "51820") {
			t.Fatalf("inbound rule beyond WireGuard: %+v", r)
		}
	}
	if !slices.Contains(fws[0].Selectors, "mesh=true") {
		t.Fatalf("firewall applied to %v / %v, want label selector mesh=true", fws[0].ServerIDs, fws[0].Selectors)
	}
	// As the API reports it: the firewall is on both mesh servers (Talos
	// and meshspan) and not on the other one.
	for id, want := range map[int64]bool{talosServer: true, meshServer: true, other: false} {
		if got := serverHasFirewall(t, api.Endpoint, fake.Token(), id, fws[0].ID); got != want {
			t.Fatalf("server %d has the mesh firewall: %v, want %v", id, got, want)
		}
	}

	// A second plan is empty: nothing drifts.
	cmd := exec.Command(tf, "plan", "-detailed-exitcode", "-input=false", "-no-color")
	cmd.Dir, cmd.Env = work, append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second plan is not empty: %v\n%s", err, b)
	}

	run("destroy", "-auto-approve", "-no-color")
	destroyed = true
	if n := len(fake.Firewalls()); n != 0 {
		t.Fatalf("%d firewalls left after destroy", n)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// serverHasFirewall asks the API whether firewall fw applies to server id.
func serverHasFirewall(t *testing.T, endpoint, token string, id, fw int64) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, endpoint+"/servers/"+strconv.FormatInt(id, 10), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Server struct {
			PublicNet struct {
				Firewalls []struct {
					ID int64 `json:"id"`
				} `json:"firewalls"`
			} `json:"public_net"`
		} `json:"server"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, f := range body.Server.PublicNet.Firewalls {
		if f.ID == fw {
			return true
		}
	}
	return false
}
