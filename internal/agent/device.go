package agent

import (
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// Device is the WireGuard device the reconcile steps read and program.
// *wg.Device is the real one (kernel or wireguard-go on TUN); the steps'
// unit tests use a recording fake, so they run without a kernel.
type Device interface {
	Name() string
	Mode() wg.Mode
	ListenPort() int
	// Peers reads every peer's live endpoint, last handshake and counters.
	Peers() ([]wg.PeerStats, error)
	// SyncPeers makes the device's peers exactly want. It must not keep
	// want after it returns: the agent reuses its storage.
	SyncPeers(want []wg.PeerConfig) error
	// UpdatePeers configures set and removes remove, leaving the other
	// peers as they are (wg.Device.UpdatePeers): a change pass's few
	// peers. It must not keep set either.
	UpdatePeers(set []wg.PeerConfig, remove []wgtypes.Key) error
	// UAPIError says why `wg show` cannot see the device (nil if it can).
	UAPIError() error
	Close() error
}

var _ Device = (*wg.Device)(nil)

// openDevice is wg.Open returning a Device (nil, never a nil *wg.Device, on
// error).
func openDevice(o wg.Options) (Device, error) {
	d, err := wg.Open(o)
	if err != nil {
		return nil, err
	}
	return d, nil
}
