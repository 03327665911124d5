package fwmark

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// Set sets SO_MARK on a socket (needs CAP_NET_ADMIN).
func Set(rc syscall.RawConn, mark uint32) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
	}); err != nil {
		return fmt.Errorf("fwmark: set socket mark %#x: %w", mark, err)
	}
	if serr != nil {
		return fmt.Errorf("fwmark: set socket mark %#x: %w (needs CAP_NET_ADMIN)", mark, serr)
	}
	return nil
}

// Dialer returns a dial function for TCP whose sockets carry mark.
func Dialer(mark uint32) func(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error { return Set(rc, mark) }}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}
