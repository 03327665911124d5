// Package trust replays, with real agents in network namespaces, what a
// member holding the cluster secret can publish through discovery, and
// checks that the other members neither route their traffic to it nor
// send packets where it says. It needs root; without it the tests skip.
package trust

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

var agentBin string

func TestMain(m *testing.M) { e2e.Main(m, &agentBin) }

// node is one real agent.
type node struct {
	name     string
	ns       *netlab.NS
	ip       netip.Addr
	dir      string
	stateDir string
	cfgPath  string
	sock     string
	id       e2e.Identity
	proc     *netlab.Proc
}

func newNode(t *testing.T, lab *netlab.Lab, sw *netlab.Switch, clusterID, name string, ip netip.Addr) *node {
	t.Helper()
	n := &node{name: name, ip: ip, dir: filepath.Join(t.TempDir(), name)}
	n.stateDir, n.cfgPath, n.sock = filepath.Join(n.dir, "state"), filepath.Join(n.dir, "config.yaml"), filepath.Join(n.dir, "agent.sock")
	var err error
	if n.ns, err = lab.Host(name); err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(n.ns, "eth0", netip.PrefixFrom(ip, 24)); err != nil {
		t.Fatal(err)
	}
	if n.id, err = e2e.NewIdentity(n.ns, agentBin, clusterID, n.stateDir); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) writeConfig(t *testing.T, cfg *config.Config) {
	t.Helper()
	data, err := config.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (n *node) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(agentBin, "run", "--config", n.cfgPath, "--state-dir", n.stateDir, "--socket", n.sock)
	if v := os.Getenv("TRUST_AGENT_ENV"); v != "" {
		cmd.Env = append(os.Environ(), strings.Fields(v)...) // diagnostics, e.g. GODEBUG=gctrace=1
	}
	p, err := n.ns.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	n.proc = p
}

func (n *node) status() (*agent.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return agent.FetchStatus(ctx, n.sock)
}

// metrics is the agent's /metrics text from its status socket.
func (n *node) metrics() (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.sock)
		},
	}}
	resp, err := c.Get("http://agent/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return string(b), err
}

// metric returns the value of an unlabelled metric in a /metrics text.
func metric(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func peerNamed(s *agent.Status, name string) *agent.PeerStatus {
	for _, p := range s.Peers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// waitFor polls cond every 200 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	if err := e2e.Poll(timeout, 200*time.Millisecond, cond); err != nil {
		t.Fatal(err)
	}
}

// startDiscovery runs the discovery service in ns without the per-address
// rate limit (the hostile publisher's 100 affiliates come from one address;
// the limit is not what is under test) and waits until it listens.
func startDiscovery(t *testing.T, ns *netlab.NS, listen netip.AddrPort) string {
	t.Helper()
	p, err := ns.Start(exec.Command(agentBin, "discovery", "serve", "--listen", listen.String(), "--metrics-listen", "",
		"--snapshot-path", "", "--rate-limit", "-1"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", listen.String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		return err == nil, fmt.Sprintf("discovery not listening: %v\n%s", err, p.Output())
	})
	return "http://" + listen.String() + "/"
}

// fromHost keeps the IPv4 packets sent from one of addrs.
func fromHost(addrs ...netip.Addr) func([]byte) bool {
	return func(frame []byte) bool {
		ip := e2e.IPPacket(frame)
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return false
		}
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		return slices.Contains(addrs, src)
	}
}

// udpKind names a UDP payload: WireGuard message types, relay frames by
// type (0xEC, type), other.
func udpKind(frame []byte) string {
	proto, l4 := e2e.Transport(e2e.IPPacket(frame))
	if proto != 17 || len(l4) < 8+2 {
		return "other"
	}
	p := l4[8:]
	switch {
	case p[0] == 0xEC:
		return fmt.Sprintf("relay frame %d", p[1])
	case p[0] >= 1 && p[0] <= 4 && len(p) >= 4 && p[1] == 0 && p[2] == 0 && p[3] == 0:
		return []string{"", "wireguard initiation", "wireguard response", "wireguard cookie", "wireguard data"}[p[0]]
	}
	return "other"
}

// cpuTicks is a process's user+system time in clock ticks (/proc/PID/stat).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime/stime: %v %v", pid, err1, err2)
	}
	return u + s, nil
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports.
const clkTck = 100

func newSecrets(t *testing.T) clusterkey.Secrets {
	t.Helper()
	s, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
