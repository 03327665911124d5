// Package lab runs the local demo of a hybrid meshspan cluster: it applies
// examples/local-lab with Terraform, builds the underlay out of network
// namespaces (internal/netlab), boots every node from the user_data or
// bundle_script Terraform rendered, starts the discovery service and the
// agents, shows the mesh coming up, and checks it with pings and iperf3.
// Everything it makes is removed when Run returns, on failure and on
// cancellation (Ctrl-C) too.
package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// Options configure a demo run.
type Options struct {
	Dir       string // the Terraform configuration, examples/local-lab
	Terraform string // terraform or tofu
	Agent     string // the meshspan-agent binary nodes download and run
	Out       io.Writer
	// Live redraws the progress table in place (for a terminal); otherwise
	// it is printed whenever it changes and at least every 5 s.
	Live bool
	// UpTimeout bounds the wait for every peer link to be up.
	UpTimeout time.Duration
	// IperfTime is the length of the throughput check.
	IperfTime time.Duration
	// StatusNode is the node whose peer status table is printed.
	StatusNode string
	// KeepWork leaves the work directory in place: the Terraform working
	// directory and state, its log, the per-node directories (logs, configs).
	KeepWork bool
	// VMs boots that many of the user_data nodes as Debian VMs under QEMU
	// instead of in namespaces (vms.go).
	VMs int
	// VMCheck, if set, runs after the lab's checks with the VMs booted
	// (tests/vm uses it for assertions of its own).
	VMCheck func(context.Context, *VMLab) error
}

// Ports the lab serves on inside its namespaces.
const mirrorPort = 8080

// run is the state of one demo run.
type run struct {
	o      Options
	out    *Outputs
	lab    *netlab.Lab
	work   string
	ns     map[string]*netlab.NS // by node name, plus "discovery", "mirror"
	agents map[string]*netlab.Proc
	disc   *netlab.Proc
	roots  map[string]string // node name -> its root directory
	// meshAddr holds each node's mesh address once its agent reports it.
	meshAddr  map[string]netip.Addr
	mirrorSrv *http.Server
	// tfDir is the private copy of o.Dir Terraform runs in, state included;
	// tfLog receives the full output of every Terraform command.
	tfDir string
	tfLog *os.File
	// tfrc is the CLI config that finds the provider in the local mirror.
	tfrc string
	// tfFailed: a Terraform step failed, so its log outlives the run.
	tfFailed bool
	sum      summary
	vm       vmState // vms.go
}

