package demo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// journeyEnv skips unless the provider mirror is set up (make test), and
// returns the terraform binary.
func journeyEnv(t *testing.T) string {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC not set: the journey applies Terraform with the provider from make install's mirror (make test sets it)")
	}
	if os.Getenv("TF_CLI_CONFIG_FILE") == "" {
		t.Fatal("TF_CLI_CONFIG_FILE is not set: run `make install` and export TF_CLI_CONFIG_FILE=bin/terraformrc")
	}
	return terraformBin(t)
}

// keepBlocks parses an example file and keeps only the top-level blocks
// named in keep ("resource meshspan_cluster_secrets this", "locals", ...):
// the parts of a journey that need no cloud provider, exactly as written.
func keepBlocks(t *testing.T, path string, keep ...string) *hclwrite.File {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclwrite.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s: %v", path, diags)
	}
	want := map[string]bool{}
	for _, k := range keep {
		want[k] = true
	}
	found := map[string]bool{}
	for _, b := range f.Body().Blocks() {
		id := strings.Join(append([]string{b.Type()}, b.Labels()...), " ")
		if want[id] {
			found[id] = true
			continue
		}
		f.Body().RemoveBlock(b)
	}
	for k := range want {
		if !found[k] {
			t.Fatalf("%s has no block %q: the test follows the example, update both", path, k)
		}
	}
	return f
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkBundled checks what a bundle_script run over SSH left on a host: the
// config (0600) for this node, the agent with the pinned sha256, the unit,
// and the systemctl calls that start it.
func checkBundled(t *testing.T, h *sshHost, node, agentSum, secret string) {
	t.Helper()
	cfg, fi, err := h.file("/etc/meshspan/config.yaml")
	if err != nil {
		t.Fatalf("%s: no config: %v\nsshd log:\n%s", h.name, err, h.log())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: /etc/meshspan/config.yaml has mode %v, want 0600", h.name, fi.Mode().Perm())
	}
	c, err := config.Parse(cfg)
	if err != nil {
		t.Fatalf("%s: the config the bundle wrote does not parse: %v", h.name, err)
	}
	if c.Node.Name != node {
		t.Errorf("%s: config is for node %q, want %q", h.name, c.Node.Name, node)
	}
	if secret != "" && c.Cluster.Secret != secret {
		t.Errorf("%s: config carries another cluster secret", h.name)
	}
	bin, _, err := h.file("/usr/local/bin/meshspan-agent")
	if err != nil {
		t.Fatalf("%s: agent not installed: %v", h.name, err)
	}
	if s := sha256.Sum256(bin); hex.EncodeToString(s[:]) != agentSum {
		t.Errorf("%s: installed agent has another sha256", h.name)
	}
	if _, _, err := h.file("/etc/systemd/system/meshspan-agent.service"); err != nil {
		t.Errorf("%s: unit not installed: %v", h.name, err)
	}
	if got, want := h.systemctl(), "daemon-reload\nenable meshspan-agent.service\nrestart meshspan-agent.service\n"; got != want {
		t.Errorf("%s: systemctl calls\n%s\nwant\n%s", h.name, got, want)
	}
}

// TestHybridMetalOverSSH applies the bare-metal part of examples/hybrid
// (cluster secrets, machine configs, terraform_data + remote-exec) against
// two hosts running sshd, then checks a second plan has nothing to do.
func TestHybridMetalOverSSH(t *testing.T) {
	tf := journeyEnv(t)
	subnet := netip.MustParsePrefix("203.0.113.0/24")
	l := newSSHLab(t, subnet)
	agent := agentBin(t)
	sum := fileSum(t, agent)
	url := l.serve(subnet, agent)
	hosts := map[string]*sshHost{
		"metal-1": l.host("metal-1", netip.MustParseAddr("203.0.113.31"), ""),
		"metal-2": l.host("metal-2", netip.MustParseAddr("203.0.113.32"), ""),
	}

	work := t.TempDir()
	main := keepBlocks(t, "../../examples/hybrid/main.tf",
		"resource meshspan_cluster_secrets this", "locals", "data meshspan_machine_config metal", "resource terraform_data metal")
	// The release URL is replaced by the admin namespace's mirror.
	for _, b := range main.Body().Blocks() {
		if b.Type() == "locals" {
			if b.Body().GetAttribute("agent_install") == nil {
				t.Fatal("examples/hybrid/main.tf: locals has no agent_install")
			}
			b.Body().SetAttributeValue("agent_install", cty.ObjectVal(map[string]cty.Value{"url": cty.StringVal(url), "sha256": cty.StringVal(sum)}))
		}
	}
	writeFile(t, filepath.Join(work, "main.tf"), main.Bytes())
	outputs := keepBlocks(t, "../../examples/hybrid/outputs.tf", "output mesh_prefix")
	writeFile(t, filepath.Join(work, "outputs.tf"), outputs.Bytes())
	vars, err := os.ReadFile("../../examples/hybrid/variables.tf")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(work, "variables.tf"), vars)
	writeFile(t, filepath.Join(work, "versions.tf"), []byte(meshspanRequirement))
	tfvars, _ := json.Marshal(map[string]any{
		"hcloud_token":       "unused",
		"digitalocean_token": "unused",
		"ssh_key_public":     "unused",
		"agent_sha256":       sum,
		"bare_metal": map[string]any{
			"metal-1": map[string]string{"address": "203.0.113.31", "private_key": l.key},
			"metal-2": map[string]string{"address": "203.0.113.32", "private_key": l.key},
		},
	})
	writeFile(t, filepath.Join(work, "terraform.tfvars.json"), tfvars)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"init", "-input=false", "-no-color"},
		{"apply", "-input=false", "-auto-approve", "-no-color"},
	} {
		if out, err := l.inAdmin(ctx, work, nil, tf, args...); err != nil {
			t.Fatalf("terraform %s: %v\n%s\nsshd log of metal-1:\n%s", args[0], err, out, hosts["metal-1"].log())
		}
	}
	secret := stateSecret(t, work)
	for name, h := range hosts {
		checkBundled(t, h, name, sum, secret)
	}
	out, err := l.inAdmin(ctx, work, nil, tf, "plan", "-input=false", "-no-color", "-detailed-exitcode")
	if err != nil {
		t.Errorf("a second plan is not empty (%v):\n%s", err, out)
	}
}

