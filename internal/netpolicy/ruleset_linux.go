package netpolicy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Chain names inside the table.
const (
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPostrouting = "postrouting"
	chainInput       = "input"
)

// ruleset is the whole desired table: sets, then chains with their rules.
// Each rule carries its nft-syntax text as a comment, so the live table can
// be listed and compared with what Apply would write.
type ruleset struct {
	table  *nftables.Table
	sets   []rsSet
	chains []rsChain
}

type rsSet struct {
	set    *nftables.Set
	ranges []addrRange
}

type rsChain struct {
	chain *nftables.Chain
	rules []rsRule
}

type rsRule struct {
	text  string
	exprs []expr.Any
}

// part is a fragment of a rule: its text and the expressions it compiles to.
type part struct {
	text  string
	exprs []expr.Any
}

func rule(parts ...part) rsRule {
	var r rsRule
	var texts []string
	for _, p := range parts {
		texts = append(texts, p.text)
		r.exprs = append(r.exprs, p.exprs...)
	}
	r.text = strings.Join(texts, " ")
	return r
}

// noted appends a note for people reading `nft list` or `firewall check`.
func noted(r rsRule, note string) rsRule {
	r.text += " # " + note
	return r
}

func u32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }
func be16(v int) []byte   { return binaryutil.BigEndian.PutUint16(uint16(v)) }

// ifname pads an interface name as the kernel compares it (IFNAMSIZ).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func markIs(mask, val uint32) part {
	return part{fmt.Sprintf("meta mark & %#x == %#x", mask, val), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(mask), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: u32(val)},
	}}
}

// setMark replaces the bits under mask with force, keeping the others.
func setMark(mask, force uint32) part {
	return part{fmt.Sprintf("meta mark set meta mark & %#x | %#x", ^mask, force), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(^mask), Xor: u32(force)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}}
}

func ifIs(key expr.MetaKey, word, name string) part {
	return part{fmt.Sprintf("%s %s", word, name), []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}}
}

func oif(name string) part { return ifIs(expr.MetaKeyOIFNAME, "oifname", name) }
func iif(name string) part { return ifIs(expr.MetaKeyIIFNAME, "iifname", name) }

// addrIn matches the source or destination address against a named set;
// the nfproto check keeps IPv4 offsets off IPv6 packets in the inet table.
func addrIn(v6, dst bool, set string) part {
	proto, fam, off, n := "ip", byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		proto, fam, off, n = "ip6", unix.NFPROTO_IPV6, 8, 16
	}
	dir := "saddr"
	if dst {
		dir = "daddr"
		off += n
	}
	return part{fmt.Sprintf("%s %s @%s", proto, dir, set), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}}
}

var protoNumbers = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP, "icmpv6": unix.IPPROTO_ICMPV6}

func l4(proto string) part {
	word := proto
	if proto == "icmpv6" {
		word = "ipv6-icmp"
	}
	return part{"meta l4proto " + word, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumbers[proto]}},
	}}
}

// dport matches the transport destination port (tcp or udp), one or a range.
func dport(lo, hi int) part {
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	if lo == hi {
		return part{fmt.Sprintf("th dport %d", lo), []expr.Any{load, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(lo)}}}
	}
	return part{fmt.Sprintf("th dport %d-%d", lo, hi), []expr.Any{load, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(lo), ToData: be16(hi)}}}
}

// icmp6Types matches an ICMPv6 type range.
func icmp6Types(lo, hi int) part {
	return part{fmt.Sprintf("icmpv6 type %d-%d", lo, hi), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{byte(lo)}, ToData: []byte{byte(hi)}},
	}}
}

func ctState(bits uint32, text string) part {
	return part{"ct state " + text, []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(bits), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)},
	}}
}

// mssClamp lowers the MSS option of TCP SYNs (RST clear) above mss to mss.
func mssClamp(mss int) part {
	return part{fmt.Sprintf("tcp flags & (syn | rst) == syn tcp option maxseg size > %d tcp option maxseg size set %d", mss, mss), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, DestRegister: 1, Type: 2, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: be16(mss)},
		&expr.Immediate{Register: 1, Data: be16(mss)},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, SourceRegister: 1, Type: 2, Offset: 2, Len: 2},
	}}
}

