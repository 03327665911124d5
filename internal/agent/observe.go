package agent

import (
	"maps"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
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
	if c.v.byKey == nil || len(c.v.byKey) != len(stats) {
		c.v = observeDevice(stats)
		return c.v
	}
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
	affiliates   []mesh.Affiliate
	// traversal is what members publish for NAT traversal, by public key
	// (relay ports, rendezvous requests); never nil.
	traversal map[wgtypes.Key]discovery.Traversal
}

// discoveryCache keeps the last conversion of the client's affiliates: a
// client returns the same slice until they change (see Discovery), and at
// a thousand members converting them was a tenth of every pass.
type discoveryCache struct {
	src  []discovery.Affiliate
	view discoveryView
}

// read reads the affiliates and this node's observed address; a nil client
// (static peers only) reads as nothing.
func (c *discoveryCache) read(d Discovery) discoveryView {
	v := discoveryView{traversal: map[wgtypes.Key]discovery.Traversal{}}
	if d == nil {
		return v
	}
	v.observedSelf = d.ObservedAddress()
	affs := d.Affiliates()
	if len(affs) > 0 && len(affs) == len(c.src) && &affs[0] == &c.src[0] {
		// The pass adds static peers' relay ports to its traversal map.
		v.affiliates, v.traversal = c.view.affiliates, maps.Clone(c.view.traversal)
		return v
	}
	v.affiliates = make([]mesh.Affiliate, 0, len(affs))
	for _, a := range affs {
		if a.Traversal.IsZero() {
			// most members: no key to parse
		} else if k, err := wgtypes.ParseKey(a.PublicKey); err == nil {
			v.traversal[k] = a.Traversal
		}
		v.affiliates = append(v.affiliates, mesh.Affiliate{
			ID: a.ID, NodeName: a.NodeName, PublicKey: a.PublicKey, Address: a.Address,
			Addresses: a.Addresses, Networks: a.Networks, ExcludeNetworks: a.ExcludeNetworks, Endpoints: a.Endpoints,
		})
	}
	c.src, c.view = affs, discoveryView{affiliates: v.affiliates, traversal: maps.Clone(v.traversal)}
	return v
}
