package relay

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bareMember is a relay member without WireGuard: a UDP socket that registered under pub.
type bareMember struct {
	c   *net.UDPConn
	pub [32]byte
	tag byte
}

func newBareMember(t *testing.T, k *Key, s *Server, relay netip.AddrPort, tag byte) *bareMember {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	priv := testPrivate(t)
	pub, _ := publicKey(priv)
	m := &bareMember{c: c, pub: pub, tag: tag}
	admit(s, pub)
	pair, err := k.Pair(priv, s.PublicKey(), RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort(RegisterFrame(pair, m.pub, 1), relay); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil || n != registeredLen || buf[1] != typeRegistered {
		t.Fatalf("bareMember %d: no registration answer (%d bytes, %v)", tag, n, err)
	}
	return m
}

// frame is relay frame i of a test burst: Send to dst, size bytes long.
func frame(dst ID, i byte, size int) []byte {
	f := bytes.Repeat([]byte{i}, size)
	putDataHeader(f, typeSend, dst)
	f[DataOverhead] = 4 // a WireGuard transport message follows
	return f
}

// TestListenerForwardsCoalescedBurstsFrameByFrame sends one UDP GSO message
// whose frames go to two members, with an undeliverable frame between
// them and a shorter last frame: the relay must route every frame on its
// own, rewrite each header, and drop only the bad one.
func TestListenerForwardsCoalescedBurstsFrameByFrame(t *testing.T) {
	k := testKey(t)
	s := testServer(t, k)
	l, err := s.ListenUDP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	relay := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Port())
	a, b, c := newBareMember(t, k, s, relay, 1), newBareMember(t, k, s, relay, 2), newBareMember(t, k, s, relay, 3)
	idB, idC := IDOf(b.pub), IDOf(c.pub)

	const seg = 100
	dsts := []ID{idB, idB, idB, {9, 9, 9}, idC, idC, idC, idB}
	var msg []byte
	for i, d := range dsts {
		size := seg
		if i == len(dsts)-1 {
			size = 60
		}
		msg = append(msg, frame(d, byte(i), size)...)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = seg
	if _, _, err := a.c.WriteMsgUDPAddrPort(msg, oob, relay); err != nil {
		t.Fatal(err)
	}

	want := map[*bareMember][]byte{b: {0, 1, 2, 7}, c: {4, 5, 6}}
	for m, frames := range want {
		buf := make([]byte, 2048)
		for _, i := range frames {
			m.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := m.c.Read(buf)
			if err != nil {
				t.Fatalf("bareMember %d: frame %d did not arrive: %v", m.tag, i, err)
			}
			size := seg
			if i == 7 {
				size = 60
			}
			exp := frame(IDOf(a.pub), i, size)
			exp[1] = typeDeliver
			if !bytes.Equal(buf[:n], exp) {
				t.Errorf("bareMember %d: got %x\nwant frame %d %x", m.tag, buf[:min(n, 24)], i, exp[:24])
			}
		}
	}
	if got := s.Dropped(DropUnknownPeer); got != 1 {
		t.Errorf("dropped %d frames for an unknown peer, want 1", got)
	}
	if got := s.Forwarded(); got != 7 {
		t.Errorf("forwarded %d frames, want 7", got)
	}
}

func TestListenerMarksItsSockets(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	l, err := testServer(t, testKey(t), WithMark(0x20)).ListenUDP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, fd := range l.fds {
		if fd < 0 {
			continue
		}
		if m, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK); err != nil || m != 0x20 {
			t.Errorf("socket mark = %#x (%v), want 0x20", m, err)
		}
	}
}
