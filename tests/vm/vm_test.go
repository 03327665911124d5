// Package vm boots real Debian machines under QEMU from the user_data that
// `terraform apply` rendered for examples/local-lab, next to namespace nodes,
// and checks the path every real user takes: cloud-init installs the agent,
// systemd starts it, the agent runs kernel WireGuard and the host firewall
// on a stock distro. It needs root; `make test` runs it (so does CI).
package vm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
	"github.com/meshspan/terraform-provider-meshspan/internal/vmlab"
)

// logWriter sends each line to t.Log as it comes, so a long boot shows
// progress under -v and the whole story on failure.
type logWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
	all bytes.Buffer
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			break
		}
		w.t.Log(strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

type env struct {
	agent, terraform, dir string
}

func setup(t *testing.T) env {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the VM suite boots Debian VMs under QEMU (minutes)")
	}
	if os.Geteuid() != 0 {
		t.Skip("tests/vm needs root: network namespaces, tap devices and debootstrap (make test runs it as root in CI)")
	}
	if err := vmlab.Preflight(); err != nil {
		t.Fatal(err)
	}
	e := env{terraform: os.Getenv("TF_ACC_TERRAFORM_PATH")}
	if e.terraform == "" {
		e.terraform = "terraform"
	}
	if os.Getenv("TF_CLI_CONFIG_FILE") == "" {
		t.Fatal("TF_CLI_CONFIG_FILE is not set: run `make install` and export TF_CLI_CONFIG_FILE=$PWD/bin/terraformrc (make test does both)")
	}
	var err error
	if e.agent, err = agentbin.Path(); err != nil {
		t.Fatal(err)
	}
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

// TestMixedMesh: two Debian VMs on kernel WireGuard and three namespace
// nodes on userspace WireGuard, with discovery, one of them behind NAT.
// The lab itself asserts the back ends, wg show, cloud-init, the unit's
// READY, the ping matrix, a checked TCP transfer between every pair and
// the host firewall; checks beyond it run in VMCheck.
func TestMixedMesh(t *testing.T) {
	e := setup(t)
	if err := os.WriteFile(filepath.Join(e.dir, "relay_override.tf"), []byte(relayOverride), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := &logWriter{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	// On top of the lab's own checks (vms.go): every peer up on the idle
	// mesh; the host firewall's table surviving nftables.service and a
	// hand flush, and still blocking an outsider afterwards while a member
	// gets through; a reboot, then `systemctl stop`; fail closed with a
	// member stopped; two NATed nodes relayed through a VM.
	vmChecks := []func(context.Context, *lab.VMLab) error{idleMesh, nftRecovery(), firewallPorts, rebootAndStop, failClosed(),
		kernelRelay(e.agent, t.TempDir())}
	err := lab.Run(ctx, lab.Options{
		Dir: e.dir, Terraform: e.terraform, Agent: e.agent, Out: out,
		UpTimeout: 3 * time.Minute, IperfTime: time.Second, VMs: 2,
		VMCheck: func(ctx context.Context, l *lab.VMLab) error {
			for _, c := range vmChecks {
				if err := c(ctx, l); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatalf("lab with 2 VMs: %v", err)
	}
	text := out.String()
	for _, want := range []string{"kernel WireGuard", "cloud-init done", "TCP over the mesh", "timings: image",
		"after `systemctl restart nftables.service`", "after `nft flush ruleset`", "fail closed (kernel path)", "reboot: ", "systemctl stop meshspan-agent: ", "refused to outsider", "idle mesh: ", "kernel relay: "} {
		if !strings.Contains(text, want) {
			t.Errorf("lab output lacks %q", want)
		}
	}
	t.Logf("suite timing: TestMixedMesh took %v", time.Since(start).Round(time.Second))
}
