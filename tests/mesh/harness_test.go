// Package mesh holds the agent's end-to-end suites and benchmarks: real
// meshspan-agent processes in network namespaces (internal/netlab) on a
// shared underlay, real packets through userspace WireGuard. They need
// root; without it they skip.
package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// agentBin is the binary under test (internal/testing/agentbin); empty
// without root, where the suites skip.
var agentBin string

func TestMain(m *testing.M) { e2e.Main(m, &agentBin) }

// underlay is the shared switch's subnet; node i gets .10+i.
var underlay = netip.MustParsePrefix("192.0.2.0/24")

func underlayAddr(i int) netip.Addr {
	b := underlay.Addr().As4()
	b[3] = byte(10 + i)
	return netip.AddrFrom4(b)
}

type cluster struct {
	t       testing.TB
	lab     *netlab.Lab
	sw      *netlab.Switch
	secrets clusterkey.Secrets
	nodes   []*node
	// discovery is the discovery service URL, "" for static peers.
	discovery string
	discProc  *netlab.Proc
	discNS    *netlab.NS
	dir       string
}

type node struct {
	c        *cluster
	i        int
	name     string
	ns       *netlab.NS
	ip       netip.Addr
	stateDir string
	cfgPath  string
	sock     string
	id       e2e.Identity
	proc     *netlab.Proc
	started  time.Time
	// env is added to the agent's environment (e.g. GOMEMLIMIT).
	env []string
}

// newCluster builds n hosts on one switch, each with an identity made by
// `meshspan-agent identity` inside its namespace. With discovery set, a
// discovery service runs in its own namespace on the same switch.
func newCluster(t testing.TB, n int, withDiscovery bool) *cluster {
	t.Helper()
	if agentBin == "" {
		t.Skip("needs root (network namespaces); run as root or via make test")
	}
	c := &cluster{t: t, lab: netlab.NewT(t), dir: t.TempDir()}
	var err error
	if c.secrets, err = clusterkey.Generate(); err != nil {
		t.Fatal(err)
	}
	if c.sw, err = c.lab.Switch("sw"); err != nil {
		t.Fatal(err)
	}
	if withDiscovery {
		ds, err := c.lab.Host("disc")
		if err != nil {
			t.Fatal(err)
		}
		addr := netip.MustParseAddr("192.0.2.2")
		if err := c.sw.Attach(ds, "eth0", netip.PrefixFrom(addr, 24)); err != nil {
			t.Fatal(err)
		}
		c.discNS = ds
		if c.discProc, c.discovery, err = e2e.StartDiscovery(ds, agentBin, netip.AddrPortFrom(addr, 3000)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		nd := &node{c: c, i: i, name: fmt.Sprintf("n%d", i), ip: underlayAddr(i)}
		if nd.ns, err = c.lab.Host(nd.name); err != nil {
			t.Fatal(err)
		}
		if err := c.sw.Attach(nd.ns, "eth0", netip.PrefixFrom(nd.ip, 24)); err != nil {
			t.Fatal(err)
		}
		nd.stateDir = filepath.Join(c.dir, nd.name, "state")
		nd.cfgPath = filepath.Join(c.dir, nd.name, "config.yaml")
		nd.sock = filepath.Join(c.dir, nd.name, "agent.sock")
		if nd.id, err = e2e.NewIdentity(nd.ns, agentBin, c.secrets.ID, nd.stateDir); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
	}
	return c
}

// baseConfig is a node's config without peers.
func (n *node) baseConfig() *config.Config {
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: n.name},
		Cluster:    config.Cluster{ID: n.c.secrets.ID, Secret: n.c.secrets.Secret},
	}
	if n.c.discovery != "" {
		cfg.Discovery.Endpoints = []string{n.c.discovery}
	}
	return cfg
}

// staticPeer describes node m as a static peer with the given endpoints
// (default: its underlay address).
func (m *node) staticPeer(endpoints ...string) config.StaticPeer {
	if endpoints == nil {
		endpoints = []string{netip.AddrPortFrom(m.ip, config.DefaultListenPort).String()}
	}
	return config.StaticPeer{Name: m.name, PublicKey: m.id.PublicKey, Address: m.id.Address, Endpoints: endpoints}
}

// writeConfig renders cfg to the node's config file.
func (n *node) writeConfig(cfg *config.Config) {
	n.c.t.Helper()
	data, err := config.Render(cfg)
	if err != nil {
		n.c.t.Fatal(err)
	}
	if err := os.WriteFile(n.cfgPath, data, 0o600); err != nil {
		n.c.t.Fatal(err)
	}
}

// staticMesh gives every node every other node as a static peer.
func (c *cluster) staticMesh() {
	for _, n := range c.nodes {
		cfg := n.baseConfig()
		for _, m := range c.nodes {
			if m != n {
				cfg.StaticPeers = append(cfg.StaticPeers, m.staticPeer())
			}
		}
		n.writeConfig(cfg)
	}
}

// discoveryMesh writes configs with discovery only.
func (c *cluster) discoveryMesh() {
	for _, n := range c.nodes {
		n.writeConfig(n.baseConfig())
	}
}

// wireguardMode is the --wireguard the suites run with: auto unless
// $MESHSPAN_E2E_WIREGUARD says kernel or userspace. auto exercises the
// kernel path where the module exists and userspace elsewhere.
func wireguardMode() string {
	if m := os.Getenv("MESHSPAN_E2E_WIREGUARD"); m != "" {
		return m
	}
	return "auto"
}

