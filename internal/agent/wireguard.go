package agent

import (
	"log/slog"
	"slices"
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
	// quiet: the peers that were quiet (mesh.Status.Quiet) in the last pass.
	quiet map[wgtypes.Key]bool
	// want and spare are storage to reuse (their content is ignored): the
	// last pass's configuration (SyncPeers keeps none of it) and the quiet
	// map of the pass before it. A pass at a thousand peers otherwise
	// allocates both anew.
	want  []wg.PeerConfig
	spare map[wgtypes.Key]bool
}

// wireguardOutput is the device's peer configuration for this pass.
type wireguardOutput struct {
	want []wg.PeerConfig
	// reset: peers that just turned quiet. Turning keepalive off does not
	// stop WireGuard's handshake retries (every 5 s for 90 s); removing
	// and re-adding the peer does, and leaves it without an endpoint until
	// the next attempt sets one. It stays configured, so it is answered if
	// it initiates.
	reset []wgtypes.Key
	quiet map[wgtypes.Key]bool
}

// wireguardPeers is the device's peer configuration for this pass, one
// entry per peer, in the peer set's order. An endpoint is set only when the
// tracker (or the path chooser) decided to change it; otherwise WireGuard
// keeps the one it roamed to.
func wireguardPeers(in wireguardInput, log *slog.Logger) wireguardOutput {
	out := wireguardOutput{want: slices.Grow(in.want[:0], len(in.peers)), quiet: in.spare}
	if out.quiet == nil {
		out.quiet = make(map[wgtypes.Key]bool, len(in.peers))
	}
	clear(out.quiet)
	for i := range in.peers {
		p := &in.peers[i]
		pc, quiet := in.peerConfig(p, log)
		out.quiet[p.PublicKey] = quiet
		if was, known := in.quiet[p.PublicKey]; quiet && known && !was {
			out.reset = append(out.reset, p.PublicKey)
		}
		out.want = append(out.want, pc)
	}
	return out
}

// peerConfig is p's configuration, and whether it is kept quiet.
func (in *wireguardInput) peerConfig(p *mesh.Peer, log *slog.Logger) (wg.PeerConfig, bool) {
	v := in.verdicts[p.PublicKey]
	if in.paths != nil && !in.paths[p.PublicKey].Advisory {
		v.SetEndpoint = in.paths[p.PublicKey].SetEndpoint
		if v.Quiet {
			// The path chooser (relays) decides: WireGuard must try
			// what it sets.
			v.Quiet, v.Keepalive = false, true
		}
	}
	pc := wg.PeerConfig{PublicKey: p.PublicKey, PresharedKey: in.psk, Endpoint: v.SetEndpoint, AllowedIPs: p.AllowedIPs}
	if v.Keepalive {
		pc.Keepalive = mesh.WireGuardKeepalive(in.keepalive)
		pc.SendKeepalive = v.SendKeepalive
	}
	if v.SetEndpoint.IsValid() {
		log.Debug("peer endpoint", "peer", p.Name, "endpoint", v.SetEndpoint, "state", v.State)
	}
	return pc, v.Quiet
}
