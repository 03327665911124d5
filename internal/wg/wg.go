// Package wg runs the mesh's WireGuard interface. Two back ends sit behind
// one Device: the kernel module, driven through netlink and wgctrl, and
// wireguard-go linked in as a library on a TUN device, which also serves the
// UAPI socket so `wg show` works. Above the back end, SyncPeers makes the
// device's peer set match a desired list with the fewest changes, so live
// sessions and roamed endpoints survive every reconcile.
package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Mode selects the back end.
type Mode string

const (
	// ModeAuto uses the kernel module whenever the kernel can create a
	// WireGuard link (which loads the module), else userspace.
	ModeAuto      Mode = "auto"
	ModeKernel    Mode = "kernel"
	ModeUserspace Mode = "userspace"
)

// ParseMode reads the --wireguard flag.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeKernel, ModeUserspace:
		return m, nil
	}
	return "", fmt.Errorf("wg: mode %q is not one of auto, kernel, userspace", s)
}

// Options describe the interface to create.
type Options struct {
	// Name of the link, e.g. meshspan0.
	Name string
	Mode Mode
	MTU  int
	// ListenPort is the UDP port; it must be free.
	ListenPort int
	PrivateKey wgtypes.Key
	// FirewallMark is set on WireGuard's own UDP packets (0: none).
	FirewallMark int
	// Address is the node's mesh address with the mesh prefix length
	// (addr/64); the link gets it, so the mesh prefix routes to the link.
	Address netip.Prefix
	// Bind replaces the UDP transport of the userspace back end (e.g. a
	// relaying Bind). Nil means wireguard-go's default Bind. Kernel mode
	// cannot use it: with a Bind set, auto picks userspace.
	Bind conn.Bind
	// InFlight bounds the packets the userspace device holds per direction
	// (memory: 64 KiB each); 0 means DefaultInFlight, negative no bound.
	InFlight int
	// Logger receives wireguard-go's log lines (errors always, the rest at debug).
	Logger *slog.Logger
}

// PeerConfig is one peer as the device should have it.
type PeerConfig struct {
	PublicKey    wgtypes.Key
	PresharedKey wgtypes.Key
	// Endpoint, when valid, is set; when invalid the device keeps whatever
	// endpoint it has (possibly one WireGuard roamed to).
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
	// SendKeepalive sends one keepalive to an existing peer now (with
	// Keepalive set): SyncPeers turns its persistent keepalive off and on
	// again in one configuration, which both back ends answer with an
	// immediate keepalive (the kernel's netlink and wireguard-go's UAPI
	// send one when the interval goes from zero to non-zero).
	SendKeepalive bool
}

// PeerStats is what the device reports for one peer.
type PeerStats struct {
	PublicKey     wgtypes.Key
	Endpoint      netip.AddrPort
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	AllowedIPs    []netip.Prefix
	Keepalive     time.Duration
}

// backend is what a WireGuard implementation must do; wgtypes.Config is the
// common language (wgctrl speaks it to the kernel, uapi.go to wireguard-go).
type backend interface {
	configure(cfg wgtypes.Config) error
	peers() ([]PeerStats, error)
	close() error
}

// Device is a running WireGuard interface.
type Device struct {
	name string
	mode Mode
	port int
	b    backend
	// uapiErr is why the UAPI socket is not served (wg show will not see
	// the device); nil when it is, or not applicable.
	uapiErr error
}

// UAPIError says why `wg show` cannot see this device, or nil.
func (d *Device) UAPIError() error { return d.uapiErr }

// Name is the link name.
func (d *Device) Name() string { return d.name }

// Mode is the back end in use (kernel or userspace).
func (d *Device) Mode() Mode { return d.mode }

// ListenPort is the UDP port WireGuard listens on.
func (d *Device) ListenPort() int { return d.port }

// Peers returns the live peer list.
func (d *Device) Peers() ([]PeerStats, error) { return d.b.peers() }

// Close removes the interface and everything the device made.
func (d *Device) Close() error { return d.b.close() }