// selfPMTU drops the "fragmentation needed" / "packet too big" error the
// kernel sends itself when a local packet, rerouted into the mesh by its
// mark, is larger than the mesh MTU with DF set. Left alone, that error
// records a path MTU of the mesh MTU for the member's underlay address in
// the main table, which WireGuard's own UDP to that member also uses: its
// full-size packets (mesh MTU + overhead) then fail with EMSGSIZE until
// the entry expires, ten minutes of broken mesh to that member. TCP never
// gets here (its MSS is clamped); a local DF sender over the mesh MTU loses
// that packet instead.
func selfPMTU(v6 bool) rsRule {
	p := part{"icmp type 3 code 4 @th,192,32 @routed4", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{3, 4}},
		// The quoted packet's destination: ICMP header (8) + IPv4 daddr (16).
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 24, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: "routed4"},
	}}
	if v6 {
		p = part{"icmpv6 type 2 @th,256,128 @routed6", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2}},
			// ICMPv6 header (8) + IPv6 daddr (24).
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 32, Len: 16},
			&expr.Lookup{SourceRegister: 1, SetName: "routed6"},
		}}
	}
	return noted(rule(p, counter, drop), "own PMTU error for a member: keeps WireGuard's path MTU")
}

var (
	counter = part{"counter", []expr.Any{&expr.Counter{}}}
	accept  = part{"accept", []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
	drop    = part{"drop", []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}}
)

func verdict(ok bool) part {
	if ok {
		return accept
	}
	return drop
}

// buildRuleset computes the desired table from a validated State.
func buildRuleset(s State, table string) (*ruleset, error) {
	fw, err := firewallRules(s.Firewall)
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	rs := &ruleset{table: t}
	addSet := func(name string, v6 bool, ranges []addrRange) {
		kt := nftables.TypeIPAddr
		if v6 {
			kt = nftables.TypeIP6Addr
		}
		rs.sets = append(rs.sets, rsSet{set: &nftables.Set{Table: t, Name: name, KeyType: kt, Interval: true}, ranges: ranges})
	}
	addSet("routed4", false, s.marked(false))
	addSet("routed6", true, s.marked(true))

	r := s.Routing
	mss4, mss6 := MSS(s.MTU)
	wgOwn := noted(rule(markIs(r.MarkMask, r.FirewallMark), accept), "WireGuard's own UDP")
	toMesh := func(v6 bool, mss int) []rsRule {
		set := "routed4"
		if v6 {
			set = "routed6"
		}
		return []rsRule{
			rule(addrIn(v6, true, set), mssClamp(mss)),
			rule(addrIn(v6, true, set), setMark(r.MarkMask, r.ForceMark), accept),
		}
	}
	marking := append(toMesh(false, mss4), toMesh(true, mss6)...)

	rs.chains = append(rs.chains,
		rsChain{
			chain: &nftables.Chain{Name: chainPrerouting, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: policy(true)},
			rules: append([]rsRule{wgOwn}, marking...),
		},
		rsChain{
			chain: &nftables.Chain{Name: chainOutput, Table: t, Type: nftables.ChainTypeRoute,
				Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: policy(true)},
			rules: append([]rsRule{wgOwn, selfPMTU(false), selfPMTU(true), rule(oif("lo"), accept)}, marking...),
		},
		// Belt and braces for fail-closed: whatever routing does (mesh link
		// gone, table 180 flushed), plaintext to a member never leaves on
		// another interface. Only WireGuard's own marked UDP may.
		rsChain{
			chain: &nftables.Chain{Name: chainPostrouting, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityFilter, Policy: policy(true)},
			rules: []rsRule{
				wgOwn,
				rule(oif(s.Interface), accept),
				rule(oif("lo"), accept),
				rule(addrIn(false, true, "routed4"), counter, drop),
				rule(addrIn(true, true, "routed6"), counter, drop),
			},
		},
	)

	if s.Firewall.DefaultAction != "" {
		in := rsChain{chain: &nftables.Chain{Name: chainInput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: policy(s.Firewall.DefaultAction == "accept")}}
		in.rules = append(in.rules,
			rule(iif("lo"), accept),
			rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related"), accept),
			// Packets that come out of the mesh link were decrypted with a
			// member's key: they are from authenticated members.
			noted(rule(iif(s.Interface), accept), "authenticated members"),
			noted(rule(l4("udp"), dport(s.ListenPort, s.ListenPort), accept), "WireGuard"),
		)
		if s.RelayPort != 0 {
			in.rules = append(in.rules, noted(rule(l4("udp"), dport(s.RelayPort, s.RelayPort), accept), "relay"))
		}
		// Neighbour discovery and the ICMPv6 errors IPv6 cannot work without
		// (RFC 4890): destination unreachable, packet too big, time exceeded,
		// parameter problem; router/neighbour solicitation and advertisement.
		in.rules = append(in.rules,
			noted(rule(icmp6Types(1, 4), accept), "IPv6 errors"),
			noted(rule(icmp6Types(133, 136), accept), "neighbour discovery"))
		for _, f := range fw {
			in.rules = append(in.rules, userRules(f, addSet)...)
		}
		rs.chains = append(rs.chains, in)
	}
	return rs, nil
}

