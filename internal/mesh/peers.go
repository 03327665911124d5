// Package mesh is the agent's pure logic: from the config, the discovered
// affiliates and what the WireGuard device reports, it computes the peers
// (AllowedIPs, candidate endpoints), the endpoints to publish, and each
// peer's state (unknown, up, down) and endpoint rotation. It does no I/O and
// reads no clock: callers pass the time in.
//
// # Down detection
//
// WireGuard only re-handshakes every two minutes, so a handshake age alone
// cannot tell a dead peer within seconds. Instead every peer gets a
// persistent keepalive of half wireguard.keepalive (see WireGuardKeepalive).
// WireGuard restarts that timer on every packet sent or received, so on an
// idle link the end whose timer fires first keeps restarting the other's,
// which then never sends (kernel timers fire tens of ms late, so a kernel
// end loses to a userspace one every time); the tracker therefore asks for
// a keepalive to any peer this node has sent nothing for one interval in a
// live session (Status.SendKeepalive), and each end hears from the other at
// least every interval plus a reconcile tick. A peer is up while its
// last activity — the later of its last handshake and the last time its rx
// byte counter was seen to grow — is younger than health.downAfter (default
// 8 s), and down otherwise: a dead peer is noticed within downAfter plus one
// reconcile tick. A freshly chosen endpoint gets health.endpointProbe
// (default 4 s) to show activity before the next candidate is tried; a peer
// that never answered is tried with backoff (see Backoff).
package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/member"
)

// Affiliate is a cluster member as discovery describes it: the discovery
// client's own type, so the agent hands its view over without a copy. The
// peer set reads its ID, NodeName, PublicKey, Address, Addresses (the
// member's routed underlay addresses), Networks and ExcludeNetworks (routed
// to the member, less the excluded), and Endpoints (advertised and observed,
// in preference order).
type Affiliate = member.Affiliate

// Peer is one remote node as the WireGuard device should know it.
type Peer struct {
	PublicKey wgtypes.Key
	// Name is the node name (static peer name or affiliate node name).
	Name string
	// AffiliateID is set for peers found through discovery; it is the key
	// under which endpoints observed for this peer are published.
	AffiliateID string
	// Address is the peer's mesh address.
	Address netip.Addr
	// AllowedIPs: the peer's /128 plus what it advertises, minus what it
	// excludes and minus what an earlier peer already claimed.
	AllowedIPs []netip.Prefix
	// Endpoints are the candidates to try, in order.
	Endpoints []netip.AddrPort
}

// Input is everything the peer set is computed from.
type Input struct {
	// Self is this node's public key; an affiliate carrying it is skipped.
	Self wgtypes.Key
	// Prefix is the cluster's mesh /64: a peer address outside it is refused.
	Prefix netip.Prefix
	// Own are this node's addresses (underlay and mesh): never routed to a
	// peer, never a peer's endpoint.
	Own []netip.Addr
	// OwnNets are this node's subnets: a peer endpoint at one's network or
	// broadcast address is refused.
	OwnNets []netip.Prefix
	Static  []config.StaticPeer
	// Affiliates are shared with the caller, never changed: a discovery
	// view hands out the same affiliate from view to view while it does
	// not change, and a view of a thousand is a thousand pointers.
	Affiliates []*Affiliate
	// Filter restricts candidate endpoints to usable underlay addresses
	// (filters.peerEndpoints).
	Filter Filter
	// Observed holds endpoints seen live for a peer (by WireGuard, by
	// other nodes); they are tried after the advertised ones.
	Observed map[wgtypes.Key][]netip.AddrPort
	// Approved lets named peers route wide networks (exit nodes).
	Approved []ApprovedRoute
}

// Result is the peer set and what was wrong on the way.
type Result struct {
	Peers []Peer
	// Warnings name each skipped entry, refusal and contested range once.
	Warnings []string
	// Refused are adverts not accepted from peers (also in Warnings).
	Refused []Refusal
	// Contested are ranges two members claim: routed to neither, and to be
	// kept inside the mesh (unreachable) rather than sent in plaintext.
	Contested []netip.Prefix
}

// MaxNetworks is how many advertised networks of one peer are considered.
const MaxNetworks = 64

// maxParts bounds how many AllowedIPs one advertised network may turn into
// once other members' addresses are cut out of it.
const maxParts = 64

