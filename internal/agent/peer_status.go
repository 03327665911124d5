package agent

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// peerStatusInput is what the peer status step reads: the peer set and
// what the device and the members report.
type peerStatusInput struct {
	now   time.Time
	peers []mesh.Peer
	obs   map[wgtypes.Key]mesh.Observation
	// remote is what members publish for NAT traversal; static peers'
	// configured relay ports fill in for members without discovery.
	remote map[wgtypes.Key]discovery.Traversal
	static []config.StaticPeer
}

// peerStatusOutput is each peer's state and endpoint verdict, the path
// chooser's view when there is one, and what this node publishes for NAT
// traversal.
type peerStatusOutput struct {
	verdicts  map[wgtypes.Key]mesh.Status
	paths     map[wgtypes.Key]PathChoice // nil without a PathChooser
	traversal discovery.Traversal
}

// peerStatus decides whether each peer is up and which endpoint it gets:
// the health tracker's rotation over candidates, or the PathChooser's.
type peerStatus struct {
	tracker *mesh.Tracker
	paths   PathChooser // nil: the tracker's rotation alone
	// into is the last pass's verdicts, refilled (nil: a new map). Only
	// the pass reads them, and at a thousand peers a new map each pass
	// was most of what the tracker allocated.
	into map[wgtypes.Key]mesh.Status
}

func (s peerStatus) step(in peerStatusInput) peerStatusOutput {
	into := s.into
	if into == nil {
		into = make(map[wgtypes.Key]mesh.Status, len(in.peers))
	}
	out := peerStatusOutput{verdicts: s.tracker.StepInto(into, in.now, in.peers, in.obs)}
	if t, ok := s.paths.(Traverser); ok {
		out.traversal = t.Traverse(in.now, withStaticRelays(in.remote, in.static))
	}
	if s.paths != nil {
		out.paths = s.paths.Choose(in.now, in.peers, in.obs)
	}
	return out
}

// withStaticRelays adds the relay ports static peers are configured with
// (clusters without discovery); what a peer announces itself wins.
func withStaticRelays(remote map[wgtypes.Key]discovery.Traversal, peers []config.StaticPeer) map[wgtypes.Key]discovery.Traversal {
	for _, sp := range peers {
		k, err := wgtypes.ParseKey(sp.PublicKey)
		if err != nil || sp.RelayPort == 0 {
			continue
		}
		if t := remote[k]; t.RelayPort == 0 {
			t.RelayPort = uint16(sp.RelayPort)
			remote[k] = t
		}
	}
	return remote
}
