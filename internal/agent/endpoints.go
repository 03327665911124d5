package agent

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// endpointsInput is what the learned endpoints come from: the peers, their
// states and the endpoints WireGuard uses for them.
type endpointsInput struct {
	peers    []mesh.Peer
	verdicts map[wgtypes.Key]mesh.Status
	byKey    map[wgtypes.Key]wg.PeerStats
	prev     map[wgtypes.Key]netip.AddrPort // the last pass's live
}

// endpointsOutput are the endpoints learned from live peers.
type endpointsOutput struct {
	// live is each peer's last underlay endpoint seen while it was up,
	// kept as a candidate (next pass's peerSpecInput.live).
	live map[wgtypes.Key]netip.AddrPort
	// observed is published for the peers, by affiliate ID, so that they
	// learn the public side of their NAT.
	observed map[string][]netip.AddrPort
}

// peerEndpoints harvests the endpoints of peers that are up now. A peer
// that is not up, or reached through a relay, keeps the endpoint it had.
func peerEndpoints(in endpointsInput) endpointsOutput {
	out := endpointsOutput{live: map[wgtypes.Key]netip.AddrPort{}, observed: map[string][]netip.AddrPort{}}
	for _, p := range in.peers {
		s, ok := in.byKey[p.PublicKey]
		if !ok || !s.Endpoint.IsValid() || in.verdicts[p.PublicKey].State != mesh.StateUp || relay.IsVirtual(s.Endpoint) {
			if ep, ok := in.prev[p.PublicKey]; ok {
				out.live[p.PublicKey] = ep
			}
			continue
		}
		out.live[p.PublicKey] = s.Endpoint
		if p.AffiliateID != "" {
			out.observed[p.AffiliateID] = []netip.AddrPort{s.Endpoint}
		}
	}
	return out
}
