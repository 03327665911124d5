package lab

// vms.go: `lab --vms N`, the demo with N of its user_data nodes booted as
// real Debian machines under QEMU (internal/vmlab). Each VM gets exactly
// the user_data Terraform rendered, through a NoCloud seed; cloud-init
// downloads the agent from the lab's mirror, and systemd starts it.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/vmlab"
)

// maxParallelBoots bounds the VMs booting at once: each takes a core under
// emulation.
const maxParallelBoots = 2

type vmState struct {
	names      map[string]bool
	vms        map[string]*vmlab.VM
	img        *vmlab.Image
	inet, home *netlab.Switch
	cloudInit  map[string]time.Duration // power-on to cloud-init done
	meshUp     map[string]time.Duration // power-on to the full mesh up
	mu         sync.Mutex
}

func (r *run) isVM(node string) bool { return r.vm.names[node] }

func (r *run) vmAccel() string { return vmlab.Accel() }

func (r *run) vmPreflight() error {
	if r.o.VMs < 0 {
		return fmt.Errorf("lab: --vms %d: must be 0 or more", r.o.VMs)
	}
	if r.o.VMs == 0 {
		return nil
	}
	return vmlab.Preflight()
}

// vmSteps adds the VM steps around the demo's own.
func (r *run) vmSteps(steps []step) []step {
	if r.o.VMs == 0 {
		return steps
	}
	var out []step
	for _, s := range steps {
		if s.what == "building the underlay" {
			out = append(out, step{"choosing the VMs and building their Debian image", r.vmImage})
		}
		out = append(out, s)
		if s.what == "booting the nodes" {
			out = append(out, step{"booting the VMs (cloud-init runs the user_data Terraform rendered)", r.bootVMs})
		}
	}
	return append(out, step{"checking the VMs", r.vmChecks})
}

// vmImage picks the first N user_data nodes and builds (or reuses) the image.
func (r *run) vmImage(ctx context.Context) error {
	r.vm.names = map[string]bool{}
	r.vm.vms = map[string]*vmlab.VM{}
	r.vm.cloudInit = map[string]time.Duration{}
	r.vm.meshUp = map[string]time.Duration{}
	var cloud []string
	for _, n := range r.out.Nodes {
		if n.Boot() == "cloud-init" {
			cloud = append(cloud, n.Name)
		}
	}
	if r.o.VMs > len(cloud) {
		return fmt.Errorf("lab: --vms %d: only %d nodes boot from user_data (%s)", r.o.VMs, len(cloud), strings.Join(cloud, ", "))
	}
	for _, n := range cloud[:r.o.VMs] {
		r.vm.names[n] = true
	}
	r.say("  VMs: %s (accelerator %s)", strings.Join(cloud[:r.o.VMs], ", "), vmlab.Accel())
	logPath := filepath.Join(r.work, "image-build.log")
	log, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer log.Close()
	img, err := vmlab.BuildImage(ctx, log)
	if err != nil {
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("%w\n%s", err, tail(b, 20))
	}
	r.vm.img = img
	how := "built from Debian packages (debootstrap)"
	if img.Cached {
		how = "cached"
	}
	r.say("  image %s: %s in %v; kernel %s", img.Path, how, img.BuildTime.Round(100*time.Millisecond), img.Kernel.Version)
	return nil
}