// Peers computes the desired peer set; see Build.
func Peers(in Input) (peers []Peer, warnings []string) {
	r := Build(in)
	return r.Peers, r.Warnings
}

// entry is one peer while the set is built.
type entry struct {
	Peer
	static bool
	nets   []netip.Prefix // accepted adverts
	wide   []netip.Prefix // of them, approved wide routes (more specific routes of others win)
	addrs  []netip.Addr   // accepted routed addresses
	claims []netip.Addr   // addresses that belong to it: mesh, routed, endpoints
	routes []netip.Addr   // of them, those routed to it (mesh, routed addresses)
	proven []netip.Addr   // of them, where WireGuard saw it answer from
	// endpoints by how sure it is they are this peer's: configured (static)
	// and seen live; Endpoints holds these and the advertised ones.
	configured, live []netip.AddrPort
}

// Build computes the desired peer set. Static peers come first in config
// order, then affiliates ordered by ID; a peer known both ways is merged
// (static endpoints first). Bad entries are skipped, each with one warning,
// so one broken affiliate cannot stop the mesh.
//
// What affiliates announce is untrusted (see trust.go). A member's mesh
// address, routed addresses and endpoint addresses belong to it: no other
// member's advert covers them, whatever the order; an address two
// affiliates both claim goes to neither (a static peer's claim wins).
// Networks that overlap between affiliates go to neither either (unless
// the wider one is an approved wide route: then the more specific wins);
// between static peers the first keeps the overlap, and static peers win
// over affiliates.
func Build(in Input) Result {
	var b Builder
	return b.Build(in)
}

// Builder is Build keeping what Update starts from: the last result and
// who refers to what in it. Build's own scratch maps are made per call and
// dropped after it: with discovery changes taken by Update, a node builds
// its peer set seldom, and at a thousand peers the maps were half a MB
// kept on every node for it. The zero value is ready; a Builder is not
// for concurrent use, and nothing it returns shares its storage.
type Builder struct {
	index  map[wgtypes.Key]*entry
	eps    map[netip.AddrPort]endpointClaim
	owner  map[netip.Addr]int
	best   map[netip.Addr]int
	routed map[netip.Addr]bool
	// What Update starts from: the last result and who refers to what
	// in it (update.go).
	last  Result
	valid bool
	refs  refs
}

// endpointClaim is who an endpoint belongs to (dropOthersEndpoints).
type endpointClaim struct{ owner, rank int }

