package netpolicy

import (
	"net/netip"
	"slices"
)

// addrRange is an inclusive range of addresses of one family. nftables
// interval sets hold ranges, and set arithmetic (routed minus LAN bypass,
// minus down peers) is exact on ranges where it is awkward on prefixes.
type addrRange struct{ from, to netip.Addr }

// lastAddr is the highest address inside p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// rangesOf returns the merged, sorted ranges covering the prefixes of one
// family (v6 selects IPv6). IPv4-mapped IPv6 prefixes count as IPv4.
func rangesOf(ps []netip.Prefix, v6 bool) []addrRange {
	var rs []addrRange
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Is6() != v6 {
			continue
		}
		p = p.Masked()
		rs = append(rs, addrRange{p.Addr(), lastAddr(p)})
	}
	return mergeRanges(rs)
}

// mergeRanges sorts ranges and joins overlapping or adjacent ones.
func mergeRanges(rs []addrRange) []addrRange {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.from.Compare(b.from) })
	out := []addrRange{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		next := last.to.Next() // invalid when last.to is the highest address
		if !next.IsValid() || r.from.Compare(next) <= 0 {
			if r.to.Compare(last.to) > 0 {
				last.to = r.to
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtractRanges returns a minus b; both must be merged and sorted.
func subtractRanges(a, b []addrRange) []addrRange {
	var out []addrRange
	for _, r := range a {
		cur, alive := r, true
		for _, cut := range b {
			if !alive {
				break
			}
			if cut.to.Compare(cur.from) < 0 || cut.from.Compare(cur.to) > 0 {
				continue
			}
			if cut.from.Compare(cur.from) > 0 {
				out = append(out, addrRange{cur.from, cut.from.Prev()})
			}
			if cut.to.Compare(cur.to) >= 0 {
				alive = false
				continue
			}
			cur.from = cut.to.Next()
		}
		if alive {
			out = append(out, cur)
		}
	}
	return out
}

// prefixes returns the fewest prefixes that cover exactly r.
func (r addrRange) prefixes() []netip.Prefix {
	var out []netip.Prefix
	from := r.from
	for from.IsValid() && from.Compare(r.to) <= 0 {
		// The shortest prefix starting at from that ends inside r.
		for bits := 0; bits <= from.BitLen(); bits++ {
			p := netip.PrefixFrom(from, bits)
			if p.Masked().Addr() != from || lastAddr(p).Compare(r.to) > 0 {
				continue
			}
			out = append(out, p)
			from = lastAddr(p).Next()
			break
		}
	}
	return out
}

// rangesPrefixes flattens ranges into prefixes, in order.
func rangesPrefixes(rs []addrRange) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		out = append(out, r.prefixes()...)
	}
	return out
}