// userRules compiles one config firewall rule: one nftables rule per source
// family, or one for any source.
func userRules(f fwRule, addSet func(string, bool, []addrRange)) []rsRule {
	match := func(extra ...part) rsRule {
		ps := append(extra, l4(f.proto))
		if f.lo != 0 {
			ps = append(ps, dport(f.lo, f.hi))
		}
		ps = append(ps, verdict(f.accept))
		return noted(rule(ps...), fmt.Sprintf("firewall.rules[%d]%s", f.index, nameSuffix(f.name)))
	}
	if f.anySource {
		return []rsRule{match()}
	}
	var out []rsRule
	if len(f.src4) > 0 {
		name := fmt.Sprintf("fw%d_src4", f.index)
		addSet(name, false, f.src4)
		out = append(out, match(addrIn(false, false, name)))
	}
	if len(f.src6) > 0 {
		name := fmt.Sprintf("fw%d_src6", f.index)
		addSet(name, true, f.src6)
		out = append(out, match(addrIn(true, false, name)))
	}
	return out
}

func nameSuffix(n string) string {
	if n == "" {
		return ""
	}
	if len(n) > 64 {
		n = n[:64]
	}
	return " " + strings.ReplaceAll(n, `"`, "'")
}

func policy(acceptAll bool) *nftables.ChainPolicy {
	p := nftables.ChainPolicyDrop
	if acceptAll {
		p = nftables.ChainPolicyAccept
	}
	return &p
}

// elements encodes ranges as interval set elements: a start key, and an
// end key one past the range unless the range ends at the top address.
func elements(rs []addrRange) []nftables.SetElement {
	var out []nftables.SetElement
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.from.AsSlice()})
		if next := r.to.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// rangesFromElements decodes a live interval set back into ranges.
func rangesFromElements(els []nftables.SetElement) []addrRange {
	type edge struct {
		a   netip.Addr
		end bool
	}
	var edges []edge
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		edges = append(edges, edge{a, e.IntervalEnd})
	}
	// Ascending; at equal keys an end closes the previous range first.
	slices.SortFunc(edges, func(x, y edge) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		if x.end == y.end {
			return 0
		}
		if x.end {
			return -1
		}
		return 1
	})
	var out []addrRange
	for i := 0; i < len(edges); i++ {
		if edges[i].end {
			continue // a leading end marker (older nft writes one at 0)
		}
		from := edges[i].a
		to := maxAddr(from)
		if i+1 < len(edges) && edges[i+1].end {
			to = edges[i+1].a.Prev()
			i++
		}
		out = append(out, addrRange{from, to})
	}
	return out
}

func maxAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
}
