package agent

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"

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
	affs    []*mesh.Affiliate
	filter  mesh.Filter
	// live are the endpoints WireGuard last used for up peers: candidates
	// the peers did not announce (their NAT's public side).
	live     map[wgtypes.Key]netip.AddrPort
	approved []mesh.ApprovedRoute
}

// peerSpecs is the peer set for this pass: who the peers are, their
// AllowedIPs and endpoint candidates, and what was refused from them.
func peerSpecs(in peerSpecInput) mesh.Result {
	var b mesh.Builder
	r, _ := buildPeerSpecs(&b, in)
	return r
}

// buildPeerSpecs is peerSpecs with b's scratch storage; it also returns
// the observed endpoints it made of in.live.
func buildPeerSpecs(b *mesh.Builder, in peerSpecInput) (mesh.Result, map[wgtypes.Key][]netip.AddrPort) {
	observed := make(map[wgtypes.Key][]netip.AddrPort, len(in.live))
	for k, ep := range in.live {
		observed[k] = []netip.AddrPort{ep}
	}
	return b.Build(meshInput(in, observed)), observed
}

func meshInput(in peerSpecInput, observed map[wgtypes.Key][]netip.AddrPort) mesh.Input {
	return mesh.Input{
		Self: in.self, Prefix: in.prefix, Own: in.own, OwnNets: in.ownNets, Static: in.static,
		Affiliates: in.affs, Filter: in.filter, Observed: observed, Approved: in.approved,
	}
}

// specCache keeps the last peer set with what it was computed from. The
// peer set is a pure function of its input, and at a thousand peers
// computing it was a third of a pass: a pass whose input did not change
// (every tick, and every member but the ones a change concerns) reuses it.
// Comparing the input costs a fraction of computing it.
type specCache struct {
	in       peerSpecInput
	observed map[wgtypes.Key][]netip.AddrPort // made of in.live
	out      mesh.Result
	ok       bool
	build    mesh.Builder
}

func (c *specCache) peerSpecs(in peerSpecInput) mesh.Result {
	if c.ok && sameSpecInput(c.in, in) {
		return c.out
	}
	if c.ok && sameSpecInputButAffiliates(c.in, in) {
		// Affiliates came, went or changed since the last pass (a tick
		// after a burst of them): an Update where it can tell.
		if r, _, ok := c.update(in.affs); ok {
			return r
		}
	}
	c.out, c.observed = buildPeerSpecs(&c.build, in)
	c.in, c.ok = in, true
	return c.out
}

// update is the last peer set with the affiliates affs instead, and what
// changed, when mesh.Builder.Update can tell (the change pass); the rest
// of the input is the last pass's.
func (c *specCache) update(affs []*mesh.Affiliate) (mesh.Result, mesh.Delta, bool) {
	if !c.ok {
		return mesh.Result{}, mesh.Delta{}, false
	}
	in := c.in
	in.affs = affs
	r, d, ok := c.build.Update(meshInput(in, c.observed))
	if !ok {
		return mesh.Result{}, mesh.Delta{}, false
	}
	c.in, c.out = in, r
	return r, d, true
}

func sameSpecInput(a, b peerSpecInput) bool {
	return (sameBacking(a.affs, b.affs) || slices.EqualFunc(a.affs, b.affs, mesh.SameAffiliate)) &&
		sameSpecInputButAffiliates(a, b)
}

func sameSpecInputButAffiliates(a, b peerSpecInput) bool {
	return a.self == b.self && a.prefix == b.prefix &&
		slices.Equal(a.own, b.own) && slices.Equal(a.ownNets, b.ownNets) &&
		maps.Equal(a.live, b.live) &&
		reflect.DeepEqual(a.static, b.static) && reflect.DeepEqual(a.filter, b.filter) &&
		reflect.DeepEqual(a.approved, b.approved)
}

// sameBacking reports whether a and b are the same slice: the discovery
// view's affiliates are built anew whenever the client's change and never
// modified, so the same slice holds the same affiliates (and comparing a
// thousand of them with themselves was 4 % of the members' CPU in
// tests/scale).
func sameBacking(a, b []*mesh.Affiliate) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
