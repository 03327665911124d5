// Package demo runs `make demo` in short form: meshspan-lab on a copy
// of examples/local-lab, with the real provider through Terraform, the real
// agents and discovery service in network namespaces. It needs root and
// TF_ACC=1 with TF_CLI_CONFIG_FILE pointing at the provider mirror, as
// `make test` sets up.
package demo

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

type env struct {
	agent, lab, terraform, dir string
}

func setup(t *testing.T) env {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC not set: the demo applies a Terraform configuration (make test sets it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the demo needs root for network namespaces")
	}
	e := env{terraform: os.Getenv("TF_ACC_TERRAFORM_PATH")}
	if e.terraform == "" {
		e.terraform = "terraform"
	}
	if os.Getenv("TF_CLI_CONFIG_FILE") == "" {
		t.Fatal("TF_CLI_CONFIG_FILE is not set: run `make install` and export TF_CLI_CONFIG_FILE=bin/terraformrc (make test does both)")
	}
	var err error
	if e.agent, err = agentbin.Path(); err != nil {
		t.Fatal(err)
	}
	if e.lab, err = agentbin.LabPath(); err != nil {
		t.Fatal(err)
	}
	// A copy, so the test has its own state and lock file.
	e.dir = t.TempDir()
	tfs, err := filepath.Glob("../../examples/local-lab/*.tf")
	if err != nil || len(tfs) == 0 {
		t.Fatalf("examples/local-lab has no .tf files (%v)", err)
	}
	for _, f := range tfs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	args = append([]string{"--agent", e.agent, "--dir", e.dir, "--terraform", e.terraform, "--live", "never"}, args...)
	c := exec.CommandContext(ctx, e.lab, args...)
	c.WaitDelay = 30 * time.Second
	return c
}

var (
	labIDRe    = regexp.MustCompile(`removing namespaces (demo-[0-9a-f]{6})-\*`)
	tfDirRe    = regexp.MustCompile(`(?m)^  working directory and state: (\S+) \(mode 0700, `)
	agentPIDRe = regexp.MustCompile(`(?m)^  \S+\s+pid (\d+)\s`)
)

// checkClean asserts that the run left no namespace and no agent behind.
func checkClean(t *testing.T, out string) {
	t.Helper()
	m := labIDRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no teardown line in the output:\n%s", out)
	}
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(list), m[1]+"-") {
		t.Errorf("namespaces %s-* left behind:\n%s", m[1], list)
	}
	for _, pm := range agentPIDRe.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(pm[1])
		if cmdline, err := os.ReadFile("/proc/" + pm[1] + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte("meshspan-lab-")) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("agent pid %d survived the teardown", pid)
		}
	}
}

func TestDemoShort(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := e.cmd(ctx, "--timeout", "60s", "--iperf-time", "1s").CombinedOutput()
	if err != nil {
		t.Fatalf("meshspan-lab: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"booted from bundle_script",
		"booted from user_data",
		"home LAN, behind NAT",
		"peer links up: 20/20",
		"mesh fully up: 5 nodes, 20 peer links",
		"PUBLIC KEY", // the agent's own status table
		"ping matrix over mesh addresses",
		"throughput over the mesh",
		"host firewall: outsider",
		"demo passed",
		"full Terraform log: ",
		"==> summary\n  terraform apply  ",
		"\n  ping matrix      20/20 answered, slowest ",
		"\n  throughput       ",
		"\n  result           passed\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// One line per Terraform step, with its time; their output is in the log.
	for _, re := range []string{`(?m)^  \S+ init +\d[\d.]*m?s  `, `(?m)^  \S+ apply +\d[\d.]*m?s  Apply complete! Resources: \d+ added`} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("no Terraform step line matching %s", re)
		}
	}
	for _, noise := range []string{"Initializing provider plugins", "will be created", ".terraform.lock.hcl"} {
		if strings.Contains(s, noise) {
			t.Errorf("output shows Terraform's own output (%q); it belongs in the log", noise)
		}
	}
	checkNoState(t, e.dir, s)
	if strings.Contains(s, "FAIL") {
		t.Errorf("a ping failed yet the demo passed:\n%s", s)
	}
	if t.Failed() {
		t.Logf("output:\n%s", s)
	}
	checkClean(t, s)
}

