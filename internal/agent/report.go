package agent

import (
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// reportInput is everything a pass's status is made of.
type reportInput struct {
	id           Identity
	node         string
	dev          Device
	endpoints    []netip.AddrPort // this node's own
	discovery    bool
	observedSelf netip.Addr
	warnings     []string
	peers        []mesh.Peer
	verdicts     map[wgtypes.Key]mesh.Status
	byKey        map[wgtypes.Key]wg.PeerStats
	paths        map[wgtypes.Key]PathChoice
	now          time.Time
	// prev is the last pass's status and prevPeers the peers it was made
	// from: a peer at the same place with the same key, address,
	// AllowedIPs and candidates takes their text from it instead of
	// formatting them again (a third of the status at a thousand peers).
	prev      *Status
	prevPeers []mesh.Peer
	// raw is what prev's peers' times and endpoint were formatted from
	// (nil: unknown), overwritten with this pass's: when every peer shows
	// what it showed in the last pass (every tick of an idle mesh), the
	// status shares the last one's peers instead of formatting a thousand
	// anew. Statuses are never changed once made, so sharing is safe.
	raw []peerRaw
}

// peerRaw is what a peer's times and endpoint are formatted from; the rest
// of its line compares as it is shown.
type peerRaw struct {
	lastActivity, handshake time.Time
	endpoint                netip.AddrPort
}

// report is the status the socket serves until the next pass, and what its
// peers were formatted from (the next pass's prevRaw).
func report(in reportInput) (*Status, []peerRaw) {
	st := &Status{
		Node: in.node, PublicKey: in.id.PublicKey().String(), Address: in.id.Address.String(), AffiliateID: in.id.AffiliateID,
		Interface: in.dev.Name(), Mode: string(in.dev.Mode()), ListenPort: in.dev.ListenPort(),
		Endpoints: strs(in.endpoints), Discovery: in.discovery, Warnings: in.warnings,
		UpdatedAt: in.now.UTC(),
	}
	if st.Warnings == nil {
		st.Warnings = []string{}
	}
	if in.observedSelf.IsValid() {
		st.ObservedAddress = in.observedSelf.String()
	}
	reuse := in.prev != nil && len(in.prev.Peers) == len(in.prevPeers)
	same := reuse && len(in.peers) > 0 && len(in.raw) == len(in.peers) && len(in.peers) == len(in.prevPeers)
	raw := in.raw
	if len(raw) != len(in.peers) {
		raw = make([]peerRaw, len(in.peers))
	}
	for i := range in.peers {
		p := &in.peers[i]
		v, s := in.verdicts[p.PublicKey], in.byKey[p.PublicKey]
		r := in.rawOf(p)
		if same {
			q := &in.prev.Peers[i]
			pc := in.paths[p.PublicKey]
			same = r == raw[i] && q.State == v.State.String() && q.RxBytes == s.RxBytes && q.TxBytes == s.TxBytes &&
				q.EndpointChanges == v.EndpointChanges && q.Path == pc.Path && q.Via == pc.Via && q.PathReason == pc.Reason &&
				samePeerText(&in.prevPeers[i], p)
		}
		raw[i] = r
	}
	if same {
		st.Peers = in.prev.Peers
		return st, raw
	}
	st.Peers = make([]PeerStatus, 0, len(in.peers))
	for i := range in.peers {
		p := &in.peers[i]
		var text *PeerStatus
		if reuse && i < len(in.prevPeers) && samePeerText(&in.prevPeers[i], p) {
			text = &in.prev.Peers[i]
		}
		st.Peers = append(st.Peers, in.peerLine(p, text))
	}
	return st, raw
}

// peerLine is p's status line; text, when not nil, is a line formatted
// from the same key, address, AllowedIPs and candidates, whose text it
// takes.
func (in *reportInput) peerLine(p *mesh.Peer, text *PeerStatus) PeerStatus {
	v, s := in.verdicts[p.PublicKey], in.byKey[p.PublicKey]
	ps := PeerStatus{
		Name: p.Name, AffiliateID: p.AffiliateID,
		State: v.State.String(), RxBytes: s.RxBytes, TxBytes: s.TxBytes,
		LastHandshake: timeString(s.LastHandshake), LastActivity: timeString(v.LastActivity),
		EndpointChanges: v.EndpointChanges,
	}
	if text != nil {
		ps.PublicKey, ps.Address, ps.AllowedIPs, ps.Candidates = text.PublicKey, text.Address, text.AllowedIPs, text.Candidates
	} else {
		ps.PublicKey, ps.Address, ps.AllowedIPs, ps.Candidates = p.PublicKey.String(), p.Address.String(), strs(p.AllowedIPs), strs(p.Endpoints)
	}
	if s.Endpoint.IsValid() {
		ps.Endpoint = s.Endpoint.String()
	}
	if pc, ok := in.paths[p.PublicKey]; ok {
		ps.Path, ps.Via, ps.PathReason = pc.Path, pc.Via, pc.Reason
	}
	return ps
}

// rawOf is what p's line is formatted from (reportInput.raw).
func (in *reportInput) rawOf(p *mesh.Peer) peerRaw {
	return peerRaw{lastActivity: in.verdicts[p.PublicKey].LastActivity, handshake: in.byKey[p.PublicKey].LastHandshake, endpoint: in.byKey[p.PublicKey].Endpoint}
}

// samePeerText reports whether a and b format the same key, address,
// AllowedIPs and candidates.
func samePeerText(a, b *mesh.Peer) bool {
	return a.PublicKey == b.PublicKey && a.Address == b.Address &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs) && slices.Equal(a.Endpoints, b.Endpoints)
}
