//go:build !linux

package fwmark

import (
	"context"
	"net"
	"syscall"
)

// Set does nothing: socket marks are a Linux feature.
func Set(syscall.RawConn, uint32) error { return nil }

// Dialer returns a plain TCP dial function: socket marks are a Linux feature.
func Dialer(uint32) func(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}
