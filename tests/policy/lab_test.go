// Package policy holds the namespace tests of the routing policy, the
// fail-closed guard, LAN bypass and the host firewall, run against real
// wireguard-go devices (internal/wg) and real nftables and routing tables.
package policy

import (
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
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
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
			if e2e.Contains(buf[:n], marker) {
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

func newMarker() []byte { return []byte("MESHSPAN-PLAINTEXT-" + randHex(16)) }

// --- what captures (e2e.Capture) hold ---

// isWireGuardUDP matches UDP to or from the WireGuard port in a veth frame.
func isWireGuardUDP(frame []byte) bool {
	proto, l4 := e2e.Transport(e2e.IPPacket(frame))
	if proto != unix.IPPROTO_UDP || len(l4) < 8 {
		return false
	}
	return binary.BigEndian.Uint16(l4[0:2]) == wgPort || binary.BigEndian.Uint16(l4[2:4]) == wgPort
}

// synMSS returns the MSS option of a TCP SYN (raw IP packet, as a TUN
// capture gives them), or 0.
func synMSS(pkt []byte) int {
	proto, l4 := e2e.Transport(pkt)
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
