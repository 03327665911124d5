package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// planTarget is the most a plan of 100 machine configs may take above an
// empty plan (shared/design/targets.md).
const planTarget = 2 * time.Second

// BenchmarkPlan100MachineConfigs times `terraform plan` of 100
// meshspan_machine_config data sources against `terraform plan` of an empty
// configuration, both with the real terraform binary and the provider that
// `make install` put in bin/mirror (run it through `make bench`).
func BenchmarkPlan100MachineConfigs(b *testing.B) {
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		tf = "/usr/local/bin/terraform"
	}
	rc := os.Getenv("TF_CLI_CONFIG_FILE")
	if rc == "" {
		b.Fatal("TF_CLI_CONFIG_FILE is not set; run `make bench` (make install writes bin/terraformrc with the provider mirror)")
	}
	if _, err := os.Stat(rc); err != nil {
		b.Fatalf("TF_CLI_CONFIG_FILE=%s: %v; run `make install` first", rc, err)
	}
	empty := planDir(b, tf, 0)
	full := planDir(b, tf, 100)
	var tEmpty, tFull time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tEmpty += timePlan(b, tf, empty)
		tFull += timePlan(b, tf, full)
	}
	b.StopTimer()
	n := time.Duration(b.N)
	perEmpty, perFull := tEmpty/n, tFull/n
	delta := perFull - perEmpty
	b.ReportMetric(perEmpty.Seconds(), "empty-s/plan")
	b.ReportMetric(perFull.Seconds(), "100-configs-s/plan")
	b.ReportMetric(delta.Seconds(), "delta-s/plan")
	verdict := "target met"
	if delta > planTarget {
		verdict = "TARGET MISSED"
	}
	b.Logf("terraform plan: empty %v, 100 machine configs %v, difference %v (target <= %v: %s)",
		perEmpty.Round(time.Millisecond), perFull.Round(time.Millisecond), delta.Round(time.Millisecond), planTarget, verdict)
	if delta > planTarget {
		b.Errorf("100 machine configs add %v to a plan; the target is at most %v", delta, planTarget)
	}
}

// planDir writes and initialises a configuration with n machine configs.
func planDir(b *testing.B, tf string, n int) string {
	b.Helper()
	dir := b.TempDir()
	var cfg strings.Builder
	cfg.WriteString(`terraform {
  required_providers {
    meshspan = { source = "meshspan/meshspan" }
  }
}
provider "meshspan" {}
`)
	if n > 0 {
		// Literal secrets, so every data source is read during the plan
		// (with a secrets resource in the same plan they would be deferred).
		fmt.Fprintf(&cfg, `
locals {
  nodes = toset([for i in range(%d) : format("node-%%03d", i)])
}

data "meshspan_machine_config" "node" {
  for_each            = local.nodes
  cluster_id          = %q
  cluster_secret      = %q
  node_name           = each.key
  platform            = "hcloud"
  labels              = { "topology.kubernetes.io/region" = "fsn1", role = "worker" }
  discovery_endpoints = ["https://discovery.example.com/"]
  endpoint_filters    = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
  agent_install = {
    url    = "https://example.com/meshspan-agent"
    sha256 = "%s"
  }
  firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = "51820" },
      { name = "k8s-api", protocol = "tcp", port = "6443", sources = ["100.64.0.0/10"] },
    ]
  }
}

output "sizes" {
  value = { for k, v in data.meshspan_machine_config.node : k => nonsensitive(length(v.user_data)) }
}
`, n, testClusterID, testClusterSecret, strings.Repeat("ab", 32))
	}
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	benchRun(b, dir, tf, "init", "-input=false", "-no-color")
	return dir
}

func timePlan(b *testing.B, tf, dir string) time.Duration {
	b.Helper()
	start := time.Now()
	out := benchRun(b, dir, tf, "plan", "-input=false", "-lock=false", "-no-color")
	d := time.Since(start)
	if !strings.Contains(out, "No changes") && !strings.Contains(out, "Changes to Outputs") {
		b.Fatalf("unexpected plan output:\n%s", out)
	}
	return d
}

func benchRun(b *testing.B, dir, name string, args ...string) string {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
