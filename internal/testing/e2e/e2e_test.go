package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

func TestPollReportsTheLastObservation(t *testing.T) {
	n := 0
	err := e2e.Poll(50*time.Millisecond, time.Millisecond, func() (bool, string) {
		n++
		return false, "seen " + strings.Repeat("x", n%3)
	})
	if err == nil || !strings.Contains(err.Error(), "not within 50ms: seen") {
		t.Fatalf("Poll that never holds = %v, want a timeout naming the last observation", err)
	}
	if n < 2 {
		t.Errorf("Poll checked %d times in 50 ms at a 1 ms interval", n)
	}
	n = 0
	if err := e2e.Poll(time.Minute, time.Millisecond, func() (bool, string) { n++; return n == 3, "" }); err != nil || n != 3 {
		t.Errorf("Poll = %v after %d checks, want nil after 3", err, n)
	}
}

// The UDP filter keeps UDP and only UDP; the counts are the kernel's and
// the capture can be read while it runs.
func TestCaptureFiltersAndCounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	lab := netlab.NewT(t)
	sw, err := lab.Switch("sw")
	if err != nil {
		t.Fatal(err)
	}
	var hosts [2]*netlab.NS
	for i, addr := range []string{"192.0.2.1/24", "192.0.2.2/24"} {
		if hosts[i], err = lab.Host([]string{"a", "b"}[i]); err != nil {
			t.Fatal(err)
		}
		if err := sw.Attach(hosts[i], "eth0", netip.MustParsePrefix(addr)); err != nil {
			t.Fatal(err)
		}
	}
	udp := e2e.StartCapture(t, sw.NS(), "", e2e.UDP)
	all := e2e.StartCapture(t, hosts[1], "eth0", nil)
	// The bridge device sees what it forwards between hosts (tcpdump -i br0).
	bridge := e2e.StartCapture(t, sw.NS(), "br0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := hosts[0].Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "2", "192.0.2.2"); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	marker := []byte("e2e-capture-marker")
	var c net.Conn
	if err := hosts[0].Do(func() (err error) { c, err = net.Dial("udp", "192.0.2.2:9"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := e2e.Poll(5*time.Second, 50*time.Millisecond, func() (bool, string) {
		c.Write(marker)
		return udp.Has(marker) && all.Has(marker) && bridge.Has(marker), fmt.Sprintf("marker captured: udp %v, b's eth0 %v, bridge %v", udp.Has(marker), all.Has(marker), bridge.Has(marker))
	}); err != nil {
		t.Fatal(err)
	}
	udp.Stop()
	all.Stop()
	bridge.Stop()
	isICMP := func(f []byte) bool { p, _ := e2e.Transport(e2e.IPPacket(f)); return p == 1 }
	if n := udp.Count(isICMP); n != 0 {
		t.Errorf("the UDP capture kept %d ICMP frames", n)
	}
	if n := all.Count(isICMP); n < 4 {
		t.Errorf("the unfiltered capture kept %d ICMP frames, want the 2 echoes and 2 replies", n)
	}
	for name, c := range map[string]*e2e.Capture{"udp": udp, "all": all, "bridge": bridge} {
		st := c.Stats()
		if st.Received < st.Captured || st.Captured == 0 || st.Dropped != 0 {
			t.Errorf("%s capture stats %+v: want received >= captured > 0 and nothing dropped", name, st)
		}
		if !c.Has(marker) || c.Has(nil) {
			t.Errorf("%s capture: Has(marker) = %v, Has(nil) = %v", name, c.Has(marker), c.Has(nil))
		}
	}
}
