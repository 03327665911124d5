package mesh

import (
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
)

// Delta is what an Update changed in the peer set.
type Delta struct {
	// Changed are the peers that are new or whose Peer differs.
	Changed []wgtypes.Key
	// Removed are the peers no longer in the set.
	Removed []wgtypes.Key
}

// refs counts, over every entry of the last result, who refers to what:
// an Update may only touch an affiliate nobody else's entry refers to.
type refs struct {
	affs []*Affiliate // the last input's, sorted by ID
	// unique: affs are in strictly increasing ID order (diffAffiliates
	// takes that on trust for affiliates it does not read).
	unique  bool
	statics int // peers of static entries, at the head of the result
	keys    map[wgtypes.Key]int
	claims  map[netip.Addr]int     // mesh, routed, endpoint and proven addresses
	eps     map[netip.AddrPort]int // candidates, before dropOthersEndpoints
	nets    []netip.Prefix         // accepted networks, before any cut
}

// reset empties r for a Build, which counts each entry's key as it adds
// it (before entries of one key are merged), then calls remember.
func (r *refs) reset() {
	if r.keys == nil {
		r.keys, r.claims, r.eps = map[wgtypes.Key]int{}, map[netip.Addr]int{}, map[netip.AddrPort]int{}
	}
	clear(r.keys)
	clear(r.claims)
	clear(r.eps)
}

// remember records what the entries refer to (Build, once candidates are
// complete).
func (r *refs) remember(affs []*Affiliate, entries []*entry) {
	r.affs, r.statics, r.nets = affs, 0, r.nets[:0]
	r.unique = true
	for i := 1; i < len(affs) && r.unique; i++ {
		r.unique = affs[i-1].ID < affs[i].ID
	}
	for _, e := range entries {
		if e.static {
			r.statics++
		}
		r.count(e, 1)
		r.keys[e.PublicKey]-- // counted by Build, once per entry merged into e
		r.nets = append(r.nets, e.nets...)
	}
}

// reserve makes room for n more entries' references.
func (r *refs) reserve(n int) {
	r.keys = reserve.Map(r.keys, n)
	r.claims = reserve.Map(r.claims, 2*n) // a mesh address and an endpoint's, most often
	r.eps = reserve.Map(r.eps, n)
}

// count adds (n = 1) or takes away (n = -1) e's references.
func (r *refs) count(e *entry, n int) {
	r.keys[e.PublicKey] += n
	for _, a := range e.claims {
		r.claims[a] += n
	}
	for _, a := range e.proven {
		r.claims[a] += n
	}
	for _, ap := range e.Endpoints {
		r.eps[ap] += n
	}
}

// alone reports whether nothing in r refers to what e refers to, once e's
// own references are taken away (mine: e is in r, not: it is new).
func (r *refs) alone(e *entry, mine bool) bool {
	own := 0
	if mine {
		own = 1
	}
	if r.keys[e.PublicKey] != own {
		return false
	}
	for _, list := range [][]netip.Addr{e.claims, e.proven} {
		for _, a := range list {
			if r.claims[a] != own*(countAddr(e.claims, a)+countAddr(e.proven, a)) {
				return false
			}
			if slices.ContainsFunc(r.nets, func(n netip.Prefix) bool { return n.Contains(a) }) {
				return false
			}
		}
	}
	for _, ap := range e.Endpoints {
		if r.eps[ap] != own {
			return false
		}
	}
	return true
}

func countAddr(list []netip.Addr, a netip.Addr) int {
	n := 0
	for _, b := range list {
		if b == a {
			n++
		}
	}
	return n
}

