package demo

import (
	"context"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
// running sshd) apply for real, and a second `run --all plan` has nothing
// to do.
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
	env := []string{
		"TG_TF_PATH=" + tf,
		"TG_NON_INTERACTIVE=true",
		"MESHSPAN_AGENT_URL=" + url,
		"MESHSPAN_AGENT_SHA256=" + sum,
	}
	// The cloud units need the hcloud and digitalocean providers, which
	// cannot be installed here.
	only := []string{"--queue-exclude-dir", "hetzner", "--queue-exclude-dir", "digitalocean"}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tgRun := func(args ...string) string {
		t.Helper()
		args = append(append([]string{"run", "--all"}, only...), args...)
		out, err := l.inAdmin(ctx, work, env, tg, args...)
		if err != nil {
			t.Fatalf("terragrunt %s: %v\n%s\nsshd log of n1:\n%s", strings.Join(args, " "), err, out, hosts["n1"].log())
		}
		return out
	}
	out := tgRun("apply")
	for _, want := range []string{"meshspan_cluster_secrets.this: Creation complete", "terraform_data.bundle[\"n1\"]: Creation complete", "terraform_data.bundle[\"n2\"]: Creation complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("terragrunt run --all apply output lacks %q:\n%s", want, out)
		}
	}
	secret := stateSecret(t, filepath.Join(work, ".state", "cluster"))
	for name, h := range hosts {
		checkBundled(t, h, name, sum, secret)
	}

	out = tgRun("plan", "-no-color")
	if n := strings.Count(out, "No changes."); n != 2 {
		t.Errorf("second run --all plan: %d units say \"No changes.\", want 2 (cluster, metal):\n%s", n, out)
	}
	if m := regexp.MustCompile(`Plan: \d+ to add`).FindString(out); m != "" {
		t.Errorf("second run --all plan wants changes (%s):\n%s", m, out)
	}
}
