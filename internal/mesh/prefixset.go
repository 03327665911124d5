package mesh

import (
	"net/netip"
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

// prefixIndex answers "which of these prefixes overlap p" without a scan,
// so removing overlaps across N peers costs O(N log N), not O(N²) (at
// 1,000 peers the scan made one peer-set computation take ~0.1 s). Two
// prefixes overlap only if one contains the other: the candidates are p's
// ancestors, looked up by the prefix lengths in use, and the prefixes that
// start inside p, a run of the address-sorted list.
type prefixIndex struct {
	set    map[netip.Prefix]struct{}
	lens   [2][129]bool // [is IPv4][bits] present
	sorted []netip.Prefix
}

func newPrefixIndex() *prefixIndex { return &prefixIndex{set: map[netip.Prefix]struct{}{}} }

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 1
	}
	return 0
}

func (x *prefixIndex) add(ps ...netip.Prefix) {
	for _, p := range ps {
		p = p.Masked()
		if _, ok := x.set[p]; ok {
			continue
		}
		x.set[p] = struct{}{}
		x.lens[family(p)][p.Bits()] = true
		i := sort.Search(len(x.sorted), func(i int) bool { return !x.sorted[i].Addr().Less(p.Addr()) })
		x.sorted = append(x.sorted, netip.Prefix{})
		copy(x.sorted[i+1:], x.sorted[i:])
		x.sorted[i] = p
	}
}

// overlapping returns the indexed prefixes that overlap p (possibly with
// repeats), for subtractPrefixes.
func (x *prefixIndex) overlapping(p netip.Prefix) []netip.Prefix {
	p = p.Masked()
	var out []netip.Prefix
	f := family(p)
	for b := 0; b < p.Bits(); b++ {
		if x.lens[f][b] {
			if a := netip.PrefixFrom(p.Addr(), b).Masked(); a.IsValid() {
				if _, ok := x.set[a]; ok {
					out = append(out, a)
				}
			}
		}
	}
	r := prefixRange(p)
	for i := sort.Search(len(x.sorted), func(i int) bool { return !x.sorted[i].Addr().Less(r.from) }); i < len(x.sorted) && !r.to.Less(x.sorted[i].Addr()); i++ {
		out = append(out, x.sorted[i])
	}
	return out
}