// expectedMode is the back end the agents should report.
func expectedMode() string {
	if m := wireguardMode(); m != "auto" {
		return m
	}
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		return "kernel"
	}
	return "userspace"
}

func (n *node) start(extra ...string) {
	n.c.t.Helper()
	args := append([]string{"run", "--config", n.cfgPath, "--state-dir", n.stateDir, "--socket", n.sock, "--wireguard", wireguardMode()}, extra...)
	cmd := exec.Command(agentBin, args...)
	if n.env != nil {
		cmd.Env = append(os.Environ(), n.env...)
	}
	p, err := n.ns.Start(cmd)
	if err != nil {
		n.c.t.Fatal(err)
	}
	n.proc, n.started = p, time.Now()
}

func (c *cluster) startAll() {
	for _, n := range c.nodes {
		if v := os.Getenv("BENCH_AGENT_ENV"); v != "" && n.env == nil {
			n.env = strings.Fields(v) // benchmarks: extra agent environment
		}
		n.start()
	}
}

func (n *node) status() (*agent.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.FetchStatus(ctx, n.sock)
}

func (n *node) peer(s *agent.Status, name string) *agent.PeerStatus {
	for i := range s.Peers {
		if s.Peers[i].Name == name {
			return &s.Peers[i]
		}
	}
	return nil
}

// allUp reports whether every node sees every other node up. The nodes
// are asked in parallel, so the answer is not a poll round behind at N = 20.
func (c *cluster) allUp(nodes []*node) (bool, string) {
	type answer struct {
		s   *agent.Status
		err error
	}
	answers := make([]answer, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := n.status()
			answers[i] = answer{s, err}
		}()
	}
	wg.Wait()
	var b strings.Builder
	ok := true
	for i, n := range nodes {
		s, err := answers[i].s, answers[i].err
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", n.name, err)
			continue
		}
		for _, m := range nodes {
			if m == n {
				continue
			}
			p := n.peer(s, m.name)
			if p == nil || p.State != "up" {
				ok = false
				state := "absent"
				if p != nil {
					state = p.State + " via " + p.Endpoint
				}
				fmt.Fprintf(&b, "%s sees %s %s\n", n.name, m.name, state)
			}
		}
	}
	return ok, b.String()
}

func (c *cluster) waitAllUp(nodes []*node, timeout time.Duration) time.Time {
	c.t.Helper()
	waitFor(c.t, timeout, func() (bool, string) {
		ok, why := c.allUp(nodes)
		return ok, why + c.outputs(nodes)
	})
	return time.Now()
}

// outputs is the first agents' (and discovery's) recent output, for
// failure messages.
func (c *cluster) outputs(nodes []*node) string {
	var b strings.Builder
	if c.discProc != nil {
		out := c.discProc.Output()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		fmt.Fprintf(&b, "--- discovery output (tail) ---\n%s\n", out)
	}
	for _, n := range nodes[:min(3, len(nodes))] {
		if n.proc == nil {
			continue
		}
		out := n.proc.Output()
		if len(out) > 3000 {
			out = out[len(out)-3000:]
		}
		fmt.Fprintf(&b, "--- %s output (tail) ---\n%s\n", n.name, out)
	}
	return b.String()
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ping sends one ICMPv6 echo from n to addr, 2 s timeout.
func (n *node) ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := n.ns.Exec(ctx, "ping", "-c", "1", "-W", "2", addr)
	return err
}

// transfer sends size random bytes from n to m over TCP on m's mesh
// address and checks that m received exactly them.
func transfer(n, m *node, size int) error {
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	var l net.Listener
	addr := net.JoinHostPort(m.id.Address, "5201")
	if err := m.ns.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		return fmt.Errorf("listen in %s: %w", m.name, err)
	}
	defer l.Close()
	got := make(chan [32]byte, 1)
	errc := make(chan error, 2)
	go func() {
		c, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			errc <- err
			return
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	var conn net.Conn
	if err := n.ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return fmt.Errorf("dial %s from %s: %w", addr, n.name, err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(conn, bytes.NewReader(payload)); err != nil {
		conn.Close()
		return fmt.Errorf("send %s -> %s: %w", n.name, m.name, err)
	}
	conn.Close()
	select {
	case sum := <-got:
		if sum != want {
			return fmt.Errorf("%s -> %s: content differs (sha256 %x, sent %x)", n.name, m.name, sum[:6], want[:6])
		}
		return nil
	case err := <-errc:
		return err
	case <-time.After(25 * time.Second):
		return fmt.Errorf("%s -> %s: transfer did not finish", n.name, m.name)
	}
}

// rssKB reads a process's resident set (VmRSS) and peak (VmHWM) in KiB.
func rssKB(pid int) (rss, peak int, err error) {
	m, err := procStatus(pid)
	return m["VmRSS:"], m["VmHWM:"], err
}

// procStatus reads the KiB figures of /proc/PID/status (VmRSS, RssAnon, ...)
// and of /proc/PID/smaps_rollup (Pss: shared pages divided among the
// processes that map them), keyed as they are spelt there ("VmRSS:", "Pss:").
func procStatus(pid int) (map[string]int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int{}
	for _, line := range strings.Split(string(data)+string(rollup), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			if v, err := strconv.Atoi(f[1]); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m, nil
}