// Build computes the desired peer set; see the function Build.
func (b *Builder) Build(in Input) Result {
	n := len(in.Static) + len(in.Affiliates)
	// Sized for a peer with an address and an endpoint or two: growing them
	// was most of the work of the maps.
	b.index, b.eps = make(map[wgtypes.Key]*entry, n), make(map[netip.AddrPort]endpointClaim, n)
	b.owner, b.best, b.routed = make(map[netip.Addr]int, 3*n), make(map[netip.Addr]int, 3*n), make(map[netip.Addr]bool, 2*n)
	b.valid = false // until this call's result is in b.last
	defer func() { b.index, b.eps, b.owner, b.best, b.routed = nil, nil, nil, nil, nil }()
	var r Result
	rp := newRoutePolicy(in.Prefix, unmapAll(in.Own), in.Approved)
	usable := func(ap netip.AddrPort) bool {
		return usableEndpoint(ap, rp.own, in.Prefix) && !subnetBroadcast(ap.Addr(), in.OwnNets)
	}
	// Sized up front, the entries in one block: at a thousand peers,
	// growing these was a fifth of what the peer set allocated.
	block := make([]entry, 0, n)
	entries := make([]*entry, 0, n)
	index := b.index
	newEntry := func(e entry) *entry {
		block = append(block, e)
		return &block[len(block)-1]
	}
	b.refs.reset()
	add := func(e *entry) {
		b.refs.keys[e.PublicKey]++
		if q, ok := index[e.PublicKey]; ok {
			if q.Name == "" {
				q.Name = e.Name
			}
			if q.AffiliateID == "" {
				q.AffiliateID = e.AffiliateID
			}
			q.nets = append(q.nets, e.nets...)
			q.wide = append(q.wide, e.wide...)
			q.addrs = append(q.addrs, e.addrs...)
			q.claims = append(q.claims, e.claims...)
			q.routes = append(q.routes, e.routes...)
			q.configured = append(q.configured, e.configured...)
			q.Endpoints = appendNew(q.Endpoints, e.Endpoints...)
			return
		}
		index[e.PublicKey] = e
		entries = append(entries, e)
	}

	for i, s := range in.Static {
		key, err := wgtypes.ParseKey(s.PublicKey)
		if err != nil {
			r.Warnings = append(r.Warnings, fmt.Sprintf("staticPeers[%d] (%s): public key %q does not parse; skipped", i, s.Name, s.PublicKey))
			continue
		}
		if key == in.Self {
			continue
		}
		addr, err := netip.ParseAddr(s.Address)
		if err != nil || !in.Prefix.Contains(addr) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("staticPeers[%d] (%s): address %q is not inside the cluster prefix %s; skipped", i, s.Name, s.Address, in.Prefix))
			continue
		}
		// The operator's own word: endpoints and networks are taken as given.
		e := newEntry(entry{Peer: Peer{PublicKey: key, Name: s.Name, Address: addr}, static: true, claims: []netip.Addr{addr}, routes: []netip.Addr{addr}})
		for _, ep := range s.Endpoints {
			if ap, err := netip.ParseAddrPort(ep); err == nil {
				e.Endpoints = append(e.Endpoints, ap)
				e.configured = append(e.configured, ap)
				e.claims = append(e.claims, ap.Addr().Unmap().WithZone(""))
			}
		}
		for _, n := range s.Networks {
			if p, err := config.ParsePrefix(n); err == nil {
				e.nets = append(e.nets, p)
			}
		}
		add(e)
	}

	affs := in.Affiliates
	byID := func(a, b *Affiliate) int { return strings.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(affs, byID) { // the discovery client's come sorted
		affs = slices.Clone(affs)
		slices.SortStableFunc(affs, byID)
	}
	for _, a := range affs {
		if e, ok := affiliateEntry(a, &in, rp, usable, &r); ok {
			add(newEntry(e))
		}
	}

	// Candidates: advertised (filtered above for affiliates), then
	// observed, which WireGuard or a peer saw answer; no duplicates.
	for _, e := range entries {
		e.addObserved(&in, usable)
	}
	b.refs.remember(affs, entries)

	dropOthersEndpoints(entries, b.eps)
	owners := claimOwners(entries, b)
	r.Warnings = append(r.Warnings, owners.warnings...)
	r.Contested = append(r.Contested, owners.contested...)

	// Each entry's networks lose what belongs to others.
	for i, e := range entries {
		var nets []netip.Prefix
		for _, n := range e.nets {
			parts := owners.cutOthers(n, i)
			if len(parts) > maxParts {
				ref := Refusal{Peer: e.label(), PublicKey: e.PublicKey, Prefix: n,
					Reason: fmt.Sprintf("holds other members' addresses and would split into more than %d routes", maxParts)}
				r.Refused = append(r.Refused, ref)
				r.Warnings = append(r.Warnings, ref.String())
				continue
			}
			nets = append(nets, parts...)
		}
		e.nets = nets
	}

	contested, warnings := resolveOverlaps(entries)
	r.Warnings = append(r.Warnings, warnings...)
	r.Contested = append(r.Contested, contested...)
	sortPrefixes(r.Contested)

	r.Peers = make([]Peer, 0, len(entries))
	for i, e := range entries {
		e.AllowedIPs = e.allowedIPs(func(a netip.Addr) bool { return owners.owner[a] == i })
		r.Peers = append(r.Peers, e.Peer)
	}
	b.last, b.valid = r, true
	return r
}

