package demo

import (
	"context"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/dofake"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
)

// terragruntVersion is what tools/terragrunt/go.mod pins and `make test`
// builds into the tool cache.
const terragruntVersion = "v0.77.22"

// terragruntBin is $MESHSPAN_TERRAGRUNT (make test sets it, and then it
// must work), else terragrunt on PATH or in the tool cache; the test is
// skipped when there is none.
func terragruntBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHSPAN_TERRAGRUNT"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("MESHSPAN_TERRAGRUNT=%s: %v (make test builds it: tools/build-terragrunt.sh)", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("terragrunt"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache", "meshspan", "terragrunt-"+terragruntVersion, "terragrunt")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Skip("no terragrunt: make test builds it (tools/build-terragrunt.sh), or set MESHSPAN_TERRAGRUNT")
	return ""
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			// What a run left in the example (state, caches) is not the example.
			if n := d.Name(); n == ".terragrunt-cache" || n == ".terraform" || n == ".state" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTerragruntJourney runs examples/terragrunt with Terragrunt: the
// cluster unit and the metal unit (bundle_script over SSH to two hosts
// running sshd) apply for real; so do the cloud units against the Hetzner
// and DigitalOcean API stand-ins, less the hcloud_server and
// digitalocean_droplet/tag resources, whose providers cannot be installed
// here. A second `run --all plan` then has nothing to do.
func TestTerragruntJourney(t *testing.T) {
	tf := journeyEnv(t)
	tg := terragruntBin(t)
	subnet := netip.MustParsePrefix("203.0.113.0/24")
	l := newSSHLab(t, subnet)
	agent := agentBin(t)
	sum := fileSum(t, agent)
	url := l.serve(subnet, agent)
	// examples/terragrunt/metal's default hosts.
	hosts := map[string]*sshHost{
		"n1": l.host("n1", netip.MustParseAddr("203.0.113.11"), ""),
		"n2": l.host("n2", netip.MustParseAddr("203.0.113.12"), ""),
	}

	work := filepath.Join(t.TempDir(), "terragrunt")
	copyTree(t, "../../examples/terragrunt", work)
	hc, do := cloudStandIns(t, l, work)
	env := []string{
		"HCLOUD_ENDPOINT=" + hc.url, "HCLOUD_TOKEN=" + hc.token,
		"DIGITALOCEAN_API_URL=" + do.url, "DIGITALOCEAN_TOKEN=" + do.token,
		"TG_TF_PATH=" + tf,
		"TG_NON_INTERACTIVE=true",
		"MESHSPAN_AGENT_URL=" + url,
		"MESHSPAN_AGENT_SHA256=" + sum,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tgRun := func(args ...string) string {
		t.Helper()
		args = append([]string{"run", "--all"}, args...)
		out, err := l.inAdmin(ctx, work, env, tg, args...)
		if err != nil {
			t.Fatalf("terragrunt %s: %v\n%s\nsshd log of n1:\n%s", strings.Join(args, " "), err, out, hosts["n1"].log())
		}
		return out
	}
	out := tgRun("apply")
	for _, want := range []string{
		"meshspan_cluster_secrets.this: Creation complete",
		"terraform_data.bundle[\"n1\"]: Creation complete",
		"terraform_data.bundle[\"n2\"]: Creation complete",
		"meshspan_hcloud_firewall.mesh: Creation complete",
		"meshspan_digitalocean_firewall.mesh: Creation complete",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("terragrunt run --all apply output lacks %q:\n%s", want, out)
		}
	}
	secret := stateSecret(t, filepath.Join(work, ".state", "cluster"))
	for name, h := range hosts {
		checkBundled(t, h, name, sum, secret)
	}

	out = tgRun("plan", "-no-color")
	if n := strings.Count(out, "No changes."); n != 4 {
		t.Errorf("second run --all plan: %d units say \"No changes.\", want 4:\n%s", n, out)
	}
	if fws := hc.fake.Firewalls(); len(fws) != 1 || fws[0].Name != "meshspan" {
		t.Errorf("Hetzner stand-in has firewalls %+v, want one named meshspan", fws)
	}
	if fws := do.fake.Firewalls(); len(fws) != 1 || fws[0].Name != "meshspan" {
		t.Errorf("DigitalOcean stand-in has firewalls %+v, want one named meshspan", fws)
	}
	if m := regexp.MustCompile(`Plan: \d+ to add`).FindString(out); m != "" {
		t.Errorf("second run --all plan wants changes (%s):\n%s", m, out)
	}
}

type standIn[F any] struct {
	fake       F
	url, token string
}

// cloudStandIns serves the Hetzner Cloud and DigitalOcean API stand-ins on
// the admin namespace's loopback, where Terraform runs, and trims the cloud
// units in work to what the meshspan provider manages: their machine
// configs and firewalls. The servers and droplets the units would create
// are made in the stand-ins instead (labels and tag as the units set).
func cloudStandIns(t *testing.T, l *sshLab, work string) (standIn[*hcloudfake.Fake], standIn[*dofake.Server]) {
	t.Helper()
	serve := func(h http.Handler) string {
		var ln net.Listener
		if err := l.admin.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return "http://" + ln.Addr().String()
	}
	hc := standIn[*hcloudfake.Fake]{fake: hcloudfake.New(hcloudfake.Options{Token: "test-token"}), token: "test-token"}
	hc.url = serve(hc.fake) + "/v1"
	hc.fake.AddServer("hetzner-1", map[string]string{"mesh": "meshspan"})
	hc.fake.AddServer("hetzner-2", map[string]string{"mesh": "meshspan"})
	do := standIn[*dofake.Server]{fake: dofake.New(dofake.Options{Token: "dofake-token"}), token: "dofake-token"}
	do.url = serve(do.fake)
	do.fake.AddDroplet(101, "do-1")
	do.fake.AddTag("meshspan")

	hetzner := keepBlocks(t, filepath.Join(work, "hetzner", "main.tf"),
		"variable servers", "data meshspan_machine_config node", "resource meshspan_hcloud_firewall mesh")
	writeFile(t, filepath.Join(work, "hetzner", "main.tf"), hetzner.Bytes())
	docean := keepBlocks(t, filepath.Join(work, "digitalocean", "main.tf"),
		"variable droplets", "data meshspan_machine_config node", "resource meshspan_digitalocean_firewall mesh")
	for _, b := range docean.Body().Blocks() {
		if b.Type() == "resource" && b.Body().GetAttribute("tags") != nil {
			// Was digitalocean_tag.mesh.name.
			b.Body().SetAttributeValue("tags", cty.ListVal([]cty.Value{cty.StringVal("meshspan")}))
		}
	}
	writeFile(t, filepath.Join(work, "digitalocean", "main.tf"), docean.Bytes())
	return hc, do
}