// stateSecret reads the cluster secret from the local state.
func stateSecret(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "terraform.tfstate"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Resources []struct {
			Type      string `json:"type"`
			Instances []struct {
				Attributes map[string]any `json:"attributes"`
			} `json:"instances"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Resources {
		if r.Type == "meshspan_cluster_secrets" && len(r.Instances) == 1 {
			s, _ := r.Instances[0].Attributes["cluster_secret"].(string)
			return s
		}
	}
	t.Fatal("no meshspan_cluster_secrets in the state")
	return ""
}

// TestEphemeralMetalOverSSH applies the ephemeral machine config example:
// secrets from ephemeral variables, the bundle run by remote-exec (the
// ssh-agent's key) on a host whose image has the agent preinstalled, and
// the secret nowhere in the state.
func TestEphemeralMetalOverSSH(t *testing.T) {
	tf := journeyEnv(t)
	if !ephemeralSupported(t, tf) {
		t.Skip("ephemeral resources need Terraform >= 1.10 or OpenTofu >= 1.11")
	}
	l := newSSHLab(t, netip.MustParsePrefix("198.51.100.0/24"))
	agent := agentBin(t)
	h := l.host("office-1", netip.MustParseAddr("198.51.100.20"), agent)

	work := t.TempDir()
	ex, err := os.ReadFile("../../examples/ephemeral-resources/meshspan_machine_config/ephemeral-resource.tf")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(work, "main.tf"), ex)
	writeFile(t, filepath.Join(work, "versions.tf"), []byte(meshspanRequirement))
	id, secret := make([]byte, 32), make([]byte, 32)
	rand.Read(id)
	rand.Read(secret)
	env := []string{
		"TF_VAR_cluster_id=" + base64.StdEncoding.EncodeToString(id),
		"TF_VAR_cluster_secret=" + base64.StdEncoding.EncodeToString(secret),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"init", "-input=false", "-no-color"},
		{"apply", "-input=false", "-auto-approve", "-no-color"},
	} {
		if out, err := l.inAdmin(ctx, work, env, tf, args...); err != nil {
			t.Fatalf("terraform %s: %v\n%s\nsshd log:\n%s", args[0], err, out, h.log())
		}
	}
	checkBundled(t, h, "office-1", fileSum(t, agent), base64.StdEncoding.EncodeToString(secret))
	state, err := os.ReadFile(filepath.Join(work, "terraform.tfstate"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{base64.StdEncoding.EncodeToString(secret), base64.StdEncoding.EncodeToString(id)} {
		if strings.Contains(string(state), s) {
			t.Errorf("the state holds a cluster secret value:\n%s", state)
		}
	}
	if out, err := l.inAdmin(ctx, work, env, tf, "plan", "-input=false", "-no-color", "-detailed-exitcode"); err != nil {
		t.Errorf("a second plan is not empty (%v):\n%s", err, out)
	}
}

func ephemeralSupported(t *testing.T, tf string) bool {
	out, err := exec.Command(tf, "version", "-json").Output()
	if err != nil {
		t.Fatalf("%s version: %v", tf, err)
	}
	var v struct {
		Version string `json:"terraform_version"`
	}
	json.Unmarshal(out, &v)
	var major, minor int
	if _, err := fmt.Sscanf(v.Version, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("%s version %q: %v", tf, v.Version, err)
	}
	min := 10 // Terraform 1.10
	if strings.Contains(filepath.Base(tf), "tofu") {
		min = 11
	}
	return major > 1 || major == 1 && minor >= min
}