// checkNoState asserts the configuration directory has no state, lock file
// or .terraform, and the private working directory is gone.
func checkNoState(t *testing.T, dir, out string) {
	t.Helper()
	for _, f := range []string{"terraform.tfstate", "terraform.tfstate.backup", ".terraform.lock.hcl", ".terraform"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("the run left %s in the configuration directory", f)
		}
	}
	m := tfDirRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output names no Terraform working directory:\n%s", out)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("the Terraform working directory %s (state, cluster secret) is still there: %v", m[1], err)
	}
}

// TestDemoFailsWhenMeshIsLate: a mesh that is not up in time is a failure,
// and the teardown still runs.
func TestDemoFailsWhenMeshIsLate(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := e.cmd(ctx, "--timeout", "1ms").CombinedOutput()
	if err == nil {
		t.Fatalf("lab exited 0 with a 1ms mesh timeout:\n%s", out)
	}
	if !strings.Contains(string(out), "the mesh was not fully up after 1ms") {
		t.Errorf("output does not say why it failed:\n%s", out)
	}
	if !strings.Contains(string(out), "\n  mesh up          not reached\n") || !strings.Contains(string(out), "\n  result           FAILED: lab: the mesh was not fully up after 1ms\n") {
		t.Errorf("the summary does not show where it failed:\n%s", out)
	}
	checkClean(t, string(out))
	checkNoState(t, e.dir, string(out))
}

// TestDemoInterrupted: Ctrl-C while the agents run tears everything down
// and exits non-zero.
func TestDemoInterrupted(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "--timeout", "60s")
	pr, pw := io.Pipe()
	c.Stdout, c.Stderr = pw, pw
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	done := make(chan error, 1)
	go func() { done <- c.Wait(); pw.Close() }()
	sc := bufio.NewScanner(pr)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		all.WriteString(line + "\n")
		if !sent && strings.HasPrefix(line, "==> waiting for the mesh") {
			// Meanwhile the state lives in the private directory, 0700.
			if m := tfDirRe.FindStringSubmatch(all.String()); m == nil {
				t.Errorf("the output names no Terraform working directory")
			} else {
				for _, d := range []string{filepath.Dir(m[1]), m[1]} {
					if fi, err := os.Stat(d); err != nil {
						t.Errorf("work directory: %v", err)
					} else if fi.Mode().Perm() != 0o700 {
						t.Errorf("work directory %s has mode %v, want 0700", d, fi.Mode().Perm())
					}
				}
				if _, err := os.Stat(filepath.Join(m[1], "terraform.tfstate")); err != nil {
					t.Errorf("no state in the private working directory: %v", err)
				}
			}
			c.Process.Signal(os.Interrupt)
			sent = true
		}
	}
	err := <-done
	out := all.String()
	if !sent {
		t.Fatalf("the run never reached the mesh wait:\n%s", out)
	}
	if err == nil {
		t.Fatalf("lab exited 0 after Ctrl-C:\n%s", out)
	}
	if !strings.Contains(out, "interrupted") {
		t.Errorf("output does not say it was interrupted:\n%s", out)
	}
	checkClean(t, out)
	checkNoState(t, e.dir, out)
}

// TestDemoTerraformFails: a failing Terraform step prints its output, keeps
// the full log where it says, and leaves no state behind.
func TestDemoTerraformFails(t *testing.T) {
	e := setup(t)
	broken := "output \"broken\" {\n  value = meshspan_cluster_secrets.nonexistent.cluster_id\n}\n"
	if err := os.WriteFile(filepath.Join(e.dir, "broken.tf"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b, err := e.cmd(ctx).CombinedOutput()
	out := string(b)
	if err == nil {
		t.Fatalf("lab exited 0 with a broken configuration:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)^  Terraform log kept: (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output names no kept Terraform log:\n%s", out)
	}
	defer os.Remove(m[1])
	log, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatalf("kept log: %v", err)
	}
	for _, want := range []string{"meshspan_cluster_secrets.nonexistent", "failed after"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, want := range []string{"init -input=false", "meshspan_cluster_secrets.nonexistent"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("kept log lacks %q:\n%s", want, log)
		}
	}
	if !strings.Contains(out, "\n  terraform apply  FAILED\n") || !strings.Contains(out, "\n  result           FAILED: lab: ") {
		t.Errorf("the summary does not show the failure:\n%s", out)
	}
	checkNoState(t, e.dir, out)
}