// allowedIPs are e's mesh and routed addresses that are its own, and its
// networks (cut already).
func (e *entry) allowedIPs(owns func(netip.Addr) bool) []netip.Prefix {
	var own []netip.Prefix
	if owns(e.Address) {
		own = append(own, netip.PrefixFrom(e.Address, 128))
	}
	for _, a := range e.addrs {
		if owns(a) {
			own = append(own, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	own = append(own, e.nets...)
	// The same peer may list a range twice (address inside a network):
	// keep the widest.
	slices.SortFunc(own, comparePrefix)
	var allowed []netip.Prefix
	for _, p := range own {
		if len(allowed) == 0 || !allowed[len(allowed)-1].Contains(p.Addr()) || allowed[len(allowed)-1].Addr().BitLen() != p.Addr().BitLen() {
			allowed = append(allowed, p)
		}
	}
	sortPrefixes(allowed)
	return allowed
}

// affiliateEntry is affiliate a's entry, or none: a member not on the
// mesh, this node, or one skipped with a warning in r. Refused adverts
// are recorded in r, one warning per affiliate.
func affiliateEntry(a *Affiliate, in *Input, rp *routePolicy, usable func(netip.AddrPort) bool, r *Result) (entry, bool) {
	if a.PublicKey == "" {
		return entry{}, false // a cluster member that is not on the mesh
	}
	key, err := wgtypes.ParseKey(a.PublicKey)
	if err != nil {
		r.Warnings = append(r.Warnings, fmt.Sprintf("affiliate %s (%s): public key %q does not parse; skipped", a.ID, a.NodeName, a.PublicKey))
		return entry{}, false
	}
	if key == in.Self {
		return entry{}, false
	}
	if !in.Prefix.Contains(a.Address) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("affiliate %s (%s): mesh address %s is not inside the cluster prefix %s; skipped", a.ID, a.NodeName, a.Address, in.Prefix))
		return entry{}, false
	}
	e := entry{Peer: Peer{PublicKey: key, Name: a.NodeName, AffiliateID: a.ID, Address: a.Address}, claims: []netip.Addr{a.Address}, routes: []netip.Addr{a.Address}}
	label := a.NodeName
	if label == "" {
		label = a.ID
	}
	var refused []string
	refuse := func(p netip.Prefix, why string) {
		r.Refused = append(r.Refused, Refusal{Peer: label, PublicKey: key, Prefix: p, Reason: why})
		refused = append(refused, p.String()+" ("+why+")")
	}
	nets := a.Networks
	if len(nets) > MaxNetworks {
		r.Warnings = append(r.Warnings, fmt.Sprintf("peer %s: advertises %d networks; only the first %d are considered", label, len(nets), MaxNetworks))
		nets = nets[:MaxNetworks]
	}
	for _, n := range nets {
		parts, why := rp.network(key, n)
		if why != "" {
			refuse(n.Masked(), why)
			continue
		}
		for _, p := range parts {
			kept := subtractPrefixes(p, a.ExcludeNetworks)
			e.nets = append(e.nets, kept...)
			if IsWide(n.Masked()) {
				e.wide = append(e.wide, kept...)
			}
		}
	}
	for _, ip := range a.Addresses {
		if why := rp.address(ip); why != "" {
			refuse(netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), why)
			continue
		}
		ip = ip.Unmap()
		if slices.ContainsFunc(a.ExcludeNetworks, func(n netip.Prefix) bool { return n.Contains(ip) }) {
			continue
		}
		e.addrs = append(e.addrs, ip)
		e.claims = append(e.claims, ip)
		e.routes = append(e.routes, ip)
	}
	// The first MaxCandidates usable endpoints the filter admits: those
	// at the peer's own addresses (from its sealed data) first, then
	// the rest in the peer's order; the rest is not even looked at.
	// Any member may report endpoints it says it observed for a peer,
	// so without the ranking one could push the real ones past the cap.
	var eps []netip.AddrPort
	ownAddrs := unmapAll(a.Addresses)
	for _, own := range []bool{true, false} {
		for _, ap := range a.Endpoints {
			if len(eps) == MaxCandidates {
				break
			}
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if containsAddr(ownAddrs, ap.Addr()) == own && usable(ap) && in.Filter.Admits(ap.Addr()) && !slices.Contains(eps, ap) {
				eps = append(eps, ap)
			}
		}
	}
	for _, ap := range eps {
		e.claims = append(e.claims, ap.Addr())
	}
	if len(refused) > 0 {
		// One warning per peer: a hostile one must not flood status.
		r.Warnings = append(r.Warnings, fmt.Sprintf("peer %s (%s): advertised %s refused", label, key, strings.Join(refused, ", ")))
	}
	e.Endpoints = eps
	return e, true
}

// addObserved adds the endpoints seen live for e to its candidates, after
// the advertised ones (which WireGuard or a peer saw answer); no
// duplicates.
func (e *entry) addObserved(in *Input, usable func(netip.AddrPort) bool) {
	var obs []netip.AddrPort
	for _, ap := range in.Observed[e.PublicKey] {
		if usable(ap) {
			obs = append(obs, ap)
			e.live = append(e.live, ap)
			e.proven = append(e.proven, ap.Addr().Unmap())
		}
	}
	e.Endpoints = in.Filter.AddrPorts(appendNew(e.Endpoints, obs...))
}