// Run executes the demo. It returns nil only when the whole mesh came up and
// every check passed.
func Run(ctx context.Context, o Options) (err error) {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.UpTimeout == 0 {
		o.UpTimeout = 60 * time.Second
	}
	if o.IperfTime == 0 {
		o.IperfTime = 3 * time.Second
	}
	r := &run{o: o, ns: map[string]*netlab.NS{}, agents: map[string]*netlab.Proc{}, roots: map[string]string{}, meshAddr: map[string]netip.Addr{}}
	if err := r.preflight(); err != nil {
		return err
	}
	if err := r.vmPreflight(); err != nil {
		return err
	}
	// 0700: it holds the Terraform state, cluster secret included.
	if r.work, err = os.MkdirTemp("", "meshspan-lab-"); err != nil {
		return fmt.Errorf("lab: work directory: %w", err)
	}
	defer func() {
		if r.tfLog != nil {
			r.tfLog.Close()
		}
		if o.KeepWork {
			r.say("  Terraform state, logs and node files kept in %s (the state holds the cluster secret: remove it when done)", r.work)
		} else {
			if r.tfFailed && os.Rename(r.tfLog.Name(), r.keptLog()) == nil {
				r.say("  Terraform log kept: %s", r.keptLog())
			}
			os.RemoveAll(r.work)
		}
		r.printSummary(err)
	}()
	// A private copy: what Terraform pins (sha256) is then exactly what the
	// nodes download, even if the binary is rebuilt meanwhile.
	agentCopy := filepath.Join(r.work, "meshspan-agent")
	if err := copyFile(o.Agent, agentCopy, 0o755); err != nil {
		return err
	}
	r.o.Agent = agentCopy
	sum, err := fileSHA256(agentCopy)
	if err != nil {
		return err
	}

	r.step("terraform apply on %s", o.Dir)
	if err := r.terraformDir(); err != nil {
		return err
	}
	if err := r.terraform(ctx, "init", "-input=false", "-no-color"); err != nil {
		if r.tfrc == "" {
			err = fmt.Errorf("%w (the provider is not in any registry: run `make install` and export TF_CLI_CONFIG_FILE=$PWD/bin/terraformrc, or use `make demo`)", err)
		}
		return err
	}
	applyStart := time.Now()
	if err := r.terraform(ctx, "apply", "-input=false", "-auto-approve", "-no-color", "-var", "agent_sha256="+sum); err != nil {
		r.sum.applyFailed = true
		return err
	}
	r.sum.apply = time.Since(applyStart)
	raw, err := r.terraformOutput(ctx)
	if err != nil {
		return err
	}
	if r.out, err = ParseOutputs(raw); err != nil {
		return err
	}

	if r.lab, err = netlab.New("demo"); err != nil {
		return err
	}
	defer func() {
		r.step("tearing down: stopping %d agents and discovery, removing namespaces %s-*", len(r.agents), r.lab.ID())
		if err != nil {
			r.dumpLogs()
			r.vmDiagnose()
		}
		if r.mirrorSrv != nil {
			r.mirrorSrv.Close()
		}
		if cerr := r.lab.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	steps := []step{
		{"building the underlay", r.network},
		{"serving the agent binary to the nodes", r.mirror},
		{"starting the discovery service", r.discovery},
		{"booting the nodes", r.boot},
		{"starting the agents", r.startAgents},
		{"waiting for the mesh", r.waitMesh},
		{"checks", r.checks},
	}
	for _, s := range r.vmSteps(steps) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lab: interrupted before %s: %w", s.what, err)
		}
		r.step("%s", s.what)
		if err := s.f(ctx); err != nil {
			if ctx.Err() != nil && !strings.Contains(err.Error(), "interrupted") {
				err = fmt.Errorf("lab: interrupted while %s: %w", s.what, err)
			}
			return err
		}
	}
	r.vmTimings()
	r.step("demo passed: %d nodes, full mesh up, every ping, the throughput and the host firewall checks passed", len(r.out.Nodes))
	return nil
}

type step struct {
	what string
	f    func(context.Context) error
}

func (r *run) step(format string, args ...any) {
	fmt.Fprintf(r.o.Out, "==> "+format+"\n", args...)
}

func (r *run) say(format string, args ...any) {
	fmt.Fprintf(r.o.Out, format+"\n", args...)
}

func (r *run) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("lab: needs root to create network namespaces; run it with sudo")
	}
	for _, tool := range []string{"ip", "ping", "iperf3", "curl", "sh", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("lab: %s is not installed; apt-get install -y iproute2 util-linux iputils-ping iperf3 curl", tool)
		}
	}
	tf, err := FindTerraform(r.o.Terraform, r.o.Agent)
	if err != nil {
		return err
	}
	r.o.Terraform = tf
	r.tfrc = cliConfig(r.o.Agent)
	if fi, err := os.Stat(r.o.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("lab: Terraform configuration directory %q not found", r.o.Dir)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("lab: agent binary: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("lab: copy %s: %w", src, err)
	}
	return out.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("lab: agent binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("lab: agent binary %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// terraform runs one command in the private working directory. Its output
// goes to the log file; the console gets one line with the time it took
// and, on failure, the command's whole output.
func (r *run) terraform(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, r.o.Terraform, args...)
	cmd.Dir = r.tfDir
	cmd.Env = r.tfEnv()
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // lets it release the state lock
	cmd.WaitDelay = 15 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(100 * time.Millisecond)
	name := filepath.Base(r.o.Terraform) + " " + args[0]
	fmt.Fprintf(r.tfLog, "$ %s %s   (%v)\n%s\n", filepath.Base(r.o.Terraform), strings.Join(args, " "), took, out.Bytes())
	if err != nil {
		r.tfFailed = true
		log := r.tfLog.Name()
		if !r.o.KeepWork {
			log = r.keptLog()
		}
		r.say("  %-16s failed after %v; its output (the full log is kept: %s):", name, took, log)
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			if line := strings.TrimRight(sc.Text(), " "); line != "" {
				r.say("    %s", line)
			}
		}
		return fmt.Errorf("lab: %s: %w (its output is above; full log: %s)", name, err, log)
	}
	r.say("  %-16s %6v  %s", name, took, terraformResult(out.Bytes()))
	return nil
}

