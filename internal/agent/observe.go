package agent

import (
	"maps"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// deviceView is what the WireGuard device reported at the start of a pass.
type deviceView struct {
	stats []wg.PeerStats
	byKey map[wgtypes.Key]wg.PeerStats
	obs   map[wgtypes.Key]mesh.Observation // for the health tracker and path chooser
}

// observeDevice indexes the device's peer statistics by key.
func observeDevice(stats []wg.PeerStats) deviceView {
	v := deviceView{
		stats: stats,
		byKey: make(map[wgtypes.Key]wg.PeerStats, len(stats)),
		obs:   make(map[wgtypes.Key]mesh.Observation, len(stats)),
	}
	for _, s := range stats {
		v.obs[s.PublicKey] = observation(s)
		v.byKey[s.PublicKey] = s
	}
	return v
}

// observation is what the health tracker and path chooser read of a peer.
func observation(s wg.PeerStats) mesh.Observation {
	return mesh.Observation{Endpoint: s.Endpoint, LastHandshake: s.LastHandshake, RxBytes: s.RxBytes, TxBytes: s.TxBytes}
}

// deviceCache keeps the last deviceView and updates only the peers whose
// statistics changed: at a thousand peers, building both maps anew was a
// fifth of a pass, and most peers' statistics do not change between passes.
// The maps it returns are valid until the next observe.
type deviceCache struct{ v deviceView }

func (c *deviceCache) observe(stats []wg.PeerStats) deviceView {
	if c.v.byKey == nil {
		c.v = observeDevice(stats)
		return c.v
	}
	// Peers added (a cluster starting) are added to the maps as they are.
	c.v.byKey = reserve.Map(c.v.byKey, len(stats)-len(c.v.byKey))
	c.v.obs = reserve.Map(c.v.obs, len(stats)-len(c.v.obs))
	for _, s := range stats {
		if old, ok := c.v.byKey[s.PublicKey]; ok && samePeerStats(&old, &s) {
			continue
		}
		c.v.obs[s.PublicKey] = observation(s)
		c.v.byKey[s.PublicKey] = s
	}
	if len(c.v.byKey) != len(stats) {
		// A peer came and one went (or a key is listed twice): start over
		// rather than search for the stale one.
		c.v = observeDevice(stats)
		return c.v
	}
	c.v.stats = stats
	return c.v
}

// samePeerStats compares contents: the device returns fresh slices.
func samePeerStats(a, b *wg.PeerStats) bool {
	return a.PublicKey == b.PublicKey && a.Endpoint == b.Endpoint && a.LastHandshake == b.LastHandshake &&
		a.RxBytes == b.RxBytes && a.TxBytes == b.TxBytes && a.Keepalive == b.Keepalive && slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

// discoveryView is what the discovery service holds for this pass.
type discoveryView struct {
	// observedSelf is this node's address as the service sees it.
	observedSelf netip.Addr
	affiliates   []*mesh.Affiliate
	// traversal is what members publish for NAT traversal, by public key
	// (relay ports, rendezvous requests); never nil.
	traversal map[wgtypes.Key]discovery.Traversal
}

// discoveryCache keeps what the last read derived from the client's
// affiliates (the NAT-traversal map): a client returns the same slice until
// they change (see Discovery).
type discoveryCache struct {
	src  []*discovery.Affiliate
	view discoveryView
}

// read reads the affiliates and this node's observed address; a nil client
// (static peers only) reads as nothing. The affiliates are the client's
// slice itself: mesh.Affiliate is the discovery client's type.
func (c *discoveryCache) read(d Discovery) discoveryView {
	v := discoveryView{traversal: map[wgtypes.Key]discovery.Traversal{}}
	if d == nil {
		return v
	}
	v.observedSelf = d.ObservedAddress()
	affs := d.Affiliates()
	v.affiliates = affs
	if sameBacking(affs, c.src) && len(affs) > 0 {
		// The pass adds static peers' relay ports to its traversal map.
		v.traversal = maps.Clone(c.view.traversal)
		return v
	}
	for _, a := range affs {
		if a.Traversal.IsZero() {
			continue // most members: no key to parse
		}
		if k, err := wgtypes.ParseKey(a.PublicKey); err == nil {
			v.traversal[k] = a.Traversal
		}
	}
	c.src, c.view = affs, discoveryView{affiliates: affs, traversal: maps.Clone(v.traversal)}
	return v
}
