package agent

import (
	"log/slog"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// wireguardInput is what the device's peer configuration is made of.
type wireguardInput struct {
	peers    []mesh.Peer
	verdicts map[wgtypes.Key]mesh.Status
	paths    map[wgtypes.Key]PathChoice // a non-advisory choice picks the endpoint
	psk      wgtypes.Key
	// keepalive is wireguard.keepalive, given to peers the tracker keeps
	// alive.
	keepalive time.Duration
}

// wireguardPeers is the device's peer configuration for this pass, one
// entry per peer, in the peer set's order. An endpoint is set only when the
// tracker (or the path chooser) decided to change it; otherwise WireGuard
// keeps the one it roamed to.
func wireguardPeers(in wireguardInput, log *slog.Logger) []wg.PeerConfig {
	want := make([]wg.PeerConfig, 0, len(in.peers))
	for _, p := range in.peers {
		v := in.verdicts[p.PublicKey]
		if in.paths != nil && !in.paths[p.PublicKey].Advisory {
			v.SetEndpoint = in.paths[p.PublicKey].SetEndpoint
		}
		pc := wg.PeerConfig{PublicKey: p.PublicKey, PresharedKey: in.psk, Endpoint: v.SetEndpoint, AllowedIPs: p.AllowedIPs}
		if v.Keepalive {
			pc.Keepalive = mesh.WireGuardKeepalive(in.keepalive)
		}
		if v.SetEndpoint.IsValid() {
			log.Debug("peer endpoint", "peer", p.Name, "endpoint", v.SetEndpoint, "state", v.State)
		}
		want = append(want, pc)
	}
	return want
}
