package agent

import (
	"errors"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// fakeDevice is a Device without a kernel: it records every SyncPeers and
// reports the peers it was given, with the statistics a test sets.
type fakeDevice struct {
	mu    sync.Mutex
	name  string
	port  int
	syncs [][]wg.PeerConfig // the configuration after every SyncPeers and UpdatePeers, in order
	// updates counts UpdatePeers calls (change passes that configured).
	updates int
	stats   map[[32]byte]wg.PeerStats
	closed  bool
}

var _ Device = (*fakeDevice)(nil)

func newFakeDevice() *fakeDevice {
	return &fakeDevice{name: "meshspan-fake", port: 51820, stats: map[[32]byte]wg.PeerStats{}}
}

func (f *fakeDevice) Name() string     { return f.name }
func (f *fakeDevice) Mode() wg.Mode    { return wg.ModeUserspace }
func (f *fakeDevice) ListenPort() int  { return f.port }
func (f *fakeDevice) UAPIError() error { return nil }

func (f *fakeDevice) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("fake device: closed twice")
	}
	f.closed = true
	return nil
}

// Peers reports the last SyncPeers' peers, with the statistics set by
// setStats (endpoint and handshake) where there are any.
func (f *fakeDevice) Peers() ([]wg.PeerStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.syncs) == 0 {
		return nil, nil
	}
	var out []wg.PeerStats
	for _, p := range f.syncs[len(f.syncs)-1] {
		s, ok := f.stats[p.PublicKey]
		if !ok {
			s = wg.PeerStats{PublicKey: p.PublicKey, Endpoint: p.Endpoint}
		}
		s.AllowedIPs, s.Keepalive = p.AllowedIPs, p.Keepalive
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeDevice) SyncPeers(want []wg.PeerConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs = append(f.syncs, slices.Clone(want))
	return nil
}

// UpdatePeers records the configuration it leads to, as a SyncPeers of
// it would.
func (f *fakeDevice) UpdatePeers(set []wg.PeerConfig, remove []wgtypes.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cur []wg.PeerConfig
	if len(f.syncs) > 0 {
		cur = f.syncs[len(f.syncs)-1]
	}
	f.syncs = append(f.syncs, updatedPeers(cur, set, remove))
	f.updates++
	return nil
}

// updatedPeers is cur after UpdatePeers(set, remove): removals first, set
// peers replaced in place or added at the end, an invalid endpoint keeping
// the one configured.
func updatedPeers(cur, set []wg.PeerConfig, remove []wgtypes.Key) []wg.PeerConfig {
	out := slices.DeleteFunc(slices.Clone(cur), func(pc wg.PeerConfig) bool { return slices.Contains(remove, pc.PublicKey) })
	for _, w := range set {
		i := slices.IndexFunc(out, func(pc wg.PeerConfig) bool { return pc.PublicKey == w.PublicKey })
		switch {
		case i < 0:
			out = append(out, w)
		default:
			if !w.Endpoint.IsValid() {
				w.Endpoint = out[i].Endpoint
			}
			out[i] = w
		}
	}
	return out
}

func (f *fakeDevice) setStats(s wg.PeerStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats[s.PublicKey] = s
}

// lastSync is the configuration of the last SyncPeers.
func (f *fakeDevice) lastSync() []wg.PeerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.syncs) == 0 {
		return nil
	}
	return f.syncs[len(f.syncs)-1]
}
