package agent

import (
	"context"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// TestDiscoveryDialerMarked: the discovery connection carries WireGuard's
// firewall mark, so host policy leaves it on the underlay even when the
// service's address is a member's (no bootstrap deadlock).
func TestDiscoveryDialerMarked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	sec, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := &config.Config{Cluster: config.Cluster{ID: sec.ID, Secret: sec.Secret},
		Discovery: config.Discovery{Endpoints: []string{"http://" + l.Addr().String() + "/"}}}
	cfg.ApplyDefaults()
	mac := func() (net.HardwareAddr, error) { return net.HardwareAddr{2, 0, 0, 0, 0, 1}, nil }
	a, err := newAgent(Options{Config: cfg, StateDir: t.TempDir(), MemoryLimit: -1, MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	o := a.discoveryOptions()
	if o.Dialer == nil {
		t.Fatal("discovery client has no dialer: its sockets would not carry the firewall mark")
	}
	c, err := o.Dialer(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	rc.Control(func(fd uintptr) { mark, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK) })
	if gerr != nil || mark != int(cfg.Routing.FirewallMark) {
		t.Errorf("discovery socket mark = %#x (%v), want the firewall mark %#x", mark, gerr, cfg.Routing.FirewallMark)
	}

	a, err = newAgent(Options{Config: cfg, StateDir: t.TempDir(), MemoryLimit: -1, MAC: mac, NoHostPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.discoveryOptions().Dialer != nil {
		t.Error("with --no-host-policy the discovery dialer should be the default (nothing to exempt)")
	}
}
