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
	// from, raw what its lines' times and endpoints were formatted from
	// (reportInput.raw; nil: unknown). A peer whose line would read as it
	// did keeps it: every tick of an idle mesh, and the lines of peers
	// nothing happened to while others join, are not formatted anew. One
	// with the same key, address, AllowedIPs and candidates takes their
	// text from its last line.
	prev      *Status
	prevPeers []mesh.Peer
	raw       []peerRaw
}

// peerRaw is what a peer's times and endpoint are formatted from; the rest
// of its line compares as it is shown.
type peerRaw struct {
	lastActivity, handshake time.Time
	endpoint                netip.AddrPort
}

// report is the status the socket serves until the next pass, and what its
// peers were formatted from (the next pass's raw).
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
	haveRaw := reuse && len(in.raw) == len(in.prevPeers) // else no line is kept, only text
	// The last raw values are overwritten where they are when the peers
	// are the last pass's, in its order (an idle mesh's every tick).
	raw := in.raw
	if !haveRaw || !sameKeys(in.prevPeers, in.peers) {
		raw = make([]peerRaw, len(in.peers))
	}
	st.Peers = make([]*PeerStatus, len(in.peers))
	j := 0 // in prevPeers
	for i := range in.peers {
		p := &in.peers[i]
		// Both peer sets are in affiliate-ID order: a peer's last line is
		// found walking forward, also after peers joined before it (at a
		// cluster's start, every pass).
		var last *PeerStatus
		for reuse && j < len(in.prevPeers) && in.prevPeers[j].AffiliateID < p.AffiliateID {
			j++
		}
		if reuse && j < len(in.prevPeers) && samePeerText(&in.prevPeers[j], p) {
			last = in.prev.Peers[j]
		}
		f := in.factsOf(p)
		r := f.raw()
		keep := last != nil && haveRaw && r == in.raw[j] && f.shownBy(last, p) // read before raw[i] is written
		raw[i] = r
		if keep {
			st.Peers[i] = last
			continue
		}
		st.Peers[i] = f.line(p, last)
	}
	return st, raw
}

// sameKeys reports whether a and b list the same peers in the same order.
func sameKeys(a, b []mesh.Peer) bool {
	return slices.EqualFunc(a, b, func(x, y mesh.Peer) bool { return x.PublicKey == y.PublicKey })
}

// lineFacts is what a peer's line shows besides the peer itself, looked
// up once per line.
type lineFacts struct {
	v       mesh.Status
	s       wg.PeerStats
	pc      PathChoice
	hasPath bool
}

func (in *reportInput) factsOf(p *mesh.Peer) lineFacts {
	f := lineFacts{v: in.verdicts[p.PublicKey], s: in.byKey[p.PublicKey]}
	f.pc, f.hasPath = in.paths[p.PublicKey]
	return f
}

// raw is what p's line is formatted from (reportInput.raw).
func (f *lineFacts) raw() peerRaw {
	return peerRaw{lastActivity: f.v.LastActivity, handshake: f.s.LastHandshake, endpoint: f.s.Endpoint}
}

// shownBy reports whether l, a line of p made from the raw values p has
// now, reads as p's line would.
func (f *lineFacts) shownBy(l *PeerStatus, p *mesh.Peer) bool {
	return l.Name == p.Name && l.AffiliateID == p.AffiliateID && l.State == f.v.State.String() &&
		l.RxBytes == f.s.RxBytes && l.TxBytes == f.s.TxBytes && l.EndpointChanges == f.v.EndpointChanges &&
		l.Path == f.pc.Path && l.Via == f.pc.Via && l.PathReason == f.pc.Reason
}

// line is p's status line; text, when not nil, is a line formatted from
// the same key, address, AllowedIPs and candidates, whose text it takes.
func (f *lineFacts) line(p *mesh.Peer, text *PeerStatus) *PeerStatus {
	ps := &PeerStatus{
		Name: p.Name, AffiliateID: p.AffiliateID,
		State: f.v.State.String(), RxBytes: f.s.RxBytes, TxBytes: f.s.TxBytes,
		LastHandshake: timeString(f.s.LastHandshake), LastActivity: timeString(f.v.LastActivity),
		EndpointChanges: f.v.EndpointChanges,
	}
	if text != nil {
		ps.PublicKey, ps.Address, ps.AllowedIPs, ps.Candidates = text.PublicKey, text.Address, text.AllowedIPs, text.Candidates
	} else {
		ps.PublicKey, ps.Address, ps.AllowedIPs, ps.Candidates = p.PublicKey.String(), p.Address.String(), strs(p.AllowedIPs), strs(p.Endpoints)
	}
	if f.s.Endpoint.IsValid() {
		ps.Endpoint = f.s.Endpoint.String()
	}
	if f.hasPath {
		ps.Path, ps.Via, ps.PathReason = f.pc.Path, f.pc.Via, f.pc.Reason
	}
	return ps
}

// samePeerText reports whether a and b format the same key, address,
// AllowedIPs and candidates.
func samePeerText(a, b *mesh.Peer) bool {
	return a.PublicKey == b.PublicKey && a.Address == b.Address &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs) && slices.Equal(a.Endpoints, b.Endpoints)
}
