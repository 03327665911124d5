package wg

import "errors"

// Resolve turns the requested mode into the back end to open. Auto means
// the kernel whenever the kernel can make a WireGuard link (probe returns
// nil), not only when the module happens to be loaded already: a fresh boot
// has not loaded it, and creating a link is what loads it. needBind says the
// caller needs a custom UDP transport (relaying on the WireGuard port), which
// only userspace can take. why is a short reason for the log.
func Resolve(m Mode, needBind bool, probe func() error) (mode Mode, why string) {
	switch m {
	case ModeKernel, ModeUserspace:
		return m, "asked for with --wireguard=" + string(m)
	}
	if needBind {
		return ModeUserspace, "relaying on the WireGuard port needs the userspace transport"
	}
	err := probe()
	switch {
	case err == nil:
		return ModeKernel, "the kernel can create a WireGuard link"
	case errors.Is(err, ErrKernelUnavailable):
		return ModeUserspace, "the kernel has no WireGuard module"
	default:
		return ModeUserspace, "probing kernel WireGuard failed: " + err.Error()
	}
}
