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
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
	// bin is the agent binary this cluster's agents and discovery run.
	bin string
}

// node is an agent (e2e.Node) on the cluster's switch.
type node struct {
	*e2e.Node
	c  *cluster
	i  int
	ip netip.Addr
}

// newCluster builds n hosts on one switch, each with an identity made by
// `meshspan-agent identity` inside its namespace. With discovery set, a
// discovery service runs in its own namespace on the same switch.
func newCluster(t testing.TB, n int, withDiscovery bool) *cluster {
	t.Helper()
	return newClusterOf(t, agentBin, n, withDiscovery)
}

// newClusterOf is newCluster with another agent binary (a benchmark's
// baseline build).
func newClusterOf(t testing.TB, bin string, n int, withDiscovery bool) *cluster {
	t.Helper()
	if agentBin == "" {
		t.Skip("needs root (network namespaces); run as root or via make test")
	}
	c := &cluster{t: t, lab: netlab.NewT(t), dir: t.TempDir(), bin: bin}
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
		if c.discProc, c.discovery, err = e2e.StartDiscovery(ds, c.bin, netip.AddrPortFrom(addr, 3000)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		nd := &node{c: c, i: i, ip: underlayAddr(i)}
		name := fmt.Sprintf("n%d", i)
		ns, err := c.lab.Host(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.sw.Attach(ns, "eth0", netip.PrefixFrom(nd.ip, 24)); err != nil {
			t.Fatal(err)
		}
		nd.Node = e2e.NewNode(t, c.bin, ns, name, filepath.Join(c.dir, name), c.secrets.ID)
		c.nodes = append(c.nodes, nd)
	}
	return c
}

// baseConfig is a node's config without peers.
func (n *node) baseConfig() *config.Config {
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: n.Name},
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
	return config.StaticPeer{Name: m.Name, PublicKey: m.ID.PublicKey, Address: m.ID.Address, Endpoints: endpoints}
}

// writeConfig renders cfg to the node's config file.
func (n *node) writeConfig(cfg *config.Config) { n.WriteConfig(n.c.t, cfg) }

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
	n.Start(n.c.t, append([]string{"--wireguard", wireguardMode()}, extra...)...)
}

func (c *cluster) startAll() {
	for _, n := range c.nodes {
		if v := os.Getenv("BENCH_AGENT_ENV"); v != "" && n.Env == nil {
			n.Env = strings.Fields(v) // benchmarks: extra agent environment
		}
		n.start()
	}
}

// allUp reports whether every node sees every other node up (e2e.AllUp).
func (c *cluster) allUp(nodes []*node) (bool, string) {
	agents := make([]*e2e.Node, len(nodes))
	for i, n := range nodes {
		agents[i] = n.Node
	}
	return e2e.AllUp(agents...)
}

func (c *cluster) waitAllUp(nodes []*node, timeout time.Duration) time.Time {
	c.t.Helper()
	if err := e2e.Poll(timeout, 100*time.Millisecond, func() (bool, string) {
		ok, why := c.allUp(nodes)
		return ok, why + c.outputs(nodes)
	}); err != nil {
		c.t.Fatal(err)
	}
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
		b.WriteString(e2e.Outputs(3000, n.Node))
	}
	return b.String()
}

// ping sends one ICMPv6 echo from n to addr, 2 s timeout.
func (n *node) ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := n.NS.Exec(ctx, "ping", "-c", "1", "-W", "2", addr)
	return err
}

// transfer sends size random bytes from n to m over TCP on m's mesh
// address and checks that m received exactly them.
func transfer(n, m *node, size int) error {
	payload := make([]byte, size)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	var l net.Listener
	addr := net.JoinHostPort(m.ID.Address, "5201")
	if err := m.NS.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		return fmt.Errorf("listen in %s: %w", m.Name, err)
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
	if err := n.NS.Do(func() (err error) { conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return fmt.Errorf("dial %s from %s: %w", addr, n.Name, err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(conn, bytes.NewReader(payload)); err != nil {
		conn.Close()
		return fmt.Errorf("send %s -> %s: %w", n.Name, m.Name, err)
	}
	conn.Close()
	select {
	case sum := <-got:
		if sum != want {
			return fmt.Errorf("%s -> %s: content differs (sha256 %x, sent %x)", n.Name, m.Name, sum[:6], want[:6])
		}
		return nil
	case err := <-errc:
		return err
	case <-time.After(25 * time.Second):
		return fmt.Errorf("%s -> %s: transfer did not finish", n.Name, m.Name)
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
