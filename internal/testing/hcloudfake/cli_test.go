package hcloudfake

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// The official hcloud CLI (Debian package hcloud-cli) runs the seed's flow
// against the stand-in: create with --rules-file from stdin, add a rule,
// apply to a server by name, describe as JSON, then delete after detaching.
func TestHcloudFakeOfficialCLI(t *testing.T) {
	bin, err := exec.LookPath("hcloud")
	if err != nil {
		t.Fatal("the hcloud CLI is not installed: apt-get install -y --no-install-recommends hcloud-cli")
	}
	r, _ := start(t, Options{})
	r.AddServer("talos-worker-1", map[string]string{"role": "worker"})
	home := t.TempDir()
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"HOME=" + home, "HCLOUD_ENDPOINT=" + r.Endpoint, "HCLOUD_TOKEN=" + r.Token(), "HCLOUD_POLL_INTERVAL=50ms"}
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hcloud %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(`[
  {
    "description": "Allow KubeSpan Traffic",
    "direction": "in",
    "port": "51820",
    "protocol": "udp",
    "source_ips": ["0.0.0.0/0", "::/0"]
  }
]`, "firewall", "create", "--name", "talos-workers", "--rules-file", "-")
	run("", "firewall", "add-rule", "talos-workers", "--direction", "in", "--protocol", "tcp", "--port", "6443", "--source-ips", "100.64.0.0/10")
	run("", "firewall", "apply-to-resource", "talos-workers", "--type", "server", "--server", "talos-worker-1")

	var fw struct {
		Rules     []FirewallRule `json:"rules"`
		AppliedTo []struct {
			Type string `json:"type"`
		} `json:"applied_to"`
	}
	if err := json.Unmarshal([]byte(run("", "firewall", "describe", "talos-workers", "-o", "json")), &fw); err != nil {
		t.Fatal(err)
	}
	if len(fw.Rules) != 2 || *fw.Rules[0].Port != "51820" || strings.Join(fw.Rules[0].SourceIPs, ",") != "0.0.0.0/0,::/0" || len(fw.AppliedTo) != 1 {
		t.Fatalf("described firewall = %+v", fw)
	}
	if out := run("", "firewall", "list", "-o", "noheader"); !strings.Contains(out, "talos-workers") {
		t.Fatalf("firewall list = %q", out)
	}
	run("", "firewall", "remove-from-resource", "talos-workers", "--type", "server", "--server", "talos-worker-1")
	run("", "firewall", "delete", "talos-workers")
	if n := len(r.Firewalls()); n != 0 {
		t.Fatalf("%d firewalls left after hcloud firewall delete", n)
	}
}
