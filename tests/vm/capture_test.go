package vm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// startCapture records every frame on a lab switch's bridge: every frame
// any host on the underlay sends, VMs included.
func startCapture(sw *netlab.Switch) (*e2e.Capture, error) {
	return e2e.NewCapture(sw.NS(), "br0", nil)
}

// carrying counts, per IPv4 destination, the captured frames whose bytes
// contain marker (in plaintext).
func carrying(frames [][]byte, marker []byte) map[netip.Addr]int {
	out := map[netip.Addr]int{}
	for _, f := range frames {
		pkt := e2e.IPPacket(f)
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			continue
		}
		if bytes.Contains(f, marker) {
			dst, _ := netip.AddrFromSlice(pkt[16:20])
			out[dst]++
		}
	}
	return out
}

func newMarker() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "meshspan-marker-" + hex.EncodeToString(b)
}

// sendMarkers is a Python one-liner (python3 is on every node) that sends
// the marker in UDP datagrams to each address, count times, spaced by
// gap seconds; send errors (a policy drop says EPERM) are ignored.
const sendMarkers = `import socket,sys,time
m=sys.argv[1].encode()
n=int(sys.argv[2]); gap=float(sys.argv[3])
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range(n):
    for a in sys.argv[4:]:
        try: s.sendto(m,(a,7001))
        except OSError: pass
    time.sleep(gap)`

func markerArgs(marker string, count int, gap float64, dsts ...netip.Addr) []string {
	args := []string{"python3", "-c", sendMarkers, marker, fmt.Sprint(count), fmt.Sprint(gap)}
	for _, d := range dsts {
		args = append(args, d.String())
	}
	return args
}

func describe(m map[netip.Addr]int) string {
	var s []string
	for a, n := range m {
		s = append(s, fmt.Sprintf("%s: %d", a, n))
	}
	return strings.Join(s, ", ")
}