// Update returns Build(in) computed from the last Build or Update of b,
// for an input that differs from that call's at most in Affiliates (the
// caller compares the rest), and what changed. It works only on the
// affiliates that changed, and only where that provably gives Build's
// result: each changed affiliate, before and after, has no networks and
// nothing to warn of, and no other peer shares its key, an address it
// claims, or a candidate, or advertises a network holding one of its
// addresses. Otherwise ok is false, and the caller builds. At a thousand
// peers, one member moving, joining or leaving costs an Update a walk
// over the affiliates where a Build computes every peer and every claim.
//
// The result's Peers is a new slice (unchanged peers are copied, and
// share their slices with the last result's, which nothing modifies).
func (b *Builder) Update(in Input) (r Result, d Delta, ok bool) {
	if !b.valid || !b.refs.unique {
		return Result{}, Delta{}, false
	}
	changes, ok := diffAffiliates(b.refs.affs, in.Affiliates)
	if !ok {
		return Result{}, Delta{}, false
	}
	b.valid = false // until the result is in b.last: a failed Update leaves refs half done
	rp := newRoutePolicy(in.Prefix, unmapAll(in.Own), in.Approved)
	usable := func(ap netip.AddrPort) bool {
		return usableEndpoint(ap, rp.own, in.Prefix) && !subnetBroadcast(ap.Addr(), in.OwnNets)
	}
	// Each change is checked against the references as the changes before
	// it left them; the peers are then merged in one walk.
	type patch struct {
		id             string
		hasOld, hasCur bool // the last result has its peer; the new one has cur
		cur            Peer
	}
	patches := make([]patch, 0, len(changes))
	b.refs.reserve(len(changes))
	changed := map[wgtypes.Key]bool{}
	tail := b.last.Peers[b.refs.statics:]
	for _, c := range changes {
		var old, cur entry
		var hasOld, hasCur bool
		if c.old != nil {
			if old, hasOld, ok = plainEntry(c.old, &in, rp, usable); !ok || hasOld && !b.refs.alone(&old, true) {
				return Result{}, Delta{}, false
			}
		}
		if c.cur != nil {
			if cur, hasCur, ok = plainEntry(c.cur, &in, rp, usable); !ok {
				return Result{}, Delta{}, false
			}
		}
		pt := patch{cur: cur.Peer, hasCur: hasCur}
		if hasOld {
			i, found := peerByID(tail, old.AffiliateID)
			if !found || tail[i].PublicKey != old.PublicKey {
				return Result{}, Delta{}, false
			}
			pt.id, pt.hasOld = old.AffiliateID, true
			b.refs.count(&old, -1)
			changed[old.PublicKey] = false
		}
		if hasCur {
			if !b.refs.alone(&cur, false) {
				return Result{}, Delta{}, false
			}
			if _, found := peerByID(tail, cur.AffiliateID); found && !hasOld {
				return Result{}, Delta{}, false // an ID listed twice
			}
			pt.id = cur.AffiliateID
			b.refs.count(&cur, 1)
			changed[cur.PublicKey] = !hasOld || old.PublicKey != cur.PublicKey || !samePeer(&old.Peer, &cur.Peer)
		}
		if pt.id != "" {
			patches = append(patches, pt)
		}
	}
	// Affiliates' peers follow the static ones in ID order, as the changes
	// do: one merge.
	peers := make([]Peer, 0, len(b.last.Peers)+len(patches))
	peers = append(peers, b.last.Peers[:b.refs.statics]...)
	for _, pt := range patches {
		i, _ := peerByID(tail, pt.id)
		peers = append(peers, tail[:i]...)
		tail = tail[i:]
		if pt.hasOld {
			tail = tail[1:]
		}
		if pt.hasCur {
			peers = append(peers, pt.cur)
		}
	}
	peers = append(peers, tail...)
	for k, ch := range changed {
		switch {
		case ch:
			d.Changed = append(d.Changed, k)
		case b.refs.keys[k] == 0:
			d.Removed = append(d.Removed, k)
		}
	}
	b.refs.affs = in.Affiliates
	b.last = Result{Peers: peers, Warnings: b.last.Warnings, Refused: b.last.Refused, Contested: b.last.Contested}
	b.valid = true
	return b.last, d, true
}

