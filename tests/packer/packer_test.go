// Package packer runs the examples/packer journey for real: Packer's qemu
// builder bakes meshspan-agent into a Debian image (on a lab tap, TCG, no
// user-mode network), then that image boots with the user_data Terraform
// renders for agent_install = { preinstalled = true }, and the node meshes
// with a namespace node. It needs root and packer; `make test` runs it.
package packer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
	"github.com/meshspan/terraform-provider-meshspan/internal/vmlab"
)

func TestMain(m *testing.M) {
	code := m.Run()
	agentbin.Remove()
	os.Exit(code)
}

// The lab's addresses (documentation range): Packer talks to the build
// machine from the switch's bridge.
var (
	bridgeAddr = netip.MustParsePrefix("203.0.113.1/24")
	discAddr   = netip.MustParsePrefix("203.0.113.2/24")
	nsAddr     = netip.MustParsePrefix("203.0.113.31/24")
	buildAddr  = netip.MustParsePrefix("203.0.113.50/24")
	vmAddr     = netip.MustParsePrefix("203.0.113.11/24")
)

func TestPackerImageMeshes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds an image with Packer and boots it under QEMU (minutes)")
	}
	if os.Geteuid() != 0 {
		t.Skip("tests/packer needs root: network namespaces and tap devices")
	}
	packer, err := exec.LookPath("packer")
	if err != nil {
		t.Fatal("packer is not installed: apt-get install -y --no-install-recommends packer")
	}
	if err := vmlab.Preflight(); err != nil {
		t.Fatal(err)
	}
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		tf = "terraform"
	}
	if os.Getenv("TF_CLI_CONFIG_FILE") == "" {
		t.Fatal("TF_CLI_CONFIG_FILE is not set: run `make install` and export TF_CLI_CONFIG_FILE=$PWD/bin/terraformrc (make test does both)")
	}
	agent, err := agentbin.Path()
	if err != nil {
		t.Fatal(err)
	}
	agentSum := fileSHA256(t, agent)
	template, err := filepath.Abs("../../examples/packer/qemu")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// The build's source: the stock image plus sshd, as a cloud's is.
	src, err := vmlab.BuildSSHImage(ctx, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timings: source image %v (cached %v)", src.BuildTime.Round(100*time.Millisecond), src.Cached)

	lab := netlab.NewT(t) // its Close stops packer, QEMU and the agents
	sw, err := lab.Switch("lan")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.NS().AddAddr("br0", bridgeAddr); err != nil {
		t.Fatal(err)
	}

	// 1. packer build, inside the switch's namespace, on a tap of its bridge.
	buildStart := time.Now()
	image := packerBuild(ctx, t, packer, template, filepath.Join(dir, "build"), sw, src, agent, agentSum)
	buildTime := time.Since(buildStart)
	t.Logf("timings: packer build %v", buildTime.Round(time.Second))

	// 2. Terraform renders the user_data (preinstalled) and the namespace
	// node's config.
	tfDir := filepath.Join(dir, "tf")
	os.MkdirAll(tfDir, 0o700)
	b, err := os.ReadFile("testdata/main.tf")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tfDir, "main.tf"), b, 0o644)
	if out, err := command(ctx, tfDir, tf, "init", "-input=false", "-no-color"); err != nil {
		t.Fatalf("terraform init: %v\n%s", err, out)
	}
	if out, err := command(ctx, tfDir, tf, "apply", "-auto-approve", "-input=false", "-no-color"); err != nil {
		t.Fatalf("terraform apply: %v\n%s", err, out)
	}
	raw, err := command(ctx, tfDir, tf, "output", "-json")
	if err != nil {
		t.Fatalf("terraform output: %v\n%s", err, raw)
	}
	var outs map[string]struct{ Value string }
	if err := json.Unmarshal(raw, &outs); err != nil {
		t.Fatalf("terraform output: %v", err)
	}
	userData, clusterID := outs["user_data"].Value, outs["cluster_id"].Value
	if userData == "" || clusterID == "" || outs["ns_config"].Value == "" {
		t.Fatalf("terraform output lacks user_data, cluster_id or ns_config: %s", raw)
	}
	for _, bad := range []string{"curl", "wget", "sha256sum"} {
		if strings.Contains(userData, bad) {
			t.Errorf("user_data for a preinstalled agent mentions %q: it should download nothing", bad)
		}
	}

	// 3. Discovery and a namespace node.
	disc, err := lab.Host("disc")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(disc, "eth0", discAddr); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e2e.StartDiscovery(disc, agent, netip.AddrPortFrom(discAddr.Addr(), 3000)); err != nil {
		t.Fatal(err)
	}
	ns, err := lab.Host("ns1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(ns, "eth0", nsAddr); err != nil {
		t.Fatal(err)
	}
	nsDir := filepath.Join(dir, "ns-1")
	os.MkdirAll(nsDir, 0o700)
	cfg := filepath.Join(nsDir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(outs["ns_config"].Value), 0o600); err != nil {
		t.Fatal(err)
	}
	nsID, err := e2e.NewIdentity(ns, agent, clusterID, filepath.Join(nsDir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	nsLog, err := os.Create(filepath.Join(nsDir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer nsLog.Close()
	cmd := exec.Command(agent, "run", "--config", cfg, "--state-dir", filepath.Join(nsDir, "state"), "--socket", filepath.Join(nsDir, "agent.sock"))
	cmd.Stdout, cmd.Stderr = nsLog, nsLog
	if _, err := ns.Start(cmd); err != nil {
		t.Fatal(err)
	}

	// 4. Boot the built image with that user_data.
	bootStart := time.Now()
	vm, err := vmlab.Start(ctx, &vmlab.Image{Path: image, Kernel: src.Kernel}, vmlab.Config{
		Name: "baked-1", Switch: sw, Address: vmAddr, MAC: "52:54:00:12:34:11",
		UserData: userData, Dir: filepath.Join(dir, "baked-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Stop()
	if _, err := vm.WaitCloudInit(ctx, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("timings: power-on to cloud-init done %v", time.Since(bootStart).Round(time.Second))

	run := func(script string) string {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		out, err := vm.Run(c, script)
		if err != nil {
			t.Fatalf("%v\n%s", err, vm.Diagnose(ctx))
		}
		return strings.TrimSpace(out)
	}
	// The agent is the one baked in (nothing downloaded it at boot).
	if got := strings.Fields(run("sha256sum /usr/local/bin/meshspan-agent")); len(got) == 0 || got[0] != agentSum {
		t.Errorf("agent in the booted image has sha256 %v, want the baked one %s", got, agentSum)
	}
	if log := run("cat /var/log/cloud-init-output.log"); strings.Contains(log, "curl") || strings.Contains(log, "http://") || strings.Contains(log, "https://") {
		t.Errorf("cloud-init output mentions a download:\n%s", log)
	}
	if st := run("systemctl is-active meshspan-agent.service || true"); st != "active" {
		t.Errorf("meshspan-agent.service is %q, want active\n%s", st, vm.Diagnose(ctx))
	}
	vmIDText := run("meshspan-agent identity --cluster-id " + clusterID + " --state-dir /var/lib/meshspan -o json")
	var vmID e2e.Identity
	if err := json.Unmarshal([]byte(vmIDText), &vmID); err != nil || vmID.Address == "" {
		t.Fatalf("identity of the VM: %v: %s", err, vmIDText)
	}

	// 5. The mesh: both ways, polled with a bounded deadline.
	meshStart := time.Now()
	deadline := time.Now().Add(4 * time.Minute)
	var vmToNS, nsToVM error = errNotYet, errNotYet
	for (vmToNS != nil || nsToVM != nil) && time.Now().Before(deadline) {
		if vmToNS != nil {
			c, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, vmToNS = vm.Run(c, "ping -c 1 -W 2 "+nsID.Address)
			cancel()
		}
		if nsToVM != nil {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, nsToVM = ns.Exec(c, "ping", "-c", "1", "-W", "2", vmID.Address)
			cancel()
		}
		time.Sleep(time.Second)
	}
	if vmToNS != nil || nsToVM != nil {
		agentLog, _ := os.ReadFile(nsLog.Name())
		t.Fatalf("no mesh between the Packer-built VM (%s) and ns-1 (%s) within 4m: vm->ns %v, ns->vm %v\n%s\n--- ns-1 agent log (tail) ---\n%s",
			vmID.Address, nsID.Address, vmToNS, nsToVM, vm.Diagnose(ctx), tail(string(agentLog), 30))
	}
	t.Logf("timings: mesh up %v after cloud-init; ping both ways over the mesh (%s <-> %s)", time.Since(meshStart).Round(time.Second), vmID.Address, nsID.Address)
	t.Logf("timings: whole test %v", time.Since(start).Round(time.Second))
}

var errNotYet = fmt.Errorf("not tried")

// packerBuild runs `packer build` of examples/packer/qemu in the switch's
// namespace: a tap on the bridge, a seed with a static address and a
// per-run SSH key, and returns the image it wrote.
func packerBuild(ctx context.Context, t *testing.T, packer, template, dir string, sw *netlab.Switch, src *vmlab.Image, agent, agentSum string) string {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "packer build")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	mac := "52:54:00:12:34:50"
	seed := filepath.Join(dir, "seed.img")
	userData := fmt.Sprintf("#cloud-config\ndisable_root: false\nssh_pwauth: false\nwrite_files:\n  - path: /root/.ssh/authorized_keys\n    permissions: \"0600\"\n    content: %q\n", authorized+"\n")
	if err := vmlab.WriteSeed(ctx, seed, vmlab.Config{Name: "packer-build", MAC: mac, Address: buildAddr, UserData: userData, Dir: filepath.Join(dir, "seedwork")}); err != nil {
		t.Fatal(err)
	}
	nsName := sw.NS().FullName()
	tap := "pk0"
	for _, args := range [][]string{
		{"tuntap", "add", "dev", tap, "mode", "tap"},
		{"link", "set", tap, "master", "br0"},
		{"link", "set", tap, "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", nsName}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	out := filepath.Join(dir, "output")
	console := filepath.Join(dir, "console.log")
	cmd := exec.Command(packer, "build", "-color=false",
		"-var", "source_image="+src.Path,
		"-var", "kernel="+src.Kernel.Vmlinuz,
		"-var", "initrd="+src.Kernel.Initrd,
		"-var", "seed_image="+seed,
		"-var", "tap="+tap,
		"-var", "mac="+mac,
		"-var", "ssh_host="+buildAddr.Addr().String(),
		"-var", "ssh_private_key_file="+keyFile,
		"-var", "output_directory="+out,
		"-var", "console_log="+console,
		"-var", "agent_binary="+agent,
		"-var", "agent_sha256="+agentSum,
		template)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PACKER_CACHE_DIR="+filepath.Join(dir, "cache"), "CHECKPOINT_DISABLE=1", "PACKER_NO_COLOR=1", "HOME="+dir)
	logPath := filepath.Join(dir, "packer.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := sw.NS().Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(why string) {
		b, _ := os.ReadFile(logPath)
		c, _ := os.ReadFile(console)
		t.Fatalf("packer build %s\n--- packer output (tail) ---\n%s\n--- build machine console (tail) ---\n%s", why, tail(string(b), 40), tail(string(c), 30))
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Stop(10 * time.Second)
		fail("did not finish: " + ctx.Err().Error())
	case <-time.After(15 * time.Minute):
		p.Stop(10 * time.Second)
		fail("did not finish in 15m")
	}
	if err := p.Wait(); err != nil {
		fail("failed: " + err.Error())
	}
	b, _ := os.ReadFile(logPath)
	t.Logf("--- packer build (tail) ---\n%s", tail(string(b), 25))
	image := filepath.Join(out, "meshspan-agent.img")
	if _, err := os.Stat(image); err != nil {
		fail("wrote no image: " + err.Error())
	}
	return image
}

func command(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	if args[0] == "output" {
		return cmd.Output()
	}
	return cmd.CombinedOutput()
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// testLog sends the image build's output to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