func unmapAll(in []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		out = append(out, a.Unmap().WithZone(""))
	}
	return out
}

// dropOthersEndpoints removes from each peer's candidates the endpoints
// that are another peer's: a WireGuard port serves one member, so a member
// listing another's endpoint as its own would only make this node send
// handshakes for it there (enough of them and that member's WireGuard
// rate-limits this node's real handshakes: its peer flaps). An endpoint is
// a peer's when configured for it (static), else when WireGuard saw the
// peer there, else when it alone lists it; one that several list with
// nothing to tell them apart stays with all.
func dropOthersEndpoints(entries []*entry, owner map[netip.AddrPort]endpointClaim) {
	for i, e := range entries {
		for _, ap := range e.Endpoints {
			r := 0
			switch {
			case slices.Contains(e.configured, ap):
				r = 2
			case slices.Contains(e.live, ap):
				r = 1
			}
			c, ok := owner[ap]
			switch {
			case !ok || r > c.rank:
				owner[ap] = endpointClaim{i, r}
			case c.owner != i && r == c.rank && r < 2:
				owner[ap] = endpointClaim{-1, r}
			}
		}
	}
	for i, e := range entries {
		e.Endpoints = slices.DeleteFunc(e.Endpoints, func(ap netip.AddrPort) bool {
			c := owner[ap]
			return c.owner >= 0 && c.owner != i
		})
	}
}

// owners records who each claimed address belongs to: the first static
// peer claiming it, else the peer WireGuard saw answer from it (a live
// endpoint is the only proof an address is a peer's), else the one
// affiliate claiming it, else nobody (contested). A contested address
// someone claims as routed is kept in the mesh as unreachable; one only
// listed as an endpoint (members behind one NAT share it) is just kept out
// of everybody's routes.
type owners struct {
	owner map[netip.Addr]int // entry index; -1: contested
	// sorted holds the claimed addresses, sorted by the first cutOthers:
	// members that advertise no networks never need them sorted, and at
	// a thousand peers the sort was a seventh of the peer set's cost.
	sorted    []netip.Addr
	isSorted  bool
	contested []netip.Prefix
	warnings  []string
}

