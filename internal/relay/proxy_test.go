package relay

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeKernel stands in for a kernel WireGuard device: a UDP socket on
// loopback. (This kernel has no WireGuard module, so the real kernel path
// cannot run here; the proxy only moves datagrams, which this exercises.)
func fakeKernel(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// newProxy is a Proxy for key in front of a kernel at kernel, closed when
// the test ends.
func newProxy(t *testing.T, k *Key, key wgtypes.Key, kernel netip.AddrPort) *Proxy {
	t.Helper()
	p, err := NewProxy(k, key, kernel, "127.0.0.1:0", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestProxyCarriesKernelTrafficThroughRelay(t *testing.T) {
	k := testKey(t)
	srv, relay, rec := startRelay(t, k)
	ka, kaAddr := fakeKernel(t)
	kb, kbAddr := fakeKernel(t)
	keyA, _ := wgtypes.GeneratePrivateKey()
	keyB, _ := wgtypes.GeneratePrivateKey()
	admit(srv, keyA.PublicKey(), keyB.PublicKey())
	pa := newProxy(t, k, keyA, kaAddr)
	pb := newProxy(t, k, keyB, kbAddr)
	pa.SetRelays(at(srv, relay))
	pb.SetRelays(at(srv, relay))
	waitFor(t, "proxies registered", 5*time.Second, func() bool {
		return !pa.Relays()[0].Registered.IsZero() && !pb.Relays()[0].Registered.IsZero()
	})
	epB, err := pa.Endpoint(relay, keyB.PublicKey()) // kernel A's endpoint for B
	if err != nil {
		t.Fatal(err)
	}
	epA, err := pb.Endpoint(relay, keyA.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !epB.Addr().IsLoopback() {
		t.Fatalf("proxy endpoint %s is not on loopback", epB)
	}

	msg := append([]byte{4, 0, 0, 0}, []byte("ciphertext-stand-in")...)
	if _, err := ka.WriteToUDPAddrPort(msg, epB); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	kb.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := kb.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("kernel B got nothing: %v", err)
	}
	if !bytes.Equal(buf[:n], msg) || from != epA {
		t.Fatalf("kernel B got %q from %s, want %q from %s", buf[:n], from, msg, epA)
	}
	// And back, to the address B's kernel saw A at.
	reply := append([]byte{2, 0, 0, 0}, []byte("response")...)
	kb.WriteToUDPAddrPort(reply, from)
	ka.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err = ka.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], reply) || from != epB {
		t.Fatalf("kernel A got %q from %s (%v), want %q from %s", buf[:n], from, err, reply, epB)
	}
	if srv.Forwarded() != 2 || len(rec.frames()) < 2 {
		t.Errorf("relay forwarded %d", srv.Forwarded())
	}

	// Nobody but the local kernel device may use a proxy port.
	other, _ := fakeKernel(t)
	other.WriteToUDPAddrPort(msg, epB)
	kb.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := kb.ReadFromUDPAddrPort(buf); err == nil {
		t.Error("a packet from another local socket went through the proxy")
	}
	if _, err := pa.Endpoint(netip.MustParseAddrPort("203.0.113.9:1"), keyB.PublicKey()); err == nil {
		t.Error("Endpoint accepted an unconfigured relay")
	}

	// A frame from a peer the agent does not route through this relay (it
	// never asked for its Endpoint) is dropped, and opens no socket.
	keyC, _ := wgtypes.GeneratePrivateKey()
	kc, kcAddr := fakeKernel(t)
	admit(srv, keyC.PublicKey())
	pc := newProxy(t, k, keyC, kcAddr)
	pc.SetRelays(at(srv, relay))
	waitFor(t, "proxy C registered", 5*time.Second, func() bool { return !pc.Relays()[0].Registered.IsZero() })
	epC, err := pa.Endpoint(relay, keyC.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	before := srv.Forwarded()
	ka.WriteToUDPAddrPort(msg, epC)
	waitFor(t, "relay forwarded to C", 5*time.Second, func() bool { return srv.Forwarded() > before })
	kc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := kc.ReadFromUDPAddrPort(buf); err == nil {
		t.Error("a frame from a peer C never asked for reached C's kernel")
	}
	pc.mu.Lock()
	opened := len(pc.peers)
	pc.mu.Unlock()
	if opened != 0 {
		t.Errorf("proxy C opened %d sockets for a peer it never asked for", opened)
	}
}

// TestProxyProbesThroughTheRelay: a proxy probes a peer through the relay
// and the peer's proxy answers without the kernel seeing the probe, as
// Binds do; a Bind's probe is answered by a proxy too.
func TestProxyProbesThroughTheRelay(t *testing.T) {
	k := testKey(t)
	srv, relay, _ := startRelay(t, k)
	_, kaAddr := fakeKernel(t)
	kb, kbAddr := fakeKernel(t)
	keyA, _ := wgtypes.GeneratePrivateKey()
	keyB, _ := wgtypes.GeneratePrivateKey()
	n := newNode(t, k, "10.99.0.3", nil) // a userspace member
	admit(srv, keyA.PublicKey(), keyB.PublicKey(), n.key.PublicKey())
	pa := newProxy(t, k, keyA, kaAddr)
	pb := newProxy(t, k, keyB, kbAddr)
	for _, p := range []*Proxy{pa, pb} {
		p.SetRelays(at(srv, relay))
	}
	n.bind.SetRelays(at(srv, relay))
	waitFor(t, "all registered", 5*time.Second, func() bool {
		return !pa.Relays()[0].Registered.IsZero() && !pb.Relays()[0].Registered.IsZero() && registered(n.bind)
	})
	// The agent routes A and the member through the relay on B (and B on A).
	for _, ask := range []struct {
		p    *Proxy
		peer wgtypes.Key
	}{{pb, keyA}, {pa, keyB}, {pb, n.key}} {
		if _, err := ask.p.Endpoint(relay, ask.peer.PublicKey()); err != nil {
			t.Fatal(err)
		}
	}

	pa.PingVia(relay, keyB.PublicKey())
	waitFor(t, "B's proxy answering A's probe", 5*time.Second, func() bool { return !pa.Answered(relay, keyB.PublicKey()).IsZero() })
	n.bind.PingVia(relay, keyB.PublicKey())
	waitFor(t, "B's proxy answering the member's probe", 5*time.Second, func() bool { return !n.bind.Answered(relay, keyB.PublicKey()).IsZero() })
	// Neither probe reached B's kernel.
	buf := make([]byte, 2048)
	kb.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if k, _, err := kb.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("a probe reached the kernel: %x", buf[:k])
	}
	// Removing the relay forgets its answers.
	pa.SetRelays(nil)
	if got := pa.Answered(relay, keyB.PublicKey()); !got.IsZero() {
		t.Errorf("answer through a removed relay still reported: %v", got)
	}
}