// SyncPeers makes the device's peers match want: unknown peers are removed,
// new ones added, and existing ones changed only where they differ.
func (d *Device) SyncPeers(want []PeerConfig) error {
	cur, err := d.b.peers()
	if err != nil {
		return err
	}
	cfg := diffPeers(cur, want)
	if len(cfg.Peers) == 0 {
		return nil
	}
	if err := d.b.configure(cfg); err != nil {
		return fmt.Errorf("wg: configure peers of %s: %w", d.name, err)
	}
	return nil
}

// UpdatePeers configures set and removes remove, leaving every other peer
// as it is, without reading the device's peers: a change that concerns a
// few peers of thousands. A peer of set is added if new; an existing one
// gets set's AllowedIPs and keepalive, and its endpoint where set's is
// valid. Removals go first, so a peer in both is configured afresh.
func (d *Device) UpdatePeers(set []PeerConfig, remove []wgtypes.Key) error {
	var cfg wgtypes.Config
	for _, k := range remove {
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	for _, w := range set {
		if w.SendKeepalive && w.Keepalive > 0 {
			var off time.Duration // off, then on below: one keepalive now (PeerConfig.SendKeepalive)
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: w.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &off})
		}
		cfg.Peers = append(cfg.Peers, fullConfig(w))
	}
	if len(cfg.Peers) == 0 {
		return nil
	}
	if err := d.b.configure(cfg); err != nil {
		return fmt.Errorf("wg: configure peers of %s: %w", d.name, err)
	}
	return nil
}

// fullConfig configures w whole: added if new, everything set.
func fullConfig(w PeerConfig) wgtypes.PeerConfig {
	psk, ka := w.PresharedKey, w.Keepalive
	return wgtypes.PeerConfig{
		PublicKey:                   w.PublicKey,
		PresharedKey:                &psk,
		Endpoint:                    udpAddr(w.Endpoint),
		PersistentKeepaliveInterval: &ka,
		ReplaceAllowedIPs:           true,
		AllowedIPs:                  ipNets(w.AllowedIPs),
	}
}

func diffPeers(cur []PeerStats, want []PeerConfig) wgtypes.Config {
	var cfg wgtypes.Config
	have := make(map[wgtypes.Key]*PeerStats, len(cur))
	for i := range cur {
		have[cur[i].PublicKey] = &cur[i]
	}
	wanted := make(map[wgtypes.Key]bool, len(want))
	for _, w := range want {
		wanted[w.PublicKey] = true
		c, ok := have[w.PublicKey]
		if !ok {
			cfg.Peers = append(cfg.Peers, fullConfig(w))
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: w.PublicKey, UpdateOnly: true}
		changed := false
		if w.Endpoint.IsValid() && w.Endpoint != c.Endpoint {
			pc.Endpoint = udpAddr(w.Endpoint)
			changed = true
		}
		if w.Keepalive != c.Keepalive {
			ka := w.Keepalive
			pc.PersistentKeepaliveInterval = &ka
			changed = true
		}
		if !samePrefixes(w.AllowedIPs, c.AllowedIPs) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = ipNets(w.AllowedIPs)
			changed = true
		}
		if w.SendKeepalive && w.Keepalive > 0 {
			var off time.Duration
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: w.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &off})
			ka := w.Keepalive
			pc.PersistentKeepaliveInterval = &ka
			changed = true
		}
		if changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
	}
	for _, c := range cur {
		if !wanted[c.PublicKey] {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: c.PublicKey, Remove: true})
		}
	}
	return cfg
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	x := slices.Clone(a)
	y := slices.Clone(b)
	cmp := func(p, q netip.Prefix) int {
		if c := p.Addr().Compare(q.Addr()); c != 0 {
			return c
		}
		return p.Bits() - q.Bits()
	}
	slices.SortFunc(x, cmp)
	slices.SortFunc(y, cmp)
	for i := range x {
		if x[i].Masked() != y[i].Masked() {
			return false
		}
	}
	return true
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	if !ap.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(ap)
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		out = append(out, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

// ErrKernelUnavailable says the kernel has no WireGuard module.
var ErrKernelUnavailable = errors.New("wg: the kernel has no WireGuard module; use --wireguard=userspace (or auto), or load it with modprobe wireguard")

// portError turns EADDRINUSE into the one line a user needs.
func portError(port int, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("wg: UDP port %d is already in use by another process; stop it or set wireguard.listenPort to a free port", port)
	}
	return err
}
