//go:build !linux

package netpolicy

import (
	"context"
	"errors"
	"net/netip"
)

var errUnsupported = errors.New("netpolicy: routing policy and nftables need Linux")

// Manager is Linux-only; elsewhere New fails.
type Manager struct{}

// New fails on this platform.
func New(Options) (*Manager, error) { return nil, errUnsupported }

// Apply fails on this platform.
func (*Manager) Apply(context.Context, State) error { return errUnsupported }

// Plan fails on this platform.
func (*Manager) Plan(State) (Plan, error) { return Plan{}, errUnsupported }

// LiveRouted fails on this platform.
func (*Manager) LiveRouted() ([]netip.Prefix, error) { return nil, errUnsupported }

// Writes is always 0 on this platform.
func (*Manager) Writes() int { return 0 }

// Close does nothing on this platform.
func (*Manager) Close() error { return nil }

// Release does nothing on this platform.
func (*Manager) Release() {}
