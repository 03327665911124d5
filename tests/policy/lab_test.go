// Package policy holds the namespace tests of the routing policy, the
// fail-closed guard, LAN bypass and the host firewall, run against real
// wireguard-go devices (internal/wg) and real nftables and routing tables.
package policy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

const (
	underIf = "eth0"
	wgPort  = config.DefaultListenPort
	meshMTU = config.DefaultMTU
)

// node is one host of a two-node lab: an underlay address pair, a mesh
// address, a WireGuard key, and (once started) a device and a manager.
type node struct {
	ns             *netlab.NS
	under4, under6 netip.Addr
	mesh           netip.Addr
	key            wgtypes.Key
	wgName         string
	dev            *wg.Device
	m              *netpolicy.Manager
}

// pair makes hosts a (192.0.2.1, 2001:db8::1) and b (.2, ::2) joined by a
// veth link, each with a WireGuard key and a unique mesh link name.
func pair(t *testing.T) (*node, *node) {
	t.Helper()
	lab := netlab.NewT(t)
	var n [2]*node
	for i := range n {
		ns, err := lab.Host(fmt.Sprintf("n%d", i))
		if err != nil {
			t.Fatal(err)
		}
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		n[i] = &node{
			ns:     ns,
			under4: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}),
			under6: netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i+1)),
			mesh:   netip.MustParseAddr(fmt.Sprintf("fd6d:7370:616e:2::%d", i+1)),
			key:    k,
			// Unique per run: the UAPI socket directory is shared by all
			// namespaces of the machine.
			wgName: "msp" + randHex(4),
		}
	}
	err := lab.Link(
		netlab.LinkEnd{NS: n[0].ns, Name: underIf, Addrs: []netip.Prefix{netip.PrefixFrom(n[0].under4, 24), netip.PrefixFrom(n[0].under6, 64)}},
		netlab.LinkEnd{NS: n[1].ns, Name: underIf, Addrs: []netip.Prefix{netip.PrefixFrom(n[1].under4, 24), netip.PrefixFrom(n[1].under6, 64)}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return n[0], n[1]
}

func randHex(n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// startWG opens a userspace WireGuard device inside the node's namespace,
// with the default firewall mark on its own UDP, and peers it with others
// (endpoint = their underlay IPv4, AllowedIPs = their mesh and underlay
// addresses, as KubeSpan builds them).
func (n *node) startWG(t *testing.T, psk wgtypes.Key, peers ...*node) {
	t.Helper()
	err := n.ns.Do(func() error {
		var err error
		n.dev, err = wg.Open(wg.Options{
			Name: n.wgName, Mode: wg.ModeUserspace, MTU: meshMTU, ListenPort: wgPort,
			PrivateKey: n.key, FirewallMark: config.DefaultFirewallMark,
			Address: netip.PrefixFrom(n.mesh, 64),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	dev := n.dev
	t.Cleanup(func() { dev.Close() })
	var want []wg.PeerConfig
	for _, p := range peers {
		want = append(want, wg.PeerConfig{
			PublicKey: p.key.PublicKey(), PresharedKey: psk,
			Endpoint:   netip.AddrPortFrom(p.under4, wgPort),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.mesh, 128), netip.PrefixFrom(p.under4, 32), netip.PrefixFrom(p.under6, 128)},
			Keepalive:  time.Second,
		})
	}
	if err := n.dev.SyncPeers(want); err != nil {
		t.Fatal(err)
	}
}

// manager opens a netpolicy manager on the node's namespace; Close runs at
// cleanup, and a test may close it earlier.
func (n *node) manager(t *testing.T) *netpolicy.Manager {
	t.Helper()
	m, err := netpolicy.New(netpolicy.Options{NetNSPath: n.ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	n.m = m
	t.Cleanup(func() { m.Close() })
	return m
}

// state is the node's policy State with the config defaults.
func (n *node) state() netpolicy.State {
	c := &config.Config{}
	c.ApplyDefaults()
	s, err := netpolicy.FromConfig(c)
	if err != nil {
		panic(err)
	}
	s.Interface = n.wgName
	return s
}

func hostPrefixes(as ...netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range as {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// apply is Apply that fails the test.
func (n *node) apply(t *testing.T, s netpolicy.State) {
	t.Helper()
	if err := n.m.Apply(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// --- sockets inside a namespace ---

// listenTCP serves an echo on port (all addresses, both families) inside ns.
func listenTCP(t *testing.T, ns *netlab.NS, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
}

// echo dials dst from ns, sends payload and reads it back.
func echo(ns *netlab.NS, dst netip.AddrPort, payload []byte, timeout time.Duration) error {
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", dst.String(), timeout)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(payload); err != nil {
		return err
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo from %s: %w", dst, err)
	}
	if string(got) != string(payload) {
		return fmt.Errorf("echo from %s garbled", dst)
	}
	return nil
}

// isTimeout tells a dropped connection (timeout) from a refused one.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// udpSink counts datagrams carrying marker that reach port in ns.
type udpSink struct {
	mu   sync.Mutex
	seen int
}

func (s *udpSink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.seen }

func listenUDP(t *testing.T, ns *netlab.NS, port int, marker []byte) *udpSink {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &udpSink{}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if containsBytes(buf[:n], marker) {
				s.mu.Lock()
				s.seen++
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// sendUDP sends count datagrams with marker from ns to dst.
func sendUDP(t *testing.T, ns *netlab.NS, dst netip.AddrPort, marker []byte, count int) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.Dial("udp", dst.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range count {
		c.Write(marker) // a send the kernel drops may report an error; the capture judges
	}
}

// containsBytes is bytes.Contains, except that an empty marker is never found.
func containsBytes(b, sub []byte) bool {
	return len(sub) > 0 && bytes.Contains(b, sub)
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newMarker() []byte { return []byte("MESHSPAN-PLAINTEXT-" + randHex(16)) }

// --- packet capture (AF_PACKET), no tcpdump needed ---

// capture records every frame on one interface of a namespace.
type capture struct {
	fd     int
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	frames [][]byte
	gso    []int // per frame: GSO segment payload size, 0 for a plain frame
	bytes  int
	// dropped is the kernel's count of frames that did not fit the socket
	// buffer (PACKET_STATISTICS), read when the capture stops.
	dropped int
}

// vnetHdrLen is sizeof(struct virtio_net_hdr).
const vnetHdrLen = 10

const captureLimit = 32 << 20

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startCapture(t *testing.T, ns *netlab.NS, ifname string) *capture {
	t.Helper()
	c := &capture{stop: make(chan struct{}), done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		// A virtio-net header before each frame tells GSO frames' segment
		// size, so tests can reason about packets as they go on the wire.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		// 32 MiB: on a busy host the loop may not run for a while, and
		// the kernel drops what does not fit meanwhile (counted, below).
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	go c.loop()
	t.Cleanup(func() {
		c.Stop()
		if d := c.Dropped(); d > 0 {
			t.Logf("capture on %s: the kernel dropped %d frames (%d captured)", ifname, d, len(c.Frames()))
		}
	})
	return c
}

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 65536)
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
func (c *capture) record(b []byte) {
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
func (c *capture) Stop() [][]byte {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
		if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.mu.Lock()
			c.dropped = int(st.Drops)
			c.mu.Unlock()
		}
		unix.Close(c.fd)
	}
	return c.Frames()
}

// Dropped is how many frames the kernel dropped (known once stopped).
func (c *capture) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// proves fails t when the capture dropped more frames than it kept: then
// the absence of something in it proves nothing.
func (c *capture) proves(t *testing.T, what string) {
	t.Helper()
	if d, n := c.Dropped(), len(c.Frames()); d > n {
		t.Fatalf("the %s capture dropped %d frames and kept %d: it proves nothing", what, d, n)
	}
}

// Frames returns the frames so far.
func (c *capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// GSO returns each frame's GSO segment size (0 for plain frames).
func (c *capture) GSO() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.gso...)
}

func (c *capture) count(pred func([]byte) bool) int {
	n := 0
	for _, f := range c.Frames() {
		if pred(f) {
			n++
		}
	}
	return n
}

func (c *capture) has(marker []byte) bool {
	return c.count(func(f []byte) bool { return containsBytes(f, marker) }) > 0
}

// ipPacket strips the Ethernet header of a veth frame.
func ipPacket(frame []byte) []byte {
	if len(frame) < 14 {
		return nil
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case 0x0800, 0x86dd:
		return frame[14:]
	}
	return nil
}

// transport returns the IP protocol and its header+payload.
func transport(pkt []byte) (proto byte, l4 []byte) {
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
		return pkt[6], pkt[40:] // our tests send no extension headers
	}
	return 0, nil
}

// isWireGuardUDP matches UDP to or from the WireGuard port in a veth frame.
func isWireGuardUDP(frame []byte) bool {
	proto, l4 := transport(ipPacket(frame))
	if proto != unix.IPPROTO_UDP || len(l4) < 8 {
		return false
	}
	return binary.BigEndian.Uint16(l4[0:2]) == wgPort || binary.BigEndian.Uint16(l4[2:4]) == wgPort
}

// synMSS returns the MSS option of a TCP SYN (raw IP packet, as a TUN
// capture gives them), or 0.
func synMSS(pkt []byte) int {
	proto, l4 := transport(pkt)
	if proto != unix.IPPROTO_TCP || len(l4) < 20 || l4[13]&0x12 != 0x02 {
		return 0
	}
	off := int(l4[12]>>4) * 4
	if off > len(l4) {
		return 0
	}
	opts := l4[20:off]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return 0
		}
		if opts[i] == 2 && opts[i+1] == 4 && i+4 <= len(opts) {
			return int(binary.BigEndian.Uint16(opts[i+2 : i+4]))
		}
		i += int(opts[i+1])
	}
	return 0
}
