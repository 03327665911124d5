package netlab_test

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// A node behind a NAT router reaches a public server; the server sees the
// router's address.
func Example() {
	lab, err := netlab.New("ex")
	if err != nil {
		panic(err)
	}
	defer lab.Close() // stops processes, then removes every namespace

	internet, _ := lab.Switch("internet")
	home, _ := lab.Switch("home")
	lab.NATRouter("nat", home, internet,
		netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("203.0.113.1/24"), netlab.NATPreservePorts)

	server, _ := lab.Host("server")
	internet.Attach(server, "eth0", netip.MustParsePrefix("203.0.113.10/24"))
	laptop, _ := lab.Host("laptop")
	home.Attach(laptop, "eth0", netip.MustParsePrefix("198.51.100.20/24"))
	laptop.DefaultRoute(netip.MustParseAddr("198.51.100.1"))

	// A process with its own /run/wireguard and /run/meshspan.
	srv, _ := server.Start(exec.Command("iperf3", "-s"))
	defer srv.Stop(netlab.StopTimeout)

	out, err := laptop.Exec(context.Background(), "ping", "-c", "1", "203.0.113.10")
	fmt.Println(string(out), err)
}

// In tests, NewT closes the lab in t.Cleanup, even when the test fails.
func ExampleNewT() {
	var t *testing.T // the test's t
	lab := netlab.NewT(t)
	a, _ := lab.Host("a")
	_ = a.Do(func() error {
		// Go code here runs inside namespace a; sockets opened here stay there.
		return nil
	})
}
