package agent

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// echoer sends ICMPv6 echo requests to peers' mesh addresses, through the
// tunnel, when the tracker asks (mesh.Status.Echo): the peer's kernel
// answers, and the answer is what tells this side the peer is alive on an
// idle link. The replies are never read (WireGuard's rx counter is what the
// tracker watches), so the socket filters every ICMPv6 type out.
type echoer struct {
	c   *icmp.PacketConn
	id  int
	seq int
}

// openEcho needs CAP_NET_RAW (the agent's systemd unit grants it).
func openEcho() (*echoer, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	if err := c.IPv6PacketConn().SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, err
	}
	return &echoer{c: c, id: os.Getpid() & 0xffff}, nil
}

func (e *echoer) send(to netip.Addr) error {
	e.seq++
	m := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: e.id, Seq: e.seq & 0xffff, Data: []byte("meshspan")}}
	b, err := m.Marshal(nil) // the kernel fills in the ICMPv6 checksum
	if err != nil {
		return err
	}
	// Never hold up the reconcile pass on a full queue.
	_ = e.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = e.c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()})
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // without the address: the agent logs each distinct error once
	}
	return err
}

func (e *echoer) Close() error { return e.c.Close() }
