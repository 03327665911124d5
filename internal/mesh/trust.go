package mesh

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// Everything a peer announces through discovery is untrusted: any member
// holding the cluster secret, or one with a typo in its config, can publish
// anything. These are the rules applied to it.

// MaxCandidates is how many of a discovered peer's advertised endpoints are
// tried; the rest are ignored. A node has a few addresses per family plus
// what NATs showed of it; the discovery service allows 64.
const MaxCandidates = 8

// ApprovedRoute lets one peer, named by public key (node names and
// affiliate IDs are chosen by the peer itself), route networks this node
// would otherwise refuse as too wide: exit nodes. An advert inside one of
// Networks is accepted.
type ApprovedRoute struct {
	PublicKey wgtypes.Key
	Networks  []netip.Prefix
}

// Refusal is an advertised network (or routed address) not accepted from
// a peer, with the reason.
type Refusal struct {
	Peer      string
	PublicKey wgtypes.Key
	Prefix    netip.Prefix
	Reason    string
}

func (r Refusal) String() string {
	return fmt.Sprintf("peer %s (%s): advertised %s refused: %s", r.Peer, r.PublicKey, r.Prefix, r.Reason)
}

// special are ranges never routed to a peer: they name this host or its
// links (loopback, link-local with cloud metadata at 169.254.169.254),
// nothing (0.0.0.0/8, ::), or many (multicast, broadcast, class E).
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// IsWide reports whether p needs approval to be routed to a peer: the
// same line a node's own config draws (config.IsWide).
func IsWide(p netip.Prefix) bool { return config.IsWide(p) }

// routePolicy decides what of a peer's adverts it may route.
type routePolicy struct {
	prefix   netip.Prefix
	own      []netip.Addr
	approved []ApprovedRoute
	// reasons formatted once per Build, not once per advert
	inMesh, coversMesh string
}

func newRoutePolicy(prefix netip.Prefix, own []netip.Addr, approved []ApprovedRoute) *routePolicy {
	return &routePolicy{prefix: prefix, own: own, approved: approved,
		inMesh:     fmt.Sprintf("inside the mesh prefix %s, whose addresses belong to their members", prefix),
		coversMesh: fmt.Sprintf("covers the mesh prefix %s", prefix)}
}

var reasonWide = fmt.Sprintf("wider than /%d (IPv4) or /%d (IPv6); approve it for this peer in filters.approvedRoutes", config.WideIPv4Bits, config.WideIPv6Bits)

func (rp *routePolicy) isApproved(key wgtypes.Key, n netip.Prefix) bool {
	for _, a := range rp.approved {
		if a.PublicKey != key {
			continue
		}
		for _, ap := range a.Networks {
			if ap.Bits() <= n.Bits() && ap.Contains(n.Addr()) {
				return true
			}
		}
	}
	return false
}

// network checks one advertised network. It returns the parts that may be
// routed to the peer (before other members' addresses are cut), or a
// reason to refuse it whole. An approved wide route is kept but loses the
// mesh prefix, this node's addresses and the special ranges; an advert
// that is not approved is refused when it needs cutting.
func (rp *routePolicy) network(key wgtypes.Key, n netip.Prefix) ([]netip.Prefix, string) {
	n = n.Masked()
	if !n.IsValid() {
		return nil, "not a valid prefix"
	}
	if rp.prefix.Bits() <= n.Bits() && rp.prefix.Contains(n.Addr()) {
		return nil, rp.inMesh
	}
	approved := rp.isApproved(key, n)
	if !approved {
		switch {
		case n.Bits() == 0:
			return nil, "a default route; approve it for this peer in filters.approvedRoutes if it is an exit node"
		case IsWide(n):
			return nil, reasonWide
		case n.Overlaps(rp.prefix):
			return nil, rp.coversMesh
		}
		for _, a := range rp.own {
			if n.Contains(a) {
				return nil, fmt.Sprintf("covers this node's own address %s", a)
			}
		}
		for _, s := range special {
			if n.Overlaps(s) {
				return nil, fmt.Sprintf("overlaps the special-purpose range %s (loopback, link-local, multicast or reserved)", s)
			}
		}
		return []netip.Prefix{n}, ""
	}
	cut := append([]netip.Prefix{rp.prefix}, special...)
	for _, a := range rp.own {
		cut = append(cut, netip.PrefixFrom(a, a.BitLen()))
	}
	return subtractPrefixes(n, cut), ""
}

// address checks a routed underlay address a peer claims as its own.
func (rp *routePolicy) address(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "not a valid address"
	case rp.prefix.Contains(a):
		return rp.inMesh
	case slices.Contains(rp.own, a):
		return "this node's own address"
	}
	for _, s := range special {
		if s.Contains(a) {
			return fmt.Sprintf("inside the special-purpose range %s", s)
		}
	}
	return ""
}

var v4compat = netip.MustParsePrefix("::/96")

// usableEndpoint reports whether a peer's endpoint may be sent to: never
// this node itself, loopback, nothing, many (multicast, broadcast, class E)
// or the mesh (which would loop through the tunnel). An IPv6 link-local
// endpoint needs a zone (its link), which discovery never carries; an IPv4
// one needs this node to have a link-local address too.
func usableEndpoint(ap netip.AddrPort, own []netip.Addr, prefix netip.Prefix) bool {
	a := ap.Addr().Unmap()
	if !a.IsValid() || ap.Port() == 0 || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
		prefix.Contains(a.WithZone("")) || slices.Contains(own, a.WithZone("")) {
		return false
	}
	if a.Is4() {
		b := a.As4()
		if b[0] == 0 || b[0] >= 240 { // "this network", class E and 255.255.255.255
			return false
		}
	}
	if a.IsLinkLocalUnicast() {
		if a.Is6() {
			return a.Zone() != ""
		}
		return slices.ContainsFunc(own, func(o netip.Addr) bool { return o.Is4() && o.IsLinkLocalUnicast() })
	}
	// A zone means nothing off link-local, and IPv4-compatible IPv6
	// (::a.b.c.d) is obsolete.
	return a.Zone() == "" && !(a.Is6() && v4compat.Contains(a))
}

// Exclude returns nets and addrs without what exclude covers: what this
// node announces after filters.excludeAdvertisedNetworks.
func Exclude(nets []netip.Prefix, addrs []netip.Addr, exclude []netip.Prefix) ([]netip.Prefix, []netip.Addr) {
	if len(exclude) == 0 {
		return nets, addrs
	}
	var outNets []netip.Prefix
	for _, n := range nets {
		outNets = append(outNets, subtractPrefixes(n, exclude)...)
	}
	var outAddrs []netip.Addr
	for _, a := range addrs {
		if !slices.ContainsFunc(exclude, func(p netip.Prefix) bool { return p.Contains(a) }) {
			outAddrs = append(outAddrs, a)
		}
	}
	return outNets, outAddrs
}

// subnetBroadcast reports whether a is the network or broadcast address of
// one of this node's IPv4 subnets (/30 and wider): sending there reaches
// every host on the link.
func subnetBroadcast(a netip.Addr, nets []netip.Prefix) bool {
	a = a.Unmap()
	for _, n := range nets {
		if !a.Is4() || !n.Addr().Unmap().Is4() || n.Bits() > 30 {
			continue
		}
		m := netip.PrefixFrom(n.Addr().Unmap(), n.Bits()).Masked()
		if a == m.Addr() || a == lastAddr(m) {
			return true
		}
	}
	return false
}
