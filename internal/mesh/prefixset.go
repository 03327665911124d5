package mesh

import (
	"net/netip"
	"slices"
	"sort"
)

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ from, to netip.Addr }

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	return addrRange{from: p.Addr(), to: lastAddr(p)}
}

// lastAddr is the highest address of p (all host bits set).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

func setHostBits(b []byte, bits int) {
	for i := range b {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			b[i] |= 0xff >> bits
			bits = 0
		default:
			b[i] = 0xff
		}
	}
}

// subtractPrefixes returns the parts of p not covered by any of cut, as the
// fewest prefixes, in address order.
func subtractPrefixes(p netip.Prefix, cut []netip.Prefix) []netip.Prefix {
	if !slices.ContainsFunc(cut, func(c netip.Prefix) bool { return c.Addr().Is4() == p.Addr().Is4() && c.Overlaps(p) }) {
		return []netip.Prefix{p.Masked()} // the common case, without the ranges
	}
	rs := []addrRange{prefixRange(p)}
	for _, c := range cut {
		if c.Addr().Is4() != p.Addr().Is4() || !c.Overlaps(p) {
			continue
		}
		cr := prefixRange(c)
		var next []addrRange
		for _, r := range rs {
			next = append(next, r.minus(cr)...)
		}
		rs = next
	}
	var out []netip.Prefix
	for _, r := range rs {
		out = append(out, r.prefixes()...)
	}
	return out
}

func (r addrRange) minus(c addrRange) []addrRange {
	if c.to.Less(r.from) || r.to.Less(c.from) {
		return []addrRange{r}
	}
	var out []addrRange
	if r.from.Less(c.from) {
		out = append(out, addrRange{r.from, c.from.Prev()})
	}
	if c.to.Less(r.to) {
		out = append(out, addrRange{c.to.Next(), r.to})
	}
	return out
}

// prefixes splits the range into the fewest CIDR blocks.
func (r addrRange) prefixes() []netip.Prefix {
	var out []netip.Prefix
	from := r.from
	for {
		for bits := 0; bits <= from.BitLen(); bits++ {
			p := netip.PrefixFrom(from, bits)
			if p.Masked().Addr() != from || r.to.Less(lastAddr(p)) {
				continue
			}
			out = append(out, p)
			from = lastAddr(p)
			break
		}
		if from == r.to {
			return out
		}
		from = from.Next()
	}
}

// sortPrefixes orders prefixes by family, address, then length, so that
// AllowedIPs compare equal regardless of how they were assembled.
func sortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool {
		if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
			return c < 0
		}
		return ps[i].Bits() < ps[j].Bits()
	})
}