// terraformDir copies the configuration's .tf files into a private
// working directory, so the state (which holds the cluster secret), the
// lock file and .terraform/ live there and go away with the run, and the
// configuration directory stays as it was.
func (r *run) terraformDir() error {
	r.tfDir = filepath.Join(r.work, "terraform")
	if err := os.Mkdir(r.tfDir, 0o700); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	tfs, err := filepath.Glob(filepath.Join(r.o.Dir, "*.tf"))
	if err != nil || len(tfs) == 0 {
		return fmt.Errorf("lab: %s has no .tf files", r.o.Dir)
	}
	for _, f := range tfs {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		if err := os.WriteFile(filepath.Join(r.tfDir, filepath.Base(f)), b, 0o600); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	// The provider comes from the local mirror, rebuilt by every `make
	// install`: a lock file would pin an earlier build, so none is copied.
	// State an earlier version of the lab left in place is worth a warning.
	for _, f := range []string{"terraform.tfstate", "terraform.tfstate.backup"} {
		if _, err := os.Stat(filepath.Join(r.o.Dir, f)); err == nil {
			r.say("  note: %s is left from an earlier run and holds a cluster secret; the lab no longer uses it: delete it",
				filepath.Join(r.o.Dir, f))
		}
	}
	if r.tfLog, err = os.OpenFile(filepath.Join(r.work, "terraform.log"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	keep := "removed at teardown; --keep keeps it"
	if r.o.KeepWork {
		keep = "kept"
	}
	r.say("  working directory and state: %s (mode 0700, %s)", r.tfDir, keep)
	if r.tfrc != "" && r.tfrc != os.Getenv("TF_CLI_CONFIG_FILE") {
		r.say("  provider from the local mirror: TF_CLI_CONFIG_FILE=%s", r.tfrc)
	}
	r.say("  full Terraform log: %s (kept if a step fails)", r.tfLog.Name())
	return nil
}

// keptLog is where the Terraform log goes when a step failed: next to the
// work directory, which is removed.
func (r *run) keptLog() string { return r.work + "-terraform.log" }

var tfResultRe = regexp.MustCompile(`(?m)^(Apply complete!.*|Terraform has been successfully initialized!|OpenTofu has been successfully initialized!|No changes\..*)$`)

// terraformResult is the line of a command's output that says how it went.
func terraformResult(out []byte) string {
	if m := tfResultRe.FindSubmatch(out); m != nil {
		return strings.TrimSpace(string(m[1]))
	}
	return ""
}

func (r *run) terraformOutput(ctx context.Context) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.o.Terraform, "output", "-json")
	cmd.Dir = r.tfDir
	cmd.Env = r.tfEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("lab: terraform output: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// network builds the internet switch, the services, the NAT'd home LAN and
// one namespace per node.
func (r *run) network(context.Context) error {
	n := r.out.Network
	inet, err := r.lab.Switch("internet")
	if err != nil {
		return err
	}
	for name, addr := range map[string]netip.Prefix{"discovery": n.Discovery, "mirror": n.Mirror} {
		ns, err := r.lab.Host(name)
		if err != nil {
			return err
		}
		if err := inet.Attach(ns, "eth0", addr); err != nil {
			return err
		}
		r.ns[name] = ns
	}
	var home *netlab.Switch
	for _, node := range r.out.Nodes {
		if node.BehindNAT && home == nil {
			if home, err = r.lab.Switch("home"); err != nil {
				return err
			}
			if _, err := r.lab.NATRouter("nat", home, inet, n.NAT.LAN, n.NAT.WAN, n.NAT.Mode); err != nil {
				return err
			}
			r.say("  NAT router (%s masquerade): home LAN %s, public %s", n.NAT.Mode, n.NAT.LAN, n.NAT.WAN.Addr())
		}
	}
	r.vm.inet, r.vm.home = inet, home
	for _, node := range r.out.Nodes {
		if r.isVM(node.Name) {
			r.say("  %-10s %-13s %-16s internet, a Debian VM (QEMU, %s)", node.Name, node.Provider, node.Address.Addr(), r.vmAccel())
			continue
		}
		ns, err := r.lab.Host(node.Name)
		if err != nil {
			return err
		}
		sw := inet
		if node.BehindNAT {
			sw = home
		}
		if err := sw.Attach(ns, "eth0", node.Address); err != nil {
			return err
		}
		if node.BehindNAT {
			if err := ns.DefaultRoute(n.NAT.LAN.Addr()); err != nil {
				return err
			}
		}
		r.ns[node.Name] = ns
		where := "internet"
		if node.BehindNAT {
			where = "home LAN, behind NAT"
		}
		r.say("  %-10s %-13s %-16s %s", node.Name, node.Provider, node.Address.Addr(), where)
	}
	return nil
}

// mirror serves the agent binary over HTTP from the mirror namespace, as a
// release download would be.
func (r *run) mirror(context.Context) error {
	addr := netip.AddrPortFrom(r.out.Network.Mirror.Addr(), mirrorPort)
	var ln net.Listener
	if err := r.ns["mirror"].Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		return fmt.Errorf("lab: mirror listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /meshspan-agent", func(w http.ResponseWriter, req *http.Request) {
		http.ServeFile(w, req, r.o.Agent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	r.mirrorSrv = srv
	r.say("  http://%s/meshspan-agent serves %s", addr, r.o.Agent)
	return nil
}

// discovery starts the discovery service and waits until it accepts
// connections.
func (r *run) discovery(ctx context.Context) error {
	ns := r.ns["discovery"]
	listen := net.JoinHostPort(r.out.Discovery.Hostname(), portOf(r.out.Discovery.Port(), "80"))
	dir := filepath.Join(r.work, "discovery")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	log, err := os.Create(filepath.Join(dir, "discovery.log"))
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	cmd := exec.Command(r.o.Agent, discoveryArgs(listen, dir)...)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := ns.Start(cmd)
	log.Close()
	if err != nil {
		return err
	}
	r.disc = p
	if err := waitTCP(ctx, ns, listen, 10*time.Second, p); err != nil {
		return fmt.Errorf("lab: discovery service: %w", err)
	}
	r.say("  %s (pid %d) listening on %s", strings.Join(append([]string{"meshspan-agent"}, discoveryArgs(listen, dir)...), " "), p.PID(), listen)
	return nil
}

// discoveryArgs are the agent flags that serve discovery in plaintext with
// a snapshot file.
func discoveryArgs(listen, dir string) []string {
	return []string{"discovery", "serve", "--listen", listen, "--snapshot-path", filepath.Join(dir, "state.binpb")}
}

func portOf(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// waitTCP polls, inside ns, until addr accepts a TCP connection.
func waitTCP(ctx context.Context, ns *netlab.NS, addr string, limit time.Duration, p *netlab.Proc) error {
	deadline := time.Now().Add(limit)
	for {
		var err error
		ns.Do(func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return nil
		})
		if err == nil {
			return nil
		}
		if done, werr := p.Exited(); done {
			return fmt.Errorf("exited before listening on %s: %v", addr, werr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v: %w", addr, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// boot runs each node's boot material in its namespace, rooted in its own
// directory: bare metal runs bundle_script, cloud nodes apply user_data's
// write_files and runcmd. Both install the agent from the mirror (sha256
// checked by the install script) and ask systemctl to start it.
func (r *run) boot(ctx context.Context) error {
	for _, node := range r.out.Nodes {
		if r.isVM(node.Name) {
			continue // bootVMs
		}
		start := time.Now()
		root := filepath.Join(r.work, node.Name)
		r.roots[node.Name] = root
		// The directories any systemd host has; the boot creates the rest.
		for _, d := range []string{"sbin", "etc/systemd/system"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				return fmt.Errorf("lab: %w", err)
			}
		}
		if err := os.WriteFile(filepath.Join(root, "sbin", "systemctl"), []byte(fakeSystemctl), 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		var cmds [][]string
		what := "bundle_script"
		switch node.Boot() {
		case "bundle":
			script := filepath.Join(root, "bundle.sh")
			if err := os.WriteFile(script, []byte(Rebase(node.BundleScript, root)), 0o700); err != nil {
				return fmt.Errorf("lab: %w", err)
			}
			cmds = [][]string{{"sh", script}}
		default:
			cc, err := ParseCloudConfig(Rebase(node.UserData, root))
			if err != nil {
				return fmt.Errorf("lab: node %s: %w", node.Name, err)
			}
			if err := cc.Write(root); err != nil {
				return fmt.Errorf("lab: node %s: %w", node.Name, err)
			}
			for _, c := range cc.RunCmd {
				cmds = append(cmds, c)
			}
			what = fmt.Sprintf("user_data (%d write_files, %d runcmd)", len(cc.WriteFiles), len(cc.RunCmd))
		}
		for _, argv := range cmds {
			if err := r.runBoot(ctx, node.Name, root, argv); err != nil {
				return err
			}
		}
		calls, err := SystemctlCalls(root)
		if err != nil {
			return fmt.Errorf("lab: node %s: %w", node.Name, err)
		}
		if err := AgentStartRequested(calls); err != nil {
			return fmt.Errorf("lab: node %s: %w", node.Name, err)
		}
		r.say("  %-10s booted from %s in %v; agent installed from the mirror, sha256 checked; systemctl: %s",
			node.Name, what, time.Since(start).Round(time.Millisecond), strings.Join(calls, "; "))
	}
	return nil
}

func (r *run) runBoot(ctx context.Context, node, root string, argv []string) error {
	log, err := os.OpenFile(filepath.Join(root, "boot.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer log.Close()
	// Through sh, so the command is looked up in the node's PATH, where
	// the fake systemctl comes first, as cloud-init would look it up.
	cmd := exec.Command("sh", append([]string{"-c", `exec "$@"`, "sh"}, argv...)...)
	cmd.Env = []string{"PATH=" + filepath.Join(root, "sbin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}
	cmd.Stdout, cmd.Stderr = log, log
	p, err := r.ns[node].Start(cmd)
	if err != nil {
		return err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Kill()
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		p.Kill()
		return fmt.Errorf("lab: node %s: %q did not finish in 2m", node, argv)
	}
	if err := p.Wait(); err != nil {
		b, _ := os.ReadFile(log.Name())
		return fmt.Errorf("lab: node %s: boot command %q: %w\n%s", node, argv, err, tail(b, 15))
	}
	return nil
}

// startAgents starts, in each node's namespace, what the unit the boot
// installed says to start.
func (r *run) startAgents(context.Context) error {
	for _, node := range r.out.Nodes {
		if r.isVM(node.Name) {
			continue // systemd in the VM started it
		}
		root := r.roots[node.Name]
		unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/meshspan-agent.service"))
		if err != nil {
			return fmt.Errorf("lab: node %s: the boot installed no unit: %w", node.Name, err)
		}
		argv, err := ExecStart(string(unit))
		if err != nil {
			return fmt.Errorf("lab: node %s: %w", node.Name, err)
		}
		if !strings.HasPrefix(argv[0], root+"/") {
			return fmt.Errorf("lab: node %s: unit starts %s, not the agent the boot installed under %s", node.Name, argv[0], root)
		}
		log, err := os.Create(filepath.Join(root, "agent.log"))
		if err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		p, err := r.ns[node.Name].Start(cmd)
		log.Close()
		if err != nil {
			return err
		}
		r.agents[node.Name] = p
		r.say("  %-10s pid %-7d %s", node.Name, p.PID(), strings.Join(argv, " "))
	}
	return nil
}

// status runs `meshspan-agent status` against a node's agent. Its socket
// lives in the agent's private /run/meshspan, reached through the agent's
// root as /proc shows it, so the query needs no namespace switch.
func (r *run) status(ctx context.Context, node string, format string) ([]byte, error) {
	if r.isVM(node) {
		return r.vmStatus(ctx, node, format)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.o.Agent, r.statusArgs(node, format)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

func (r *run) statusArgs(node, format string) []string {
	if r.isVM(node) {
		return []string{"status", "-o", format}
	}
	sock := fmt.Sprintf("/proc/%d/root/run/meshspan/agent.sock", r.agents[node].PID())
	return []string{"status", "--socket", sock, "-o", format}
}

// waitMesh polls every agent until each sees every other peer up, showing
// the live table meanwhile.
func (r *run) waitMesh(ctx context.Context) error {
	start := time.Now()
	deadline := start.Add(r.o.UpTimeout)
	views := make([]NodeView, len(r.out.Nodes))
	for i, n := range r.out.Nodes {
		views[i] = NodeView{Name: n.Name, Provider: n.Provider, Boot: n.Boot(), Underlay: n.Address.Addr(), Phase: "starting"}
	}
	var lastShown string
	var lastTime time.Time
	drawn := 0
	show := func(final bool) {
		table := Progress(views, time.Since(start))
		body := table[strings.Index(table, "\n")+1:]
		switch {
		case r.o.Live:
			if drawn > 0 {
				fmt.Fprintf(r.o.Out, "\x1b[%dA\x1b[J", drawn)
			}
			fmt.Fprint(r.o.Out, table)
			drawn = strings.Count(table, "\n")
		case final || body != lastShown || time.Since(lastTime) >= 5*time.Second:
			fmt.Fprint(r.o.Out, table)
			lastShown, lastTime = body, time.Now()
		}
	}
	for {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var dead error
		for i := range views {
			wg.Add(1)
			go func(v *NodeView) {
				defer wg.Done()
				if done, err := r.exited(v.Name); done {
					v.Phase = fmt.Sprintf("exited (%v)", err)
					mu.Lock()
					dead = errors.Join(dead, fmt.Errorf("lab: agent on %s exited: %v", v.Name, err))
					mu.Unlock()
					return
				}
				out, err := r.status(ctx, v.Name, "json")
				if err != nil {
					v.Phase = "starting"
					return
				}
				st, err := ParseStatus(out)
				if err != nil {
					v.Phase = "bad status"
					mu.Lock()
					dead = errors.Join(dead, fmt.Errorf("lab: %s: %w", v.Name, err))
					mu.Unlock()
					return
				}
				v.Phase, v.Mesh = "running", st.Address
				v.Peers = map[string]string{}
				for _, p := range st.Peers {
					v.Peers[p.Name] = p.State
				}
			}(&views[i])
		}
		wg.Wait()
		if dead != nil {
			show(true)
			return dead
		}
		if allUp(views) {
			show(true)
			r.vmMeshUp()
			r.sum.meshUp = time.Since(start)
			r.say("  mesh fully up: %d nodes, %d peer links, %v after the agents started", len(views), len(views)*(len(views)-1), r.sum.meshUp.Round(100*time.Millisecond))
			for _, v := range views {
				r.meshAddr[v.Name] = v.Mesh
			}
			return nil
		}
		show(false)
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: the mesh was not fully up after %v", r.o.UpTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: interrupted while waiting for the mesh: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func allUp(views []NodeView) bool {
	for _, v := range views {
		if v.Phase != "running" || !v.Mesh.IsValid() {
			return false
		}
		for _, o := range views {
			if o.Name != v.Name && v.Peers[o.Name] != "up" {
				return false
			}
		}
	}
	return true
}

// checks prints one node's status table, the ping matrix and a throughput
// figure.
func (r *run) checks(ctx context.Context) error {
	node := r.o.StatusNode
	if _, ok := r.agents[node]; !ok {
		node = r.out.Nodes[0].Name
	}
	table, err := r.status(ctx, node, "table")
	if err != nil {
		return fmt.Errorf("lab: status of %s: %w", node, err)
	}
	r.say("  $ meshspan-agent %s   (on %s)", strings.Join(r.statusArgs(node, "table"), " "), node)
	for _, l := range strings.Split(strings.TrimRight(string(table), "\n"), "\n") {
		r.say("    %s", l)
	}

	if err := r.pingMatrix(ctx); err != nil {
		return err
	}
	if err := r.throughput(ctx); err != nil {
		return err
	}
	return r.firewall(ctx)
}

// firewall checks the host firewall from the outside: the mirror, which
// every node reached over the same underlay to download the agent, can no
// longer ping the public nodes once their agents enforce default_action
// "block" (only WireGuard and mesh traffic are admitted).
func (r *run) firewall(ctx context.Context) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []string
	var checked []string
	for _, n := range r.out.Nodes {
		if n.BehindNAT {
			continue
		}
		checked = append(checked, n.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := r.ns["mirror"].Exec(c, "ping", "-n", "-c", "1", "-W", "1", n.Address.Addr().String()); err == nil {
				mu.Lock()
				open = append(open, n.Name)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(open) > 0 {
		return fmt.Errorf("lab: host firewall: an outsider (%s) still pings %s", r.out.Network.Mirror.Addr(), strings.Join(open, ", "))
	}
	r.say("  host firewall: outsider %s can no longer ping %s (default_action = \"block\"), yet the mesh is up", r.out.Network.Mirror.Addr(), strings.Join(checked, ", "))
	return ctx.Err()
}

var rttRe = regexp.MustCompile(`time=([0-9.]+) ms`)

func (r *run) pingMatrix(ctx context.Context) error {
	var names []string
	for _, n := range r.out.Nodes {
		names = append(names, n.Name)
	}
	res := map[[2]string]PingResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				var pr PingResult
				for attempt := 0; attempt < 2; attempt++ {
					c, cancel := context.WithTimeout(ctx, 5*time.Second)
					out, err := r.exec(c, from, "ping", "-n", "-c", "1", "-W", "2", r.meshAddr[to].String())
					cancel()
					pr = PingResult{Err: err}
					if err == nil {
						if m := rttRe.FindSubmatch(out); m != nil {
							ms, _ := strconv.ParseFloat(string(m[1]), 64)
							pr.RTT = time.Duration(ms * float64(time.Millisecond))
						}
						break
					}
				}
				mu.Lock()
				res[[2]string{from, to}] = pr
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	r.say("  ping matrix over mesh addresses (round trip):")
	for _, l := range strings.Split(strings.TrimRight(PingMatrix(names, res), "\n"), "\n") {
		r.say("    %s", l)
	}
	var failed []string
	r.sum.pings = len(res)
	for k, v := range res {
		if v.Err != nil {
			failed = append(failed, k[0]+"->"+k[1])
			continue
		}
		r.sum.pingsOK++
		r.sum.maxRTT = max(r.sum.maxRTT, v.RTT)
	}
	if len(failed) > 0 {
		return fmt.Errorf("lab: %d of %d pings over the mesh failed: %s", len(failed), len(res), strings.Join(failed, ", "))
	}
	return ctx.Err()
}

// throughput runs iperf3 over the mesh between the first node and the first
// node behind NAT (or the second node).
func (r *run) throughput(ctx context.Context) error {
	// Between namespace nodes: iperf3 under QEMU's emulation would measure
	// the emulator.
	var nsNodes []string
	for _, n := range r.out.Nodes {
		if !r.isVM(n.Name) {
			nsNodes = append(nsNodes, n.Name)
		}
	}
	if len(nsNodes) < 2 {
		r.say("  throughput: skipped, fewer than two namespace nodes")
		return nil
	}
	client, server := nsNodes[0], nsNodes[1]
	for _, n := range r.out.Nodes {
		if n.BehindNAT && n.Name != client && !r.isVM(n.Name) {
			server = n.Name
			break
		}
	}
	addr := r.meshAddr[server]
	srv, err := r.ns[server].Start(exec.Command("iperf3", "-s", "-B", addr.String()))
	if err != nil {
		return err
	}
	defer srv.Kill()
	if err := waitTCP(ctx, r.ns[server], net.JoinHostPort(addr.String(), "5201"), 5*time.Second, srv); err != nil {
		return fmt.Errorf("lab: iperf3 server on %s: %w", server, err)
	}
	secs := max(1, int(r.o.IperfTime/time.Second))
	c, cancel := context.WithTimeout(ctx, r.o.IperfTime+20*time.Second)
	defer cancel()
	out, err := r.ns[client].Exec(c, "iperf3", "-c", addr.String(), "-t", strconv.Itoa(secs), "-J")
	if err != nil {
		return fmt.Errorf("lab: iperf3 %s -> %s: %w", client, server, err)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("lab: iperf3 output: %w", err)
	}
	bps := res.End.SumReceived.BitsPerSecond
	if bps <= 0 {
		return fmt.Errorf("lab: iperf3 %s -> %s moved no data: %s", client, server, res.Error)
	}
	r.sum.bps, r.sum.iperf = bps, client+" -> "+server
	r.say("  throughput over the mesh %s -> %s: %.2f Gbit/s (iperf3, one TCP stream, %d s)", client, server, bps/1e9, secs)
	return nil
}

// dumpLogs prints the end of each log, to explain a failure.
func (r *run) dumpLogs() {
	if r.work == "" {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(r.work, "*", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil || len(b) == 0 {
			continue
		}
		rel, _ := filepath.Rel(r.work, l)
		r.say("  --- last lines of %s ---", rel)
		for _, line := range strings.Split(strings.TrimRight(tail(b, 12), "\n"), "\n") {
			r.say("    %s", line)
		}
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
