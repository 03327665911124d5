package wg

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

func TestResolve(t *testing.T) {
	permErr := privError("create WireGuard link", "x", syscall.EPERM)
	for _, tc := range []struct {
		mode     Mode
		needBind bool
		probe    error
		want     Mode
		probed   bool
		why      string
	}{
		// The bug this guards: a kernel whose module is not loaded yet
		// still creates the link (the probe loads it), so auto is kernel.
		{ModeAuto, false, nil, ModeKernel, true, "can create"},
		{ModeAuto, false, ErrKernelUnavailable, ModeUserspace, true, "no WireGuard module"},
		{ModeAuto, false, permErr, ModeUserspace, true, "permission denied"},
		// Relaying on the WireGuard port needs the userspace Bind: no probe.
		{ModeAuto, true, nil, ModeUserspace, false, "relaying"},
		// Explicit modes are never second-guessed.
		{ModeKernel, false, ErrKernelUnavailable, ModeKernel, false, "--wireguard=kernel"},
		{ModeUserspace, false, nil, ModeUserspace, false, "--wireguard=userspace"},
	} {
		probed := false
		got, why := Resolve(tc.mode, tc.needBind, func() error { probed = true; return tc.probe })
		if got != tc.want || probed != tc.probed || !strings.Contains(why, tc.why) {
			t.Errorf("Resolve(%s, bind=%v, probe=%v) = %s %q (probed %v); want %s, %q (probed %v)",
				tc.mode, tc.needBind, tc.probe, got, why, probed, tc.want, tc.why, tc.probed)
		}
	}
}

// TestProbeKernel runs the real probe: on a kernel with WireGuard it must
// leave no link behind; without, it must say ErrKernelUnavailable.
func TestProbeKernel(t *testing.T) {
	err := ProbeKernel()
	switch {
	case err == nil:
		t.Log("kernel WireGuard available")
	case errors.Is(err, ErrKernelUnavailable):
		t.Log("no kernel WireGuard here")
	case errors.Is(err, syscall.EPERM) || strings.Contains(err.Error(), "permission denied"):
		t.Skip("needs CAP_NET_ADMIN:", err)
	default:
		t.Fatalf("ProbeKernel: %v", err)
	}
}
