package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// capture is tcpdump on a lab switch's bridge: every frame any host on the
// underlay sends, VMs included.
type capture struct {
	p    *netlab.Proc
	file string
}

func startCapture(ctx context.Context, sw *netlab.Switch, dir string) (*capture, error) {
	c := &capture{file: filepath.Join(dir, fmt.Sprintf("br0-%d.pcap", time.Now().UnixNano()))}
	p, err := sw.NS().Start(exec.Command("tcpdump", "-i", "br0", "-n", "-U", "-s", "512", "-w", c.file))
	if err != nil {
		return nil, err
	}
	c.p = p
	deadline := time.Now().Add(15 * time.Second)
	for !bytes.Contains(p.Output(), []byte("listening on")) {
		if done, err := p.Exited(); done {
			return nil, fmt.Errorf("tcpdump exited: %v: %s", err, p.Output())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Kill()
			return nil, fmt.Errorf("tcpdump not listening after 15s: %s", p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c, nil
}

func (c *capture) stop() {
	c.p.Signal(syscall.SIGINT)
	c.p.Stop(5 * time.Second)
}

// carrying counts, per IPv4 destination, the captured frames whose bytes
// contain marker (in plaintext).
func (c *capture) carrying(marker []byte) (map[netip.Addr]int, error) {
	b, err := os.ReadFile(c.file)
	if err != nil {
		return nil, err
	}
	return framesCarrying(b, marker), nil
}

// framesCarrying reads a pcap of Ethernet frames (link type 1).
func framesCarrying(pcap, marker []byte) map[netip.Addr]int {
	out := map[netip.Addr]int{}
	if len(pcap) < 24 || binary.LittleEndian.Uint32(pcap) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(pcap[20:]) != 1 {
		return out
	}
	for off := 24; off+16 <= len(pcap); {
		incl := int(binary.LittleEndian.Uint32(pcap[off+8:]))
		rec := pcap[off+16 : min(off+16+incl, len(pcap))]
		off += 16 + incl
		if len(rec) < 14+20 || binary.BigEndian.Uint16(rec[12:]) != 0x0800 {
			continue
		}
		if bytes.Contains(rec, marker) {
			dst, _ := netip.AddrFromSlice(rec[14+16 : 14+20])
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
