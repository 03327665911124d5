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

// must fails the test on a setup error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func host(t *testing.T, lab *netlab.Lab, name string) *netlab.NS {
	t.Helper()
	ns, err := lab.Host(name)
	must(t, err)
	return ns
}

func newSwitch(t *testing.T, lab *netlab.Lab, name string) *netlab.Switch {
	t.Helper()
	sw, err := lab.Switch(name)
	must(t, err)
	return sw
}

// errOf is the error of a call whose value a test does not need.
func errOf[T any](_ T, err error) error { return err }

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
	sw := newSwitch(t, lab, "sw")
	a := host(t, lab, "a")
	b := host(t, lab, "b")
	must(t, sw.Attach(a, "eth0", pfx("192.0.2.1/24"), pfx("2001:db8::1/64")))
	must(t, sw.Attach(b, "eth0", pfx("192.0.2.2/24"), pfx("2001:db8::2/64")))
	for _, dst := range []string{"192.0.2.2", "2001:db8::2"} {
		if out, err := a.Exec(ctx(t), "ping", "-c", "1", "-W", "3", dst); err != nil {
			t.Fatalf("ping %s from a: %v\n%s", dst, err, out)
		}
	}
	must(t, a.SetMTU("eth0", 1280))
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
	a := host(t, lab, "a")
	r := host(t, lab, "r")
	b := host(t, lab, "b")
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
	must(t, errOf(r.Exec(ctx(t), "sysctl", "-qw", "net.ipv4.ip_forward=1")))
	must(t, a.DefaultRoute(netip.MustParseAddr("192.0.2.2")))
	must(t, b.Route(pfx("192.0.2.0/30"), netip.MustParseAddr("198.51.100.1")))
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
	lan := newSwitch(t, lab, "lan")
	wan := newSwitch(t, lab, "wan")
	must(t, errOf(lab.NATRouter("nat", lan, wan, pfx("198.51.100.1/24"), pfx("203.0.113.1/24"), mode)))
	priv = host(t, lab, "priv")
	pub = host(t, lab, "pub")
	must(t, lan.Attach(priv, "eth0", pfx("198.51.100.10/24")))
	must(t, wan.Attach(pub, "eth0", pfx("203.0.113.20/24")))
	must(t, priv.DefaultRoute(netip.MustParseAddr("198.51.100.1")))
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
		must(t, errOf(c.Write([]byte("hello"))))
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
	lan := newSwitch(t, lab, "lan")
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
	ns := host(t, lab, "n")
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
	must(t, p.Stop(200*time.Millisecond))
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
	ns := host(t, lab, "n")
	sw := newSwitch(t, lab, "sw")
	must(t, sw.Attach(ns, "lab9", pfx("192.0.2.9/24")))
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
	sw := newSwitch(t, lab, "sw")
	a := host(t, lab, "a")
	must(t, sw.Attach(a, "eth0", pfx("192.0.2.1/24")))
	// Durations unique to this run (sleep takes fractions), so that the
	// check below finds these processes and no one else's.
	started := fmt.Sprintf("300.%09d", time.Now().Nanosecond())
	daemon := fmt.Sprintf("301.%09d", time.Now().Nanosecond())
	must(t, errOf(a.Start(exec.Command("sleep", started))))
	// A daemon the lab did not start, found by its namespace.
	must(t, errOf(a.Exec(ctx(t), "sh", "-c", "sleep "+daemon+" >/dev/null 2>&1 &")))
	if _, err := lab.Host("a"); err == nil {
		t.Error("a second namespace named a: want error")
	}
	if n := countNetns(t, lab.ID()); n != 2 {
		t.Fatalf("%d namespaces named %s-* before Close, want 2", n, lab.ID())
	}
	must(t, lab.Close())
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
	ns := host(t, lab, "a")
	p, err := ns.Start(exec.Command("sleep", "30"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		host(t, lab, fmt.Sprintf("b%d", i))
		newSwitch(t, lab, fmt.Sprintf("s%d", i))
	}
	select {
	case <-p.Done():
		t.Fatalf("process died after later namespaces were made: %v", p.Wait())
	case <-time.After(300 * time.Millisecond):
	}
}
