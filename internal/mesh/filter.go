package mesh

import (
	"fmt"
	"net/netip"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// Filter is an ordered endpoint filter with KubeSpan's filters.endpoints
// semantics: walking the entries in order from an empty result, a positive
// entry admits every candidate it contains (once), a "!" entry removes the
// already admitted candidates it contains. A candidate no positive entry
// admits is dropped, and a "!" entry before its positive entry does nothing.
// The zero Filter admits everything.
type Filter struct {
	rules []filterRule
}

type filterRule struct {
	prefix netip.Prefix
	negate bool
}

// ParseFilter reads the config's endpointFilters list.
func ParseFilter(entries []string) (Filter, error) {
	var f Filter
	for i, s := range entries {
		p, neg, err := config.ParseEndpointFilter(s)
		if err != nil {
			return Filter{}, fmt.Errorf("mesh: endpointFilters[%d]: %w", i, err)
		}
		f.rules = append(f.rules, filterRule{prefix: p, negate: neg})
	}
	return f, nil
}

// Empty reports whether the filter admits everything.
func (f Filter) Empty() bool { return len(f.rules) == 0 }

// Admits reports whether the filter admits a: the last entry containing
// it decides (a "!" one removes, a positive one admits).
func (f Filter) Admits(a netip.Addr) bool {
	if f.Empty() {
		return true
	}
	a = a.Unmap()
	ok := false
	for _, r := range f.rules {
		if r.prefix.Contains(a) {
			ok = !r.negate
		}
	}
	return ok
}

// Addrs returns the admitted addresses. The order is the order in which the
// entries admitted them, then the input order: that is how KubeSpan orders
// its endpoint list, and the first endpoint is the first one peers try.
func (f Filter) Addrs(in []netip.Addr) []netip.Addr {
	if f.Empty() {
		return dedupAddrs(in)
	}
	var out []netip.Addr
	for _, r := range f.rules {
		if r.negate {
			kept := out[:0]
			for _, a := range out {
				if !r.prefix.Contains(a.Unmap()) {
					kept = append(kept, a)
				}
			}
			out = kept
			continue
		}
		for _, a := range in {
			if r.prefix.Contains(a.Unmap()) && !containsAddr(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// AddrPorts filters endpoints by their IP, keeping the input order among
// the admitted ones (a peer's order is its preference and must survive).
func (f Filter) AddrPorts(in []netip.AddrPort) []netip.AddrPort {
	ips := make([]netip.Addr, 0, len(in))
	for _, ap := range in {
		ips = append(ips, ap.Addr())
	}
	ok := f.Addrs(ips)
	var out []netip.AddrPort
	for _, ap := range in {
		if containsAddr(ok, ap.Addr()) && !containsAddrPort(out, ap) {
			out = append(out, ap)
		}
	}
	return out
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if b == a {
			return true
		}
	}
	return false
}

func containsAddrPort(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, b := range list {
		if b == a {
			return true
		}
	}
	return false
}

func dedupAddrs(in []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range in {
		if !containsAddr(out, a) {
			out = append(out, a)
		}
	}
	return out
}