// claimOwners fills the scratch maps of b (empty) to find the owners.
func claimOwners(entries []*entry, b *Builder) *owners {
	claims := 0
	for _, e := range entries {
		claims += len(e.claims) + len(e.proven)
	}
	o := &owners{owner: b.owner, sorted: make([]netip.Addr, 0, claims)}
	rank := func(i int, a netip.Addr) int {
		switch e := entries[i]; {
		case e.static:
			return 2
		case slices.Contains(e.proven, a):
			return 1
		}
		return 0
	}
	best := b.best // rank of the current owner (or of the contest)
	routed := b.routed
	for _, e := range entries {
		for _, a := range e.routes {
			routed[a] = true
		}
	}
	for i, e := range entries {
		for _, a := range e.claims {
			o.claim(i, e, a, rank(i, a), best, routed, entries)
		}
		for _, a := range e.proven {
			o.claim(i, e, a, rank(i, a), best, routed, entries)
		}
	}
	for a, i := range o.owner {
		o.sorted = append(o.sorted, a)
		if i < 0 && routed[a] {
			o.contested = append(o.contested, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return o
}

// claim records entry i's claim of a, of rank r (best holds the rank of
// each address's current owner or contest).
func (o *owners) claim(i int, e *entry, a netip.Addr, r int, best map[netip.Addr]int, routed map[netip.Addr]bool, entries []*entry) {
	prev, ok := o.owner[a]
	switch {
	case !ok || r > best[a]:
		o.owner[a], best[a] = i, r
	case prev == i || r < best[a] || r == 2:
		// its own; or a stronger claim (the first static peer) holds
	case prev >= 0:
		o.owner[a] = -1
		if routed[a] {
			o.warnings = append(o.warnings, fmt.Sprintf("peers %s and %s both claim %s; it is routed to neither", entries[prev].label(), e.label(), a))
		}
	}
}

// cutOthers removes from n every claimed address not owned by entry i.
func (o *owners) cutOthers(n netip.Prefix, i int) []netip.Prefix {
	n = n.Masked()
	if !o.isSorted {
		slices.SortFunc(o.sorted, netip.Addr.Compare)
		o.isSorted = true
	}
	lo, _ := slices.BinarySearchFunc(o.sorted, n.Addr(), netip.Addr.Compare)
	var cut []netip.Prefix
	for _, a := range o.sorted[lo:] {
		if !n.Contains(a) {
			break
		}
		if o.owner[a] != i {
			cut = append(cut, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if len(cut) == 0 {
		return []netip.Prefix{n}
	}
	return subtractPrefixes(n, cut)
}

// resolveOverlaps makes the entries' networks disjoint: static peers in
// order first; then between affiliates an overlap goes to neither, unless
// the wider side is an approved wide route, which yields the more specific
// range to the other. It returns the ranges given to nobody.
func resolveOverlaps(entries []*entry) (contested []netip.Prefix, warnings []string) {
	// Static peers: the first keeps an overlap.
	var claimed []netip.Prefix
	for _, e := range entries {
		if !e.static {
			continue
		}
		var kept []netip.Prefix
		for _, n := range e.nets {
			parts := subtractPrefixes(n, claimed)
			if len(parts) != 1 || parts[0] != n {
				warnings = append(warnings, fmt.Sprintf("peer %s: %s overlaps an earlier peer's AllowedIPs; the overlap stays with the earlier peer", e.label(), n))
			}
			kept = append(kept, parts...)
		}
		e.nets = kept
		claimed = append(claimed, kept...)
	}
	slices.SortFunc(claimed, comparePrefix)
	type tagged struct {
		p     netip.Prefix
		owner int
	}
	var all []tagged
	for i, e := range entries {
		if e.static {
			continue
		}
		var kept []netip.Prefix
		for _, n := range e.nets {
			parts := subtractSorted(n, claimed)
			if len(parts) != 1 || parts[0] != n {
				warnings = append(warnings, fmt.Sprintf("peer %s: %s overlaps a static peer's AllowedIPs; the overlap stays with the static peer", e.label(), n))
			}
			kept = append(kept, parts...)
		}
		e.nets = kept
		for _, n := range kept {
			all = append(all, tagged{n, i})
		}
	}
	// Prefixes either nest or are disjoint: sorted by start (wider first),
	// everything starting inside p lies inside p.
	slices.SortFunc(all, func(a, b tagged) int { return comparePrefix(a.p, b.p) })
	cuts := map[int][]netip.Prefix{}
	for i := range all {
		outer := all[i]
		last := lastAddr(outer.p)
		for j := i + 1; j < len(all) && all[j].p.Addr().BitLen() == outer.p.Addr().BitLen() && !last.Less(all[j].p.Addr()); j++ {
			inner := all[j]
			if inner.owner == outer.owner {
				continue
			}
			cuts[outer.owner] = append(cuts[outer.owner], inner.p)
			if inner.p != outer.p && slices.Contains(entries[outer.owner].wide, outer.p) {
				continue // an approved wide route yields to the more specific
			}
			cuts[inner.owner] = append(cuts[inner.owner], inner.p)
			if !slices.Contains(contested, inner.p) {
				contested = append(contested, inner.p)
				warnings = append(warnings, fmt.Sprintf("peers %s and %s both advertise %s; it is routed to neither", entries[outer.owner].label(), entries[inner.owner].label(), inner.p))
			}
		}
	}
	for i, c := range cuts {
		e := entries[i]
		var kept []netip.Prefix
		for _, n := range e.nets {
			kept = append(kept, subtractPrefixes(n, c)...)
		}
		e.nets = kept
	}
	return contested, warnings
}

// subtractSorted is subtractPrefixes with cut sorted by comparePrefix,
// looking only at the cuts that can overlap n.
func subtractSorted(n netip.Prefix, cut []netip.Prefix) []netip.Prefix {
	var near []netip.Prefix
	for _, c := range cut {
		if c.Overlaps(n) {
			near = append(near, c)
		}
	}
	if len(near) == 0 {
		return []netip.Prefix{n}
	}
	return subtractPrefixes(n, near)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func (p *Peer) label() string {
	if p.Name != "" {
		return p.Name
	}
	return p.PublicKey.String()
}

func appendNew(list []netip.AddrPort, more ...netip.AddrPort) []netip.AddrPort {
	out := append([]netip.AddrPort(nil), list...)
	for _, ap := range more {
		if ap.IsValid() && !containsAddrPort(out, ap) {
			out = append(out, ap)
		}
	}
	return out
}
