package mesh

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestBadInput: each bad config or environment stops the agent with one
// line naming the cause and the fix, a non-zero exit, and nothing left
// configured in the namespace.
func TestBadInput(t *testing.T) {
	c := newCluster(t, 2, false) // n2 is only a peer in the config
	n := c.nodes[0]
	c.staticMesh()
	good, err := os.ReadFile(n.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, prefix ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		args := append(prefix, agentBin, "run", "--config", n.ConfigPath(), "--state-dir", n.StateDir(), "--socket", n.Socket(), "--wireguard", "userspace")
		out, err := n.NS.Exec(ctx, args[0], args[1:]...)
		if err == nil {
			t.Fatalf("agent exited 0; want a failure:\n%s", out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 {
			t.Errorf("agent printed %d lines; want exactly one:\n%s", len(lines), out)
		}
		if o, err := n.NS.Exec(ctx, "ip", "link", "show", "meshspan0"); err == nil {
			t.Errorf("meshspan0 left behind:\n%s", o)
		}
		if o, err := n.NS.Exec(ctx, "nft", "list", "tables"); err == nil && strings.Contains(string(o), "meshspan") {
			t.Errorf("nftables table left behind:\n%s", o)
		}
		t.Logf("agent: %s", lines[len(lines)-1])
		return lines[len(lines)-1]
	}
	expect := func(t *testing.T, line string, wants ...string) {
		t.Helper()
		for _, w := range wants {
			if !strings.Contains(line, w) {
				t.Errorf("error line %q lacks %q", line, w)
			}
		}
	}

	t.Run("invalid config", func(t *testing.T) {
		bad := strings.Replace(string(good), "mtu: 1420", "mtu: 100", 1)
		if bad == string(good) {
			t.Fatalf("config has no mtu line to break:\n%s", good)
		}
		if err := os.WriteFile(n.ConfigPath(), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(n.ConfigPath(), good, 0o600)
		expect(t, run(t), "wireguard.mtu", "1280")
	})
	t.Run("port in use", func(t *testing.T) {
		var conn *net.UDPConn
		if err := n.NS.Do(func() (err error) { conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 51820}); return err }); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		expect(t, run(t), "UDP port 51820 is already in use", "wireguard.listenPort")
	})
	t.Run("no CAP_NET_ADMIN", func(t *testing.T) {
		expect(t, run(t, "setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"), "CAP_NET_ADMIN")
	})
	t.Run("no /dev/net/tun", func(t *testing.T) {
		// ip netns exec runs us in a private mount namespace: hide the device there only.
		expect(t, run(t, "sh", "-c", `mount -t tmpfs none /dev/net && exec "$@"`, "sh"), "/dev/net/tun", "modprobe tun")
	})
	if expectedMode() == "userspace" && wireguardMode() == "auto" {
		// This kernel has no WireGuard module: asking for it must say so.
		t.Run("no kernel module", func(t *testing.T) {
			line := run(t, "sh", "-c", `exec "$@" --wireguard kernel`, "sh")
			expect(t, line, "no WireGuard module", "--wireguard=userspace")
		})
	}
	t.Run("check mode", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := n.NS.Exec(ctx, agentBin, "run", "--check", "--config", n.ConfigPath())
		if err != nil || !strings.Contains(string(out), "is valid") || !strings.Contains(string(out), "keepalive: 5s") {
			t.Errorf("run --check: %v\n%s", err, out)
		}
		if o, err := n.NS.Exec(ctx, "ip", "link", "show", "meshspan0"); err == nil {
			t.Errorf("run --check created meshspan0:\n%s", o)
		}
	})
	t.Run("bad wireguard flag", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := n.NS.Exec(ctx, agentBin, "run", "--config", n.ConfigPath(), "--wireguard", "fast")
		if err == nil || !strings.Contains(string(out), "auto, kernel, userspace") {
			t.Errorf("--wireguard=fast: %v\n%s", err, out)
		}
	})
}
