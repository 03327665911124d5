//go:build !linux

package wg

import (
	"context"
	"net"
	"syscall"
)

// SetMark does nothing: socket marks are a Linux feature.
func SetMark(syscall.RawConn, uint32) error { return nil }

// MarkDialer returns a plain TCP dial function: socket marks are a Linux feature.
func MarkDialer(uint32) func(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}