// mac gives each VM a stable, locally administered MAC unique to this run:
// the agent derives the mesh address from it.
func (r *run) mac(node string) string {
	h := sha256.Sum256([]byte(r.lab.ID() + "/" + node))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// bootVMs powers on the VMs, a few at a time, and waits for cloud-init.
func (r *run) bootVMs(ctx context.Context) error {
	sem := make(chan struct{}, maxParallelBoots)
	var wg sync.WaitGroup
	var errs []error
	for _, node := range r.out.Nodes {
		if !r.isVM(node.Name) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			err := r.bootVM(ctx, node)
			r.vm.mu.Lock()
			errs = append(errs, err)
			r.vm.mu.Unlock()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

func (r *run) bootVM(ctx context.Context, node Node) error {
	sw, gw := r.vm.inet, netip.Addr{}
	if node.BehindNAT {
		sw, gw = r.vm.home, r.out.Network.NAT.LAN.Addr()
	}
	vm, err := vmlab.Start(ctx, r.vm.img, vmlab.Config{
		Name: node.Name, Switch: sw, Address: node.Address, Gateway: gw, MAC: r.mac(node.Name),
		UserData: node.UserData, Dir: filepath.Join(r.work, node.Name),
	})
	if err != nil {
		return err
	}
	r.vm.mu.Lock()
	r.vm.vms[node.Name] = vm
	r.vm.mu.Unlock()
	r.say("  %-10s powered on: %s on the %s switch, console %s", node.Name, node.Address, sw.NS().Name(), vm.Console)
	long, err := vm.WaitCloudInit(ctx, 10*time.Minute)
	if err != nil {
		return err
	}
	d := time.Since(vm.Booted)
	r.vm.mu.Lock()
	r.vm.cloudInit[node.Name] = d
	r.vm.mu.Unlock()
	r.say("  %-10s cloud-init done %v after power-on: %s", node.Name, d.Round(100*time.Millisecond), oneLine(long))
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (r *run) exited(node string) (bool, error) {
	if r.isVM(node) {
		if err := r.vm.vms[node].Running(); err != nil {
			return true, err
		}
		return false, nil
	}
	return r.agents[node].Exited()
}

func (r *run) vmStatus(ctx context.Context, node, format string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := r.vm.vms[node].Run(ctx, "meshspan-agent status -o "+shquote(format))
	return []byte(out), err
}

// exec runs argv on a node: in its namespace, or in its VM.
func (r *run) exec(ctx context.Context, node string, argv ...string) ([]byte, error) {
	if r.isVM(node) {
		out, err := r.vm.vms[node].Run(ctx, shellJoin(argv))
		return []byte(out), err
	}
	return r.ns[node].Exec(ctx, argv[0], argv[1:]...)
}

func shquote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shquote(a)
	}
	return strings.Join(q, " ")
}

func (r *run) vmMeshUp() {
	for name, vm := range r.vm.vms {
		r.vm.meshUp[name] = time.Since(vm.Booted)
	}
}

func (r *run) vmTimings() {
	if r.o.VMs == 0 || r.vm.img == nil {
		return
	}
	how := "cold build"
	if r.vm.img.Cached {
		how = "cached"
	}
	r.say("  timings: image %v (%s, %s)", r.vm.img.BuildTime.Round(100*time.Millisecond), how, vmlab.Accel())
	for _, n := range sortedKeys(r.vm.vms) {
		r.say("  timings: %-10s power-on -> cloud-init done %v, power-on -> full mesh up %v", n,
			r.vm.cloudInit[n].Round(100*time.Millisecond), r.vm.meshUp[n].Round(100*time.Millisecond))
	}
}

func (r *run) vmDiagnose() {
	for _, n := range sortedKeys(r.vm.vms) {
		r.say("%s", r.vm.vms[n].Diagnose(context.Background()))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// vmChecks asserts, in each VM, what an operator would look at: the agent
// on kernel WireGuard, `wg show` with every peer, cloud-init done without
// errors, the unit active after sd_notify READY; then a checked TCP
// transfer between every pair of nodes.
func (r *run) vmChecks(ctx context.Context) error {
	want := len(r.out.Nodes) - 1
	for _, n := range sortedKeys(r.vm.vms) {
		vm := r.vm.vms[n]
		c, cancel := context.WithTimeout(ctx, time.Minute)
		err := r.checkVM(c, vm, want)
		cancel()
		if err != nil {
			return err
		}
	}
	if err := r.transfers(ctx); err != nil {
		return err
	}
	if r.o.VMCheck != nil {
		return r.o.VMCheck(ctx, &VMLab{r: r})
	}
	return nil
}

func (r *run) checkVM(ctx context.Context, vm *vmlab.VM, peers int) error {
	name := vm.Name()
	out, err := vm.Run(ctx, "meshspan-agent status -o json")
	if err != nil {
		return fmt.Errorf("lab: %s: %w", name, err)
	}
	var st struct {
		Mode      string `json:"mode"`
		Interface string `json:"interface"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("lab: %s: status: %w", name, err)
	}
	if st.Mode != "kernel" {
		return fmt.Errorf("lab: %s: the agent runs %q WireGuard; want kernel (the VM's kernel has the module)", name, st.Mode)
	}
	kind, err := vm.Run(ctx, "ip -d -o link show dev "+shquote(st.Interface))
	if err != nil || !strings.Contains(kind, " wireguard ") {
		return fmt.Errorf("lab: %s: %s is not a kernel WireGuard link: %q %v", name, st.Interface, kind, err)
	}
	wgShow, err := vm.Run(ctx, "wg show "+shquote(st.Interface))
	if err != nil {
		return fmt.Errorf("lab: %s: %w", name, err)
	}
	if got := strings.Count(wgShow, "\npeer: "); got != peers {
		return fmt.Errorf("lab: %s: wg show lists %d peers, want %d:\n%s", name, got, peers, wgShow)
	}
	ci, err := vm.Run(ctx, "cloud-init status --long; cat /run/cloud-init/result.json")
	if err != nil {
		return fmt.Errorf("lab: %s: %w", name, err)
	}
	if !strings.Contains(ci, "status: done") || !strings.Contains(oneLine(ci), `"errors": []`) {
		return fmt.Errorf("lab: %s: cloud-init did not finish cleanly:\n%s", name, ci)
	}
	unit, err := vm.Run(ctx, "systemctl show -p Type,ActiveState,SubState,StatusText,NRestarts,ExecMainStartTimestampMonotonic,ActiveEnterTimestampMonotonic meshspan-agent.service")
	if err != nil {
		return fmt.Errorf("lab: %s: %w", name, err)
	}
	props := map[string]string{}
	for _, l := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			props[k] = v
		}
	}
	// Type=notify: systemd enters "active" only on READY=1 from the agent.
	if props["Type"] != "notify" || props["ActiveState"] != "active" || props["SubState"] != "running" || props["NRestarts"] != "0" {
		return fmt.Errorf("lab: %s: meshspan-agent.service is not active after READY: %s", name, oneLine(unit))
	}
	r.say("  %-10s kernel WireGuard %s with %d peers (wg show); cloud-init done, no errors; unit Type=notify active (READY), no restarts; status text %q",
		name, st.Interface, peers, props["StatusText"])
	return nil
}

// transferScript moves 1 MiB of random bytes over TCP and prints the byte
// count and SHA-256 at both ends. Python is there on both kinds of node
// (cloud-init's on the VMs).
const (
	transferPort   = 5201 // the lab firewall admits it from the mesh
	transferServer = `import socket,hashlib,sys
s=socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind((sys.argv[1],int(sys.argv[2])))
s.listen(1)
s.settimeout(90)
c,_=s.accept()
c.settimeout(60)
h=hashlib.sha256()
n=0
while True:
    b=c.recv(65536)
    if not b: break
    h.update(b)
    n+=len(b)
print(n,h.hexdigest())`
	transferClient = `import socket,hashlib,os,sys,time
d=os.urandom(1<<20)
for i in range(120):
    try:
        c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("could not connect")
c.sendall(d)
c.close()
print(len(d),hashlib.sha256(d).hexdigest())`
)

// transfers moves checked bytes over the mesh between every pair of nodes.
func (r *run) transfers(ctx context.Context) error {
	var names []string
	for _, n := range r.out.Nodes {
		names = append(names, n.Name)
	}
	count := 0
	for i, a := range names {
		for _, b := range names[i+1:] {
			if err := r.transfer(ctx, a, b); err != nil {
				return err
			}
			count++
		}
	}
	r.say("  TCP over the mesh: 1 MiB between each of the %d pairs of nodes, SHA-256 equal at both ends", count)
	return nil
}

func (r *run) transfer(ctx context.Context, from, to string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	addr, port := r.meshAddr[to].String(), fmt.Sprint(transferPort)
	type res struct {
		out []byte
		err error
	}
	srv := make(chan res, 1)
	go func() {
		out, err := r.exec(ctx, to, "python3", "-c", transferServer, addr, port)
		srv <- res{out, err}
	}()
	sent, err := r.exec(ctx, from, "python3", "-c", transferClient, addr, port)
	if err != nil {
		cancel()
		<-srv
		return fmt.Errorf("lab: TCP %s -> %s over the mesh: %w", from, to, err)
	}
	got := <-srv
	if got.err != nil {
		return fmt.Errorf("lab: TCP %s -> %s over the mesh: receiver: %w", from, to, got.err)
	}
	if s, g := strings.TrimSpace(string(sent)), strings.TrimSpace(string(got.out)); s != g || s == "" {
		return fmt.Errorf("lab: TCP %s -> %s over the mesh: sent %q, received %q", from, to, s, g)
	}
	return nil
}

// VMLab is what a VMCheck sees of a running lab.
type VMLab struct{ r *run }

// VMs are the lab's VMs by node name.
func (l *VMLab) VMs() map[string]*vmlab.VM { return l.r.vm.vms }

// Nodes are all the lab's nodes.
func (l *VMLab) Nodes() []Node { return l.r.out.Nodes }

// NS is a namespace node's (or "mirror", "discovery") namespace.
func (l *VMLab) NS(name string) *netlab.NS { return l.r.ns[name] }

// Netlab is the lab's network namespace lab, for checks that add hosts.
func (l *VMLab) Netlab() *netlab.Lab { return l.r.lab }

// Internet is the switch the public nodes and VMs are on.
func (l *VMLab) Internet() *netlab.Switch { return l.r.vm.inet }

// MeshAddr is a node's mesh address.
func (l *VMLab) MeshAddr(node string) netip.Addr { return l.r.meshAddr[node] }

// Exec runs argv on a node, in its namespace or VM.
func (l *VMLab) Exec(ctx context.Context, node string, argv ...string) ([]byte, error) {
	return l.r.exec(ctx, node, argv...)
}

// Status runs `meshspan-agent status -o format` against a node's agent,
// in its VM or its namespace.
func (l *VMLab) Status(ctx context.Context, node, format string) ([]byte, error) {
	return l.r.status(ctx, node, format)
}

// Say prints a line in the lab's output.
func (l *VMLab) Say(format string, args ...any) { l.r.say(format, args...) }

// KillAgent kills a namespace node's agent with SIGKILL, as a crash or a
// power cut would: it removes nothing, and its affiliate stays in
// discovery until its TTL, so the others keep it as a member that is down.
func (l *VMLab) KillAgent(node string) error {
	p, ok := l.r.agents[node]
	if !ok {
		return fmt.Errorf("lab: %s has no namespace agent", node)
	}
	return p.Kill()
}

// Node is a node by name.
func (l *VMLab) Node(name string) (Node, bool) {
	for _, n := range l.r.out.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Mirror is the address of the lab's mirror, a host on the internet
// switch that is not a member.
func (l *VMLab) Mirror() netip.Addr { return l.r.out.Network.Mirror.Addr() }
