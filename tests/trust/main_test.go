// Package trust replays, with real agents in network namespaces, what a
// member holding the cluster secret can publish through discovery, and
// checks that the other members neither route their traffic to it nor
// send packets where it says. It needs root; without it the tests skip.
package trust

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	for i := range s.Peers {
		if s.Peers[i].Name == name {
			return &s.Peers[i]
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

// capture is a tcpdump writing a pcap inside a namespace.
type capture struct {
	proc *netlab.Proc
	path string
}

func startCapture(t *testing.T, ns *netlab.NS, iface, filter string) *capture {
	t.Helper()
	c := &capture{path: filepath.Join(t.TempDir(), ns.Name()+"-"+iface+".pcap")}
	args := append([]string{"-i", iface, "-n", "-U", "-s", "96", "-w", c.path}, strings.Fields(filter)...)
	p, err := ns.Start(exec.Command("tcpdump", args...))
	if err != nil {
		t.Fatal(err)
	}
	c.proc = p
	waitFor(t, 10*time.Second, func() (bool, string) {
		out := string(p.Output())
		return strings.Contains(out, "listening on"), "tcpdump not listening: " + out
	})
	return c
}

// stop ends the capture and returns the packets' times.
func (c *capture) stop(t *testing.T) []time.Time {
	times, _ := c.stopKinds(t)
	return times
}

// stopKinds is stop plus a count of the UDP payloads by kind: WireGuard
// message types, relay frames by type (0xEC, type), other.
func (c *capture) stopKinds(t *testing.T) ([]time.Time, map[string]int) {
	t.Helper()
	_ = c.proc.Signal(syscall.SIGINT)
	select {
	case <-c.proc.Done():
	case <-time.After(10 * time.Second):
		_ = c.proc.Kill()
	}
	data, err := os.ReadFile(c.path)
	if err != nil {
		t.Fatal(err)
	}
	return pcapTimes(data), pcapKinds(data)
}

// pcapKinds counts the UDP payloads of an Ethernet pcap by kind.
func pcapKinds(b []byte) map[string]int {
	kinds := map[string]int{}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 1 {
		return kinds
	}
	for off := 24; off+16 <= len(b); {
		incl := int(binary.LittleEndian.Uint32(b[off+8:]))
		rec := b[off+16 : min(off+16+incl, len(b))]
		off += 16 + incl
		if len(rec) < 14+20+8+2 || binary.BigEndian.Uint16(rec[12:]) != 0x0800 {
			kinds["other"]++
			continue
		}
		ip := rec[14:]
		p := ip[int(ip[0]&0x0f)*4+8:]
		switch {
		case len(p) < 2:
			kinds["other"]++
		case p[0] == 0xEC:
			kinds[fmt.Sprintf("relay frame %d", p[1])]++
		case p[0] >= 1 && p[0] <= 4 && len(p) >= 4 && p[1] == 0 && p[2] == 0 && p[3] == 0:
			kinds[[]string{"", "wireguard initiation", "wireguard response", "wireguard cookie", "wireguard data"}[p[0]]]++
		default:
			kinds["other"]++
		}
	}
	return kinds
}

// pcapTimes returns the timestamps of a little-endian microsecond pcap.
func pcapTimes(b []byte) []time.Time {
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		return nil
	}
	var out []time.Time
	for off := 24; off+16 <= len(b); {
		sec, usec := binary.LittleEndian.Uint32(b[off:]), binary.LittleEndian.Uint32(b[off+4:])
		out = append(out, time.Unix(int64(sec), int64(usec)*1000))
		off += 16 + int(binary.LittleEndian.Uint32(b[off+8:]))
	}
	return out
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
