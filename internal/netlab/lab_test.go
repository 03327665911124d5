package netlab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestNewRejectsBadNames(t *testing.T) {
	for _, p := range []string{"", "Upper", "1digit", "toolongprefix", "a-b"} {
		if _, err := netlab.New(p); err == nil {
			t.Errorf("New(%q): want error", p)
		}
	}
	l, err := netlab.New("ok")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.ID(), "ok-") || len(l.ID()) != len("ok-")+6 {
		t.Errorf("ID %q: want ok- and six hex digits", l.ID())
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close of an empty lab: %v", err)
	}
}

func TestPingAcrossSwitch(t *testing.T) {
	t.Parallel()
	lab := netlab.NewT(t)
	sw, err := lab.Switch("sw")
	if err != nil {
		t.Fatal(err)
	}
	a, err := lab.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.Host("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(a, "eth0", pfx("192.0.2.1/24"), pfx("2001:db8::1/64")); err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(b, "eth0", pfx("192.0.2.2/24"), pfx("2001:db8::2/64")); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"192.0.2.2", "2001:db8::2"} {
		if out, err := a.Exec(ctx(t), "ping", "-c", "1", "-W", "3", dst); err != nil {
			t.Fatalf("ping %s from a: %v\n%s", dst, err, out)
		}
	}
	if err := a.SetMTU("eth0", 1280); err != nil {
		t.Fatal(err)
	}
	link, err := a.Netlink().LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if got := link.Attrs().MTU; got != 1280 {
		t.Errorf("MTU after SetMTU(1280) = %d", got)
	}
	// A 1300-byte ping with DF set no longer fits.
	if _, err := a.Exec(ctx(t), "ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1300", "192.0.2.2"); err == nil {
		t.Error("1300-byte DF ping passed a 1280 MTU link")
	}
	if err := a.SetMTU("eth0", 20); err == nil {
		t.Error("SetMTU(20): want error")
	}
	if err := sw.Attach(a, "this-name-is-too-long"); err == nil {
		t.Error("Attach with a 21-character interface name: want error")
	}
}

func TestDirectLinkAndRoutes(t *testing.T) {
	t.Parallel()
	lab := netlab.NewT(t)
	a, err := lab.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	r, err := lab.Host("r")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.Host("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(netlab.LinkEnd{NS: a, Name: "to-r", Addrs: []netip.Prefix{pfx("192.0.2.1/30")}},
		netlab.LinkEnd{NS: r, Name: "to-a", Addrs: []netip.Prefix{pfx("192.0.2.2/30")}}); err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(netlab.LinkEnd{NS: r, Name: "to-b", Addrs: []netip.Prefix{pfx("198.51.100.1/30")}},
		netlab.LinkEnd{NS: b, Name: "to-r", Addrs: []netip.Prefix{pfx("198.51.100.2/30")}}); err != nil {
		t.Fatal(err)
	}
	// Without forwarding and routes, a cannot reach b.
	if _, err := a.Exec(ctx(t), "ping", "-c", "1", "-W", "1", "198.51.100.2"); err == nil {
		t.Fatal("a reached b before any route existed")
	}
	if _, err := r.Exec(ctx(t), "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	if err := a.DefaultRoute(netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	if err := b.Route(pfx("192.0.2.0/30"), netip.MustParseAddr("198.51.100.1")); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Exec(ctx(t), "ping", "-c", "1", "-W", "3", "198.51.100.2"); err != nil {
		t.Fatalf("ping through router: %v\n%s", err, out)
	}
	if err := a.DefaultRoute(netip.MustParseAddr("2001:db8::1")); err == nil {
		// No IPv6 address on a: the gateway is unreachable, and netlink says so.
		t.Error("default route via an unreachable IPv6 gateway: want error")
	}
}