// plainEntry is a's entry with its candidates, when it is one an Update
// may handle: no networks, nothing refused or warned of. has is false for
// an affiliate with no entry (not on the mesh, or this node).
func plainEntry(a *Affiliate, in *Input, rp *routePolicy, usable func(netip.AddrPort) bool) (e entry, has, ok bool) {
	var r Result
	e, has = affiliateEntry(a, in, rp, usable, &r)
	if len(r.Warnings) > 0 || len(r.Refused) > 0 || len(e.nets) > 0 {
		return entry{}, false, false
	}
	if has {
		e.addObserved(in, usable)
		// The old entry's AllowedIPs, to compare with the new one's.
		e.AllowedIPs = e.allowedIPs(func(netip.Addr) bool { return true })
	}
	return e, has, true
}

// peerByID finds the affiliate peer with the given ID in peers (affiliates'
// peers, in ID order): its place, or where it would go.
func peerByID(peers []Peer, id string) (int, bool) {
	return slices.BinarySearchFunc(peers, id, func(p Peer, id string) int { return strings.Compare(p.AffiliateID, id) })
}

// affChange is one affiliate before and after (nil: absent).
type affChange struct{ old, cur *Affiliate }

// diffAffiliates lists the affiliates that differ between two lists sorted
// by ID, old strictly (refs.unique); ok is false for an unsorted cur or an
// ID it lists twice.
func diffAffiliates(old, cur []*Affiliate) (changes []affChange, ok bool) {
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		// An affiliate that did not change is the same pointer, and one
		// that follows another that did not is in order (old is strictly)
		// without reading either: at a thousand members, reading each
		// affiliate's ID on every change was a cache miss each.
		if i < len(old) && j < len(cur) && old[i] == cur[j] && (i == 0 && j == 0 || i > 0 && j > 0 && old[i-1] == cur[j-1]) {
			i, j = i+1, j+1
			continue
		}
		switch {
		case i > 0 && i < len(old) && old[i].ID <= old[i-1].ID, j > 0 && j < len(cur) && cur[j].ID <= cur[j-1].ID:
			return nil, false
		case j == len(cur) || i < len(old) && old[i].ID < cur[j].ID:
			changes = append(changes, affChange{old: old[i]})
			i++
		case i == len(old) || cur[j].ID < old[i].ID:
			changes = append(changes, affChange{cur: cur[j]})
			j++
		default:
			if !SameAffiliate(old[i], cur[j]) {
				changes = append(changes, affChange{old: old[i], cur: cur[j]})
			}
			i++
			j++
		}
	}
	return changes, true
}

// SameAffiliate reports whether a and b describe the same member the same
// way, as far as the peer set reads them. Affiliates are never modified, so
// one pointer is the same affiliate without reading it (a discovery view
// keeps an unchanged one's pointer).
func SameAffiliate(a, b *Affiliate) bool {
	return a == b || a.ID == b.ID && a.NodeName == b.NodeName && a.PublicKey == b.PublicKey && a.Address == b.Address &&
		equal(a.Addresses, b.Addresses) && equal(a.Networks, b.Networks) &&
		equal(a.ExcludeNetworks, b.ExcludeNetworks) && equal(a.Endpoints, b.Endpoints)
}

// equal is slices.Equal that takes one backing array for equal contents
// without reading them: the discovery client converts an affiliate once,
// so an unchanged one shares its slices from view to view, and at a
// thousand members reading them all on every change was cache misses.
func equal[T comparable](a, b []T) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.Equal(a, b)
}

// samePeer reports whether a and b are the same peer the same way.
func samePeer(a, b *Peer) bool {
	return a.PublicKey == b.PublicKey && a.Name == b.Name && a.AffiliateID == b.AffiliateID && a.Address == b.Address &&
		slices.Equal(a.Endpoints, b.Endpoints) && slices.Equal(a.AllowedIPs, b.AllowedIPs)
}
