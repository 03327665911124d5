package wg

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// SetMark sets SO_MARK on a socket. Sockets that carry the agent's own
// traffic to members' underlay addresses outside WireGuard's (relay, the
// discovery connection) need WireGuard's firewall mark: the host policy
// exempts it, where it would otherwise route them into the mesh, whose
// tunnel they may be needed to bring up.
func SetMark(rc syscall.RawConn, mark uint32) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
	}); err != nil {
		return fmt.Errorf("wg: set socket mark %#x: %w", mark, err)
	}
	if serr != nil {
		return fmt.Errorf("wg: set socket mark %#x: %w (needs CAP_NET_ADMIN)", mark, serr)
	}
	return nil
}

// MarkDialer returns a dial function for TCP whose sockets carry mark.
func MarkDialer(mark uint32) func(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error { return SetMark(rc, mark) }}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}
