package relay

import (
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// markBind records the marks set on a real standard Bind.
type markBind struct {
	conn.Bind
	marks []uint32
}

func (b *markBind) SetMark(m uint32) error {
	b.marks = append(b.marks, m)
	return b.Bind.SetMark(m)
}

func TestServeMarksItsSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	b := &markBind{Bind: conn.NewDefaultBind()}
	_, wait, err := testServer(t, testKey(t), WithMark(0x20)).Serve(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if len(b.marks) != 1 || b.marks[0] != 0x20 {
		t.Errorf("marks set on the relay socket: %#x; want [0x20]", b.marks)
	}
}

func TestProxyUplinkMarked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	p, err := NewProxy(testKey(t), [32]byte{1}, netip.MustParseAddrPort("127.0.0.1:51820"), "127.0.0.1:0", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.SetMark(0x20); err != nil {
		t.Fatal(err)
	}
	rc, err := p.uplink.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	rc.Control(func(fd uintptr) { mark, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK) })
	if gerr != nil || mark != 0x20 {
		t.Errorf("proxy uplink mark = %#x (%v), want 0x20", mark, gerr)
	}
}
