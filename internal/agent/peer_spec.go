package agent

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// peerSpecInput is what the peer set is computed from: the config's static
// peers, the discovered affiliates and what this node knows of itself.
type peerSpecInput struct {
	self    wgtypes.Key
	prefix  netip.Prefix
	own     []netip.Addr   // this node's addresses, the mesh address included
	ownNets []netip.Prefix // and their subnets
	static  []config.StaticPeer
	affs    []mesh.Affiliate
	filter  mesh.Filter
	// live are the endpoints WireGuard last used for up peers: candidates
	// the peers did not announce (their NAT's public side).
	live     map[wgtypes.Key]netip.AddrPort
	approved []mesh.ApprovedRoute
}

// peerSpecs is the peer set for this pass: who the peers are, their
// AllowedIPs and endpoint candidates, and what was refused from them.
func peerSpecs(in peerSpecInput) mesh.Result {
	observed := make(map[wgtypes.Key][]netip.AddrPort, len(in.live))
	for k, ep := range in.live {
		observed[k] = []netip.AddrPort{ep}
	}
	return mesh.Build(mesh.Input{
		Self: in.self, Prefix: in.prefix, Own: in.own, OwnNets: in.ownNets, Static: in.static,
		Affiliates: in.affs, Filter: in.filter, Observed: observed, Approved: in.approved,
	})
}
