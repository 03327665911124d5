package vm

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// relayVM relays for members behind NAT on relayPort: examples/local-lab
// plus relayOverride, so its user_data is still what Terraform rendered.
const (
	relayVM   = "do-1"
	relayPort = 3478
)

// relayOverride is a Terraform override file for the test's copy of
// examples/local-lab: relayVM relays, on its own port (kernel WireGuard
// holds the WireGuard port itself).
var relayOverride = fmt.Sprintf(`# tests/vm: %[1]s relays for members behind NAT.
data "meshspan_machine_config" "node" {
  relay      = each.key == %[1]q
  relay_port = each.key == %[1]q ? %[2]d : null
}
`, relayVM, relayPort)

// kernelRelay: two more nodes, each behind its own fully-random NAT router
// (netlab.NATRouter, as in tests/nat), so no hole punching gets through,
// reach each other through the kernel-WireGuard VM's relay: both see the
// other up and relayed via relayVM, and a ping at the mesh MTU with DF set
// crosses (one byte more does not leave the sender).
func kernelRelay(agentBin, dir string) func(context.Context, *lab.VMLab) error {
	return func(ctx context.Context, l *lab.VMLab) error {
		start := time.Now()
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		raw, err := l.Exec(c, relayVM, "cat", "/etc/meshspan/config.yaml")
		cancel()
		if err != nil {
			return fmt.Errorf("relay: read %s's config: %v: %s", relayVM, err, raw)
		}
		base, err := config.Parse(raw)
		if err != nil {
			return fmt.Errorf("relay: %s's config: %w", relayVM, err)
		}
		if !base.Relay.Enabled || base.Relay.Port != relayPort {
			return fmt.Errorf("relay: %s's rendered config has relay %+v; want enabled on port %d (relayOverride)", relayVM, base.Relay, relayPort)
		}
		mtu := cmp.Or(base.WireGuard.MTU, config.DefaultMTU)
		nl := l.Netlab()
		type natNode struct {
			name, sock string
			ns         *netlab.NS
			proc       *netlab.Proc
		}
		var nodes []*natNode
		for i, s := range []struct{ name, wan, gw, addr string }{
			{"nat-a", "203.0.113.51/24", "192.0.2.1/25", "192.0.2.10/25"},
			{"nat-b", "203.0.113.52/24", "192.0.2.129/25", "192.0.2.138/25"},
		} {
			sw, err := nl.Switch(fmt.Sprintf("lan%c", 'a'+i))
			if err != nil {
				return err
			}
			if _, err := nl.NATRouter(fmt.Sprintf("nat%c", 'a'+i), sw, l.Internet(), netip.MustParsePrefix(s.gw), netip.MustParsePrefix(s.wan), netlab.NATFullyRandomPorts); err != nil {
				return err
			}
			ns, err := nl.Host(s.name)
			if err != nil {
				return err
			}
			if err := sw.Attach(ns, "eth0", netip.MustParsePrefix(s.addr)); err != nil {
				return err
			}
			if err := ns.DefaultRoute(netip.MustParsePrefix(s.gw).Addr()); err != nil {
				return err
			}
			cfg := *base
			cfg.Node.Name = s.name
			cfg.Relay = config.Relay{}
			// Its own link name: a namespace agent's UAPI socket lives in
			// the shared /var/run/wireguard.
			cfg.WireGuard.Interface = fmt.Sprintf("msrelay%c%d", 'a'+i, os.Getpid()%100000)
			data, err := config.Render(&cfg)
			if err != nil {
				return err
			}
			nd := filepath.Join(dir, s.name)
			if err := os.MkdirAll(nd, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(nd, "config.yaml"), data, 0o600); err != nil {
				return err
			}
			n := &natNode{name: s.name, sock: filepath.Join(nd, "agent.sock"), ns: ns}
			n.proc, err = ns.Start(exec.Command(agentBin, "run", "--config", filepath.Join(nd, "config.yaml"),
				"--state-dir", filepath.Join(nd, "state"), "--socket", n.sock, "--wireguard", "userspace", "--no-host-policy"))
			if err != nil {
				return err
			}
			defer n.proc.Stop(5 * time.Second)
			nodes = append(nodes, n)
		}
		type peer struct{ Name, State, Path, Via, Endpoint string }
		type status struct {
			Address string
			Peers   []peer
		}
		read := func(n *natNode) (status, error) {
			var st status
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			out, err := exec.CommandContext(c, agentBin, "status", "--socket", n.sock, "-o", "json").Output()
			if err != nil {
				return st, err
			}
			err = json.Unmarshal(out, &st)
			return st, err
		}
		find := func(st status, name string) peer {
			for _, p := range st.Peers {
				if p.Name == name {
					return p
				}
			}
			return peer{Name: name, State: "absent"}
		}
		a, b := nodes[0], nodes[1]
		var sa, sb status
		deadline := time.Now().Add(4 * time.Minute)
		for {
			var ea, eb error
			sa, ea = read(a)
			sb, eb = read(b)
			pa, pb := find(sa, b.name), find(sb, a.name)
			if ea == nil && eb == nil && pa.State == "up" && pb.State == "up" && pa.Path == "relayed" && pb.Path == "relayed" && pa.Via == relayVM && pb.Via == relayVM {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("relay: %s and %s not relayed via %s within 4m: %s sees %+v (%v), %s sees %+v (%v)\n--- %s ---\n%s\n--- %s ---\n%s",
					a.name, b.name, relayVM, a.name, pa, ea, b.name, pb, eb, a.name, tail(a.proc.Output()), b.name, tail(b.proc.Output()))
			}
			time.Sleep(2 * time.Second)
		}
		up := time.Since(start)
		to, err := netip.ParsePrefix(sb.Address)
		if err != nil {
			if addr, err2 := netip.ParseAddr(sb.Address); err2 == nil {
				to = netip.PrefixFrom(addr, 128)
			} else {
				return fmt.Errorf("relay: %s's address %q: %v", b.name, sb.Address, err)
			}
		}
		// IPv6 (40) and ICMPv6 (8) headers: the payload that fills the MTU.
		size := mtu - 48
		ping := func(size int) ([]byte, error) {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return a.ns.Exec(c, "ping", "-6", "-n", "-c", "1", "-W", "3", "-M", "do", "-s", strconv.Itoa(size), to.Addr().String())
		}
		const forwarded = "meshspan_relay_forwarded_bytes_total"
		before, err := vmMetric(ctx, l, relayVM, forwarded)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		var out []byte
		for i := 0; ; i++ {
			if out, err = ping(size); err == nil {
				break
			}
			if i == 10 {
				return fmt.Errorf("relay: DF ping of %d bytes (mesh MTU %d) %s -> %s through %s: %v\n%s", size+48, mtu, a.name, b.name, relayVM, err, out)
			}
			time.Sleep(time.Second)
		}
		// Control: one byte more does not fit the mesh MTU with DF set.
		if big, err := ping(size + 1); err == nil {
			return fmt.Errorf("relay: a DF ping of %d bytes crossed a %d-byte mesh MTU: %s", size+49, mtu, big)
		}
		// The relay forwarded the echo and its reply: two packets filling
		// the MTU (keepalives meanwhile are a few dozen bytes each).
		after, err := vmMetric(ctx, l, relayVM, forwarded)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		if after-before < float64(2*mtu) {
			return fmt.Errorf("relay: %s's relay forwarded %v bytes across the DF ping; want at least %d (echo and reply at the MTU)", relayVM, after-before, 2*mtu)
		}
		// The path held: still relayed via the VM after the ping.
		if sa, err = read(a); err != nil || find(sa, b.name).Via != relayVM {
			return fmt.Errorf("relay: after the ping %s sees %s %+v (%v); want relayed via %s", a.name, b.name, find(sa, b.name), err, relayVM)
		}
		rtt := ""
		if i := strings.Index(string(out), "time="); i >= 0 {
			rtt = strings.Join(strings.Fields(string(out)[i:])[:2], " ")
		}
		l.Say("  kernel relay: %s and %s, each behind a fully-random NAT, relayed via kernel-WireGuard VM %s (relay_port %d) %v after start; DF ping of %d bytes (mesh MTU) %s -> %s: %s, %s's relay forwarded %.0f bytes meanwhile; %d bytes refused",
			a.name, b.name, relayVM, relayPort, up.Round(time.Second), size+48, a.name, b.name, rtt, relayVM, after-before, size+49)
		return nil
	}
}

// metricOverSocket prints one unlabelled sample of the agent's /metrics,
// read from its status socket (the VM has python3, not curl).
const metricOverSocket = `import socket,sys
s=socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
b=b""
while True:
    d=s.recv(65536)
    if not d: break
    b+=d
for l in b.decode().splitlines():
    if l.startswith(sys.argv[2]+" "): print(l.split()[-1])`

// vmMetric reads one of the VM agent's metrics.
func vmMetric(ctx context.Context, l *lab.VMLab, vm, name string) (float64, error) {
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := l.Exec(c, vm, "python3", "-c", metricOverSocket, "/run/meshspan/agent.sock", name)
	if err != nil {
		return 0, fmt.Errorf("%s's /metrics: %v: %s", vm, err, out)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("%s's /metrics has no sample of %s: %q", vm, name, out)
	}
	return v, nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
