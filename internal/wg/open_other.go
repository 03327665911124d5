//go:build !linux

package wg

import "errors"

// Open creates the mesh interface; only Linux is supported.
func Open(opts Options) (*Device, error) {
	return nil, errors.New("wg: the agent runs on Linux only")
}

// ProbeKernel reports whether the kernel can create a WireGuard link.
func ProbeKernel() error { return ErrKernelUnavailable }
