package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// Capture records the frames on one interface of a namespace, or on all of
// them, through an AF_PACKET socket in this process: no tcpdump, no file.
// It can be read while it runs (a positive control can be waited for) and
// reports the kernel's own count of what it received and dropped, so a
// test can tell "absent" from "not seen".
type Capture struct {
	fd     int
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	frames [][]byte
	gso    []int // per frame: GSO segment payload size, 0 for a plain frame
	bytes  int
	stats  CaptureStats
}

// CaptureStats is what a stopped capture saw, counted as tcpdump counts.
type CaptureStats struct {
	// Captured is how many frames the capture kept.
	Captured int
	// Received is how many frames the kernel passed the filter, Dropped
	// how many of those did not fit the socket buffer (PACKET_STATISTICS).
	Received, Dropped int
}

// Filter is a classic BPF program the kernel runs on each frame before
// the capture sees it; nil keeps every frame.
type Filter []unix.SockFilter

// UDP keeps IPv4 and IPv6 UDP (what tcpdump's "udp" keeps, IPv6 extension
// headers aside), so the counts are of those packets only.
var UDP = Filter{
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12},                    // 0: EtherType
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 0x0800, Jt: 0, Jf: 2}, // 1: IPv4?
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 14 + 9},                // 2: its protocol
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 17, Jt: 3, Jf: 4},     // 3: UDP? keep : drop
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 0x86dd, Jt: 0, Jf: 3}, // 4: IPv6?
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 14 + 6},                // 5: next header
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 17, Jt: 0, Jf: 1},     // 6: UDP?
	{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000},                             // 7: keep
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},                                   // 8: drop
}

// vnetHdrLen is sizeof(struct virtio_net_hdr).
const vnetHdrLen = 10

// captureLimit bounds the bytes a capture keeps; Received still counts all.
const captureLimit = 32 << 20

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// StartCapture is NewCapture that fails t, stops at cleanup and logs the
// kernel's drops there.
func StartCapture(t testing.TB, ns *netlab.NS, ifname string, f Filter) *Capture {
	t.Helper()
	c, err := NewCapture(ns, ifname, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if st := c.Stats(); st.Dropped > 0 {
			t.Logf("capture on %s %q: the kernel dropped %d frames (%d captured)", ns.Name(), ifname, st.Dropped, st.Captured)
		}
	})
	return c
}

// NewCapture starts recording frames on ifname inside ns, or on every
// interface of ns when ifname is "" (as tcpdump -i any: a frame a bridge
// forwards shows once on each port). The caller stops it.
func NewCapture(ns *netlab.NS, ifname string, f Filter) (*Capture, error) {
	c := &Capture{stop: make(chan struct{}), done: make(chan struct{})}
	err := ns.Do(func() error {
		index := 0
		if ifname != "" {
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			index = ifi.Index
		}
		// Protocol 0 receives nothing until bind, so no frame arrives
		// before the options and the filter are in place.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := setup(fd, f); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %q: %w", ifname, err)
		}
		// Promiscuous, as tcpdump makes it: a bridge device passes up
		// the frames it forwards between its ports only then. The kernel
		// drops the membership with the socket.
		if index != 0 {
			mreq := unix.PacketMreq{Ifindex: int32(index), Type: unix.PACKET_MR_PROMISC}
			if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
				unix.Close(fd)
				return fmt.Errorf("promiscuous mode on %q: %w", ifname, err)
			}
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: capture on %s %q: %w", ns.Name(), ifname, err)
	}
	go c.loop()
	return c, nil
}

func setup(fd int, f Filter) error {
	// A virtio-net header before each frame tells GSO frames' segment
	// size, so tests can reason about packets as they go on the wire.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	// 32 MiB: on a busy host the loop may not run for a while, and the
	// kernel drops what does not fit meanwhile (counted in Stats).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if f != nil {
		prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
		}
	}
	return nil
}

func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, 65536+vnetHdrLen)
	for {
		select {
		case <-c.stop:
			// What the kernel queued before Stop belongs to the capture:
			// on a busy host this loop may not have run at all yet.
			for {
				n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
				if err != nil {
					return
				}
				c.record(buf[:n])
			}
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // timeout: look at stop again
		}
		c.record(buf[:n])
	}
}

// record keeps one frame read with its virtio-net header.
func (c *Capture) record(b []byte) {
	if len(b) <= vnetHdrLen {
		return
	}
	gso := int(binary.LittleEndian.Uint16(b[4:6])) // virtio_net_hdr.gso_size
	if b[1] == 0 {                                 // gso_type none
		gso = 0
	}
	c.mu.Lock()
	if c.bytes < captureLimit {
		c.frames = append(c.frames, append([]byte(nil), b[vnetHdrLen:]...))
		c.gso = append(c.gso, gso)
		c.bytes += len(b)
	}
	c.mu.Unlock()
}

// Stop ends the capture (idempotent) and returns every frame seen.
func (c *Capture) Stop() [][]byte {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
		// The kernel counts what it queued and what it dropped; reading
		// the counters resets them, so they are read once, here.
		if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.mu.Lock()
			c.stats.Received, c.stats.Dropped = int(st.Packets), int(st.Drops)
			c.mu.Unlock()
		}
		unix.Close(c.fd)
	}
	return c.Frames()
}

// Stats is what the capture saw; Received and Dropped are known once it
// has stopped.
func (c *Capture) Stats() CaptureStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Captured = len(c.frames)
	return st
}

// Dropped is how many frames the kernel dropped (known once stopped).
func (c *Capture) Dropped() int { return c.Stats().Dropped }

// Proves fails t when the capture dropped more frames than it kept: then
// the absence of something in it proves nothing.
func (c *Capture) Proves(t testing.TB, what string) {
	t.Helper()
	if st := c.Stats(); st.Dropped > st.Captured {
		t.Fatalf("the %s capture dropped %d frames and kept %d: it proves nothing", what, st.Dropped, st.Captured)
	}
}

// Frames returns the frames so far.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// GSO returns each frame's GSO segment size (0 for plain frames).
func (c *Capture) GSO() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.gso...)
}

// Count is how many frames so far pred holds for.
func (c *Capture) Count(pred func([]byte) bool) int {
	n := 0
	for _, f := range c.Frames() {
		if pred(f) {
			n++
		}
	}
	return n
}

// Has reports whether a frame so far holds marker (never, for an empty one).
func (c *Capture) Has(marker []byte) bool {
	return c.Count(func(f []byte) bool { return Contains(f, marker) }) > 0
}

// Contains is bytes.Contains, except that an empty marker is never found.
func Contains(b, sub []byte) bool {
	return len(sub) > 0 && bytes.Contains(b, sub)
}

// IPPacket strips the Ethernet header of a frame; nil for what is not IP.
func IPPacket(frame []byte) []byte {
	if len(frame) < 14 {
		return nil
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case 0x0800, 0x86dd:
		return frame[14:]
	}
	return nil
}

// Transport returns an IP packet's protocol and its header+payload
// (IPv6 extension headers are not followed).
func Transport(pkt []byte) (proto byte, l4 []byte) {
	if len(pkt) < 1 {
		return 0, nil
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return 0, nil
		}
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < ihl {
			return 0, nil
		}
		return pkt[9], pkt[ihl:]
	case 6:
		if len(pkt) < 40 {
			return 0, nil
		}
		return pkt[6], pkt[40:]
	}
	return 0, nil
}
