package wg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Open creates the interface, configures key, port, mark, MTU and address,
// and brings it up. On error nothing it made is left behind.
func Open(opts Options) (*Device, error) {
	if err := checkPort(opts.ListenPort); err != nil {
		return nil, err
	}
	if _, err := netlink.LinkByName(opts.Name); err == nil {
		return nil, fmt.Errorf("wg: interface %q already exists; is another agent running? if not, remove it with `ip link del %s` or set wireguard.interface", opts.Name, opts.Name)
	}
	switch opts.Mode {
	case ModeKernel:
		if opts.Bind != nil {
			return nil, errors.New("wg: a custom Bind (relay) needs --wireguard=userspace")
		}
		return openKernel(opts)
	case ModeUserspace:
		return openUserspace(opts)
	default:
		// Auto: try the kernel (creating the link loads the module), else
		// userspace. Callers that must know the back end before opening
		// (NAT traversal) use Resolve with ProbeKernel instead.
		if opts.Bind == nil {
			d, err := openKernel(opts)
			if !errors.Is(err, ErrKernelUnavailable) {
				return d, err
			}
		}
		return openUserspace(opts)
	}
}

// checkPort fails early, before anything is created, if the port is taken.
func checkPort(port int) error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return portError(port, fmt.Errorf("wg: listen on UDP port %d: %w", port, err))
	}
	c.Close()
	return nil
}

func privError(step, name string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("wg: %s %s: permission denied; run as root or grant CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)", step, name)
	}
	return fmt.Errorf("wg: %s %s: %w", step, name, err)
}

func openUserspace(opts Options) (*Device, error) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, errors.New("wg: /dev/net/tun is missing; load the tun module (modprobe tun) or give the container the device (--device /dev/net/tun)")
	}
	t, err := tun.CreateTUN(opts.Name, opts.MTU)
	if err != nil {
		return nil, privError("create TUN", opts.Name, err)
	}
	u, err := startUserspace(t, opts) // owns t from here on
	if err != nil {
		return nil, err
	}
	if err := setupLink(opts.Name, opts.MTU, opts.Address); err != nil {
		u.close()
		return nil, err
	}
	// Serve UAPI so wgctrl and `wg show` see the device. Failing to is not
	// fatal to the mesh; the caller is told through UAPIError.
	d := &Device{name: opts.Name, mode: ModeUserspace, port: opts.ListenPort, b: u}
	if f, err := ipc.UAPIOpen(opts.Name); err != nil {
		d.uapiErr = fmt.Errorf("wg: serve UAPI socket for %s: %w", opts.Name, err)
	} else if l, err := ipc.UAPIListen(opts.Name, f); err != nil {
		f.Close()
		d.uapiErr = fmt.Errorf("wg: serve UAPI socket for %s: %w", opts.Name, err)
	} else {
		u.uapi = l
		u.sockPath = filepath.Join("/var/run/wireguard", opts.Name+".sock")
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go u.dev.IpcHandle(c)
			}
		}()
	}
	return d, nil
}

// setupLink sets MTU and address and brings the link up.
func setupLink(name string, mtu int, addr netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("wg: find link %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return privError("set MTU of", name, err)
	}
	if addr.IsValid() {
		a := &netlink.Addr{
			IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())},
			// No duplicate address detection: the address is ours by
			// construction and must be usable the moment the link is up.
			Flags: unix.IFA_F_NODAD,
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			return privError("add address "+addr.String()+" to", name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return privError("bring up", name, err)
	}
	return nil
}

// ProbeKernel reports whether the kernel can create a WireGuard link by
// creating a throwaway one and deleting it. Creating it makes the kernel load
// the module if it is present but not loaded yet (as on a fresh boot), which
// a look at /sys/module/wireguard would miss. It returns nil when the kernel
// can, ErrKernelUnavailable when it has no module, or why it could not tell.
func ProbeKernel() error {
	name := fmt.Sprintf("mswgprobe%d", os.Getpid()%1000000) // at most 15 bytes, unique per process
	link := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(link); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
			return ErrKernelUnavailable
		}
		return privError("create WireGuard link", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("wg: delete probe link %s: %w", name, err)
	}
	return nil
}

// kernel is the in-kernel WireGuard driven through wgctrl.
type kernel struct {
	name   string
	client *wgctrl.Client
	link   netlink.Link
}

func openKernel(opts Options) (*Device, error) {
	link := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: opts.Name, MTU: opts.MTU}}
	if err := netlink.LinkAdd(link); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
			return nil, ErrKernelUnavailable
		}
		return nil, privError("create WireGuard link", opts.Name, err)
	}
	k := &kernel{name: opts.Name, link: link}
	fail := func(err error) (*Device, error) {
		k.close()
		return nil, err
	}
	c, err := wgctrl.New()
	if err != nil {
		return fail(fmt.Errorf("wg: open wgctrl: %w", err))
	}
	k.client = c
	port, mark := opts.ListenPort, opts.FirewallMark
	cfg := wgtypes.Config{PrivateKey: &opts.PrivateKey, ListenPort: &port, ReplacePeers: true}
	if mark != 0 {
		cfg.FirewallMark = &mark
	}
	if err := c.ConfigureDevice(opts.Name, cfg); err != nil {
		return fail(portError(opts.ListenPort, fmt.Errorf("wg: configure %s: %w", opts.Name, err)))
	}
	if err := setupLink(opts.Name, opts.MTU, opts.Address); err != nil {
		return fail(err)
	}
	return &Device{name: opts.Name, mode: ModeKernel, port: opts.ListenPort, b: k}, nil
}

func (k *kernel) configure(cfg wgtypes.Config) error { return k.client.ConfigureDevice(k.name, cfg) }

func (k *kernel) peers() ([]PeerStats, error) {
	d, err := k.client.Device(k.name)
	if err != nil {
		return nil, fmt.Errorf("wg: read device %s: %w", k.name, err)
	}
	out := make([]PeerStats, 0, len(d.Peers))
	for _, p := range d.Peers {
		s := PeerStats{
			PublicKey:     p.PublicKey,
			LastHandshake: p.LastHandshakeTime,
			RxBytes:       p.ReceiveBytes,
			TxBytes:       p.TransmitBytes,
			Keepalive:     p.PersistentKeepaliveInterval,
		}
		if p.Endpoint != nil {
			s.Endpoint = p.Endpoint.AddrPort()
			s.Endpoint = netip.AddrPortFrom(s.Endpoint.Addr().Unmap(), s.Endpoint.Port())
		}
		for _, n := range p.AllowedIPs {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				ones, _ := n.Mask.Size()
				s.AllowedIPs = append(s.AllowedIPs, netip.PrefixFrom(a.Unmap(), ones))
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func (k *kernel) close() error {
	if k.client != nil {
		k.client.Close()
	}
	if err := netlink.LinkDel(k.link); err != nil {
		return fmt.Errorf("wg: delete link %s: %w", k.name, err)
	}
	return nil
}