// natLab builds: private host -- lan switch -- router -- wan switch -- public host.
func natLab(t *testing.T, mode netlab.NATMode) (priv, pub *netlab.NS) {
	t.Helper()
	lab := netlab.NewT(t)
	lan, err := lab.Switch("lan")
	if err != nil {
		t.Fatal(err)
	}
	wan, err := lab.Switch("wan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.NATRouter("nat", lan, wan, pfx("198.51.100.1/24"), pfx("203.0.113.1/24"), mode); err != nil {
		t.Fatal(err)
	}
	if priv, err = lab.Host("priv"); err != nil {
		t.Fatal(err)
	}
	if pub, err = lab.Host("pub"); err != nil {
		t.Fatal(err)
	}
	if err := lan.Attach(priv, "eth0", pfx("198.51.100.10/24")); err != nil {
		t.Fatal(err)
	}
	if err := wan.Attach(pub, "eth0", pfx("203.0.113.20/24")); err != nil {
		t.Fatal(err)
	}
	if err := priv.DefaultRoute(netip.MustParseAddr("198.51.100.1")); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// sourcesSeen sends one UDP datagram from each local port in priv to pub
// and returns the source address:port pub saw for each.
func sourcesSeen(t *testing.T, priv, pub *netlab.NS, ports []int) []netip.AddrPort {
	t.Helper()
	var srv *net.UDPConn
	if err := pub.Do(func() (err error) {
		srv, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.20:5000")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var seen []netip.AddrPort
	for _, port := range ports {
		var c *net.UDPConn
		if err := priv.Do(func() (err error) {
			c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("198.51.100.10"), uint16(port))),
				net.UDPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.20:5000")))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, from, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("public side got nothing from port %d: %v", port, err)
		}
		if string(buf[:n]) != "hello" {
			t.Fatalf("public side got %q", buf[:n])
		}
		seen = append(seen, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
	return seen
}

func TestNATRouterPreservesPorts(t *testing.T) {
	t.Parallel()
	priv, pub := natLab(t, netlab.NATPreservePorts)
	ports := []int{40001, 40002}
	for i, got := range sourcesSeen(t, priv, pub, ports) {
		want := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.1"), uint16(ports[i]))
		if got != want {
			t.Errorf("public side saw %v, want the router's address with the port kept: %v", got, want)
		}
	}
	// The public side cannot open a connection to the private host.
	if _, err := pub.Exec(ctx(t), "ping", "-c", "1", "-W", "1", "198.51.100.10"); err == nil {
		t.Error("public host reached the private address through the NAT")
	}
}

func TestNATRouterRandomPorts(t *testing.T) {
	t.Parallel()
	for _, mode := range []netlab.NATMode{netlab.NATRandomPorts, netlab.NATFullyRandomPorts} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			priv, pub := natLab(t, mode)
			ports := []int{40001, 40002, 40003, 40004}
			kept := 0
			for i, got := range sourcesSeen(t, priv, pub, ports) {
				if got.Addr() != netip.MustParseAddr("203.0.113.1") {
					t.Errorf("public side saw %v, want the router's address 203.0.113.1", got)
				}
				if int(got.Port()) == ports[i] {
					kept++
				}
			}
			// Four 1-in-~28000 coincidences in a row do not happen.
			if kept == len(ports) {
				t.Errorf("%s NAT kept every source port %v", mode, ports)
			}
		})
	}
}

func TestNATRouterRejectsUnknownMode(t *testing.T) {
	lab := netlab.NewT(t)
	lan, err := lab.Switch("lan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.NATRouter("nat", lan, lan, pfx("198.51.100.1/24"), pfx("203.0.113.1/24"), netlab.NATMode(9)); err == nil {
		t.Fatal("NATRouter with mode 9: want error")
	}
}

func TestStartPrivateRunDirs(t *testing.T) {
	t.Parallel()
	lab := netlab.NewT(t)
	var outs [2][]byte
	for i := range 2 {
		ns, err := lab.Host(fmt.Sprintf("n%d", i))
		if err != nil {
			t.Fatal(err)
		}
		// Each node makes a socket-like file of the same name; neither must
		// see the other's, nor leave it on the host.
		p, err := ns.Start(exec.Command("sh", "-c",
			`echo pid=$$; ls -A /run/wireguard; touch /run/wireguard/wg0.sock /run/meshspan/state; echo made; ip -o link show lo`))
		if err != nil {
			t.Fatal(err)
		}
		pid := p.PID()
		if err := p.Wait(); err != nil {
			t.Fatalf("node %d: %v\n%s", i, err, p.Output())
		}
		outs[i] = p.Output()
		if want := fmt.Sprintf("pid=%d\n", pid); !bytes.HasPrefix(outs[i], []byte(want)) {
			t.Errorf("node %d output %q: want it to start with %q (the wrapper must exec the command)", i, outs[i], want)
		}
	}
	for i, out := range outs {
		if !bytes.Contains(out, []byte("\nmade\n")) || bytes.Contains(out, []byte("wg0.sock")) {
			t.Errorf("node %d saw another node's /run/wireguard or failed:\n%s", i, out)
		}
		if !bytes.Contains(out, []byte("lo:")) {
			t.Errorf("node %d: no lo in its namespace:\n%s", i, out)
		}
	}
	if _, err := os.Stat("/run/wireguard/wg0.sock"); err == nil {
		t.Error("a namespaced process wrote /run/wireguard/wg0.sock on the host")
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	t.Parallel()
	lab := netlab.NewT(t)
	ns, err := lab.Host("n")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	cmd.Stdout, cmd.Stderr = f, &out
	p, err := ns.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if p.Output() != nil {
		t.Error("Output() must be nil when the command has its own stdout")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(f.Name())
		if bytes.Contains(b, []byte("ready")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process never wrote to its log file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Stop took %v", took)
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("Wait after Stop of a TERM-ignoring process = %v, want killed by SIGKILL", err)
	}
	if done, _ := p.Exited(); !done {
		t.Error("Exited() = false after Stop")
	}
}

func TestDoRunsInsideAndRestores(t *testing.T) {
	t.Parallel()
	lab := netlab.NewT(t)
	ns, err := lab.Host("n")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := lab.Switch("sw")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(ns, "lab9", pfx("192.0.2.9/24")); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the thread must come back each time
		var inside bool
		if err := ns.Do(func() error {
			_, err := net.InterfaceByName("lab9")
			inside = err == nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !inside {
			t.Fatal("Do did not run inside the namespace")
		}
		if _, err := net.InterfaceByName("lab9"); err == nil {
			t.Fatal("lab9 visible outside Do: the thread was not restored")
		}
	}
	want := errors.New("boom")
	if err := ns.Do(func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do error = %v, want %v", err, want)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	t.Parallel()
	lab, err := netlab.New("nlc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	sw, err := lab.Switch("sw")
	if err != nil {
		t.Fatal(err)
	}
	a, err := lab.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Attach(a, "eth0", pfx("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	// Durations unique to this run (sleep takes fractions), so that the
	// check below finds these processes and no one else's.
	started := fmt.Sprintf("300.%09d", time.Now().Nanosecond())
	daemon := fmt.Sprintf("301.%09d", time.Now().Nanosecond())
	if _, err := a.Start(exec.Command("sleep", started)); err != nil {
		t.Fatal(err)
	}
	// A daemon the lab did not start, found by its namespace.
	if _, err := a.Exec(ctx(t), "sh", "-c", "sleep "+daemon+" >/dev/null 2>&1 &"); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Host("a"); err == nil {
		t.Error("a second namespace named a: want error")
	}
	if n := countNetns(t, lab.ID()); n != 2 {
		t.Fatalf("%d namespaces named %s-* before Close, want 2", n, lab.ID())
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countNetns(t, lab.ID()); n != 0 {
		t.Errorf("%d namespaces named %s-* left after Close", n, lab.ID())
	}
	pattern := "^sleep (" + strings.ReplaceAll(started, ".", `\.`) + "|" + strings.ReplaceAll(daemon, ".", `\.`) + ")$"
	if out, _ := exec.Command("pgrep", "-f", pattern).Output(); len(bytes.TrimSpace(out)) > 0 {
		// Nobody else runs these exact sleeps: anything left is ours.
		pids := strings.Fields(string(out))
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		t.Errorf("processes %v survived Close", pids)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := lab.Host("late"); err == nil {
		t.Error("Host after Close: want error")
	}
}

func countNetns(t *testing.T, id string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, id+"-") {
			n++
		}
	}
	return n
}

// A process started before more namespaces are made must survive them: each
// namespace is created on a thread that is then retired, and Pdeathsig would
// fire if that thread had forked the process.
func TestProcessSurvivesLaterNamespaces(t *testing.T) {
	t.Parallel()
	lab := netlab.NewT(t)
	ns, err := lab.Host("a")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ns.Start(exec.Command("sleep", "30"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := lab.Host(fmt.Sprintf("b%d", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := lab.Switch(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-p.Done():
		t.Fatalf("process died after later namespaces were made: %v", p.Wait())
	case <-time.After(300 * time.Millisecond):
	}
}
