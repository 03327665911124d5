package mesh

import "net/netip"

// LocalInput is what this node's published endpoints are computed from.
type LocalInput struct {
	// Addrs are the node's addresses on links that are up (not the mesh link).
	Addrs []netip.Addr
	// Prefix is the cluster's mesh /64; addresses inside it are never endpoints.
	Prefix netip.Prefix
	// Observed is the address the discovery service saw this node connect
	// from (its public address behind NAT); invalid if unknown.
	Observed netip.Addr
	Port     uint16
	Filter   Filter
	// Extra endpoints are appended as they are, unfiltered.
	Extra []netip.AddrPort
}

// LocalEndpoints returns the endpoints this node advertises, in order: its
// usable addresses, then the observed address, filtered, paired with the
// listen port; then the extra endpoints. Loopback, link-local, multicast,
// unspecified and mesh addresses are never advertised.
func LocalEndpoints(in LocalInput) []netip.AddrPort {
	var ips []netip.Addr
	for _, a := range append(append([]netip.Addr(nil), in.Addrs...), in.Observed) {
		a = a.Unmap()
		if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() ||
			a.IsUnspecified() || a.IsInterfaceLocalMulticast() || in.Prefix.Contains(a) {
			continue
		}
		ips = append(ips, a.WithZone(""))
	}
	var out []netip.AddrPort
	for _, a := range in.Filter.Addrs(ips) {
		out = append(out, netip.AddrPortFrom(a, in.Port))
	}
	return appendNew(out, in.Extra...)
}

// Routed returns the addresses a node advertises as routed through the mesh
// (affiliate "addresses"): usable unicast addresses, without the mesh ones.
func Routed(addrs []netip.Addr, prefix netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() ||
			a.IsUnspecified() || prefix.Contains(a) || containsAddr(out, a) {
			continue
		}
		out = append(out, a.WithZone(""))
	}
	return out
}
