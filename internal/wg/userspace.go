package wg

import (
	"fmt"
	"log/slog"
	"net"
	"os"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// userspace is wireguard-go running in this process.
type userspace struct {
	dev      *device.Device
	uapi     net.Listener // nil when not served
	sockPath string
	unlink   func() error // removes the link's addresses etc.; nil if none
}

// NewUserspace starts wireguard-go on an existing TUN device (for example a
// channel TUN in tests) with opts' key, port, mark and Bind. It neither
// configures the link nor serves UAPI; Open does both for real interfaces.
func NewUserspace(t tun.Device, opts Options) (*Device, error) {
	u, err := startUserspace(t, opts)
	if err != nil {
		return nil, err
	}
	return &Device{name: opts.Name, mode: ModeUserspace, port: opts.ListenPort, b: u}, nil
}

func startUserspace(t tun.Device, opts Options) (*userspace, error) {
	bind := opts.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	if opts.InFlight >= 0 {
		n := opts.InFlight
		if n == 0 {
			n = DefaultInFlight
		}
		t, bind = limit(t, bind, n)
	}
	dev := device.NewDevice(t, bind, wgLogger(opts.Logger, opts.Name))
	port, mark := opts.ListenPort, opts.FirewallMark
	cfg := wgtypes.Config{PrivateKey: &opts.PrivateKey, ListenPort: &port}
	if mark != 0 {
		cfg.FirewallMark = &mark
	}
	if err := dev.IpcSet(uapiSet(cfg)); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wg: configure %s: %w", opts.Name, err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, portError(opts.ListenPort, fmt.Errorf("wg: bring %s up: %w", opts.Name, err))
	}
	return &userspace{dev: dev}, nil
}

func (u *userspace) configure(cfg wgtypes.Config) error { return u.dev.IpcSet(uapiSet(cfg)) }

func (u *userspace) peers() ([]PeerStats, error) {
	s, err := u.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wg: read device: %w", err)
	}
	return parseUAPIPeers(s)
}

func (u *userspace) close() error {
	if u.uapi != nil {
		u.uapi.Close()
		os.Remove(u.sockPath)
	}
	// Closing the device closes the TUN, and the kernel deletes the link
	// with its addresses and routes.
	u.dev.Close()
	if u.unlink != nil {
		return u.unlink()
	}
	return nil
}

func wgLogger(l *slog.Logger, name string) *device.Logger {
	if l == nil {
		return &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	}
	l = l.With("interface", name)
	return &device.Logger{
		Verbosef: func(format string, args ...any) { l.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { l.Warn(fmt.Sprintf(format, args...)) },
	}
}
