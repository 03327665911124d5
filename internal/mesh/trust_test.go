package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// The attacks of issue 15 (a member holding the cluster secret, or one with
// a typo in its config), replayed against the pure logic.

var trustPrefix = netip.MustParsePrefix("fd7f:175a:b97c:5602::/64")

// victimOwn: this node's underlay and mesh addresses.
var victimOwn = addrs("192.0.2.10", "2001:db8::10", "fd7f:175a:b97c:5602::10")

func honest(t *testing.T) (wgtypes.Key, Affiliate) {
	k := testKey(t)
	return k, Affiliate{
		ID: "zz-honest", NodeName: "honest", PublicKey: k.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::b"),
		Addresses: addrs("192.0.2.11"), Networks: prefixes("10.244.1.0/24"),
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:51820"), netip.MustParseAddrPort("203.0.113.11:51820")},
	}
}

func peerByName(peers []Peer, name string) *Peer {
	for i := range peers {
		if peers[i].Name == name {
			return &peers[i]
		}
	}
	return nil
}

// covers reports whether some prefix of list contains a.
func covers(list []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(list, func(p netip.Prefix) bool { return p.Contains(a) })
}

// TestAttackAdvertisedDefaultRoute: an affiliate that sorts first ("0")
// advertises default routes, halves of the address space, a range over the
// mesh prefix, this node's own subnet and another member's addresses. None
// of it may reach its AllowedIPs, and the honest member keeps its own.
func TestAttackAdvertisedDefaultRoute(t *testing.T) {
	hk, h := honest(t)
	ak := testKey(t)
	attacker := Affiliate{
		ID: "0", NodeName: "evil", PublicKey: ak.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::e"),
		Networks: prefixes("0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/1", "fd7f:175a:b97c::/48",
			"fd7f:175a:b97c:5602::b/128", "192.0.2.0/24", "192.0.2.11/32", "203.0.113.11/32", "127.0.0.0/8",
			"169.254.169.254/32", "224.0.0.0/4", "2000::/3", "10.244.1.0/25"),
		Addresses: addrs("192.0.2.11", "192.0.2.10", "fd7f:175a:b97c:5602::b"),
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.66:51820")},
	}
	for _, order := range [][]*Affiliate{{ref(attacker), ref(h)}, {ref(h), ref(attacker)}} {
		// The honest member is up: WireGuard saw it at its underlay address.
		live := map[wgtypes.Key][]netip.AddrPort{hk: {netip.MustParseAddrPort("192.0.2.11:51820")}}
		res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: order, Observed: live})
		evil, good := peerByName(res.Peers, "evil"), peerByName(res.Peers, "honest")
		if evil == nil || good == nil {
			t.Fatalf("peers = %+v; want evil and honest", res.Peers)
		}
		for _, dst := range addrs("8.8.8.8", "198.51.100.1", "192.0.2.10", "192.0.2.11", "192.0.2.12", "203.0.113.11",
			"2001:db8::10", "2001:4860::8888", "fd7f:175a:b97c:5602::b", "fd7f:175a:b97c:5602::10", "fd7f:175a:b97c:5603::1",
			"127.0.0.1", "169.254.169.254", "224.0.0.5", "10.244.1.1") {
			if covers(evil.AllowedIPs, dst) {
				t.Errorf("the attacker's AllowedIPs %v take %s", evil.AllowedIPs, dst)
			}
		}
		// The half of its network the attacker also claims goes to neither.
		for _, dst := range addrs("fd7f:175a:b97c:5602::b", "192.0.2.11", "10.244.1.200") {
			if !covers(good.AllowedIPs, dst) {
				t.Errorf("honest member's AllowedIPs %v lost %s", good.AllowedIPs, dst)
			}
		}
		if !covers(evil.AllowedIPs, netip.MustParseAddr("fd7f:175a:b97c:5602::e")) {
			t.Errorf("the attacker lost its own mesh address: %v", evil.AllowedIPs)
		}
		reasons := map[string]bool{}
		for _, r := range res.Refused {
			if r.Peer != "evil" {
				t.Errorf("refused %+v from the honest member", r)
			}
			reasons[r.Prefix.String()] = true
		}
		for _, p := range []string{"0.0.0.0/0", "::/0", "0.0.0.0/1", "fd7f:175a:b97c::/48", "192.0.2.0/24", "2000::/3"} {
			if !reasons[p] {
				t.Errorf("refusal of %s not reported; refused: %+v", p, res.Refused)
			}
		}
	}
}

// TestAttackMeshAddressClaimed: an attacker that sorts first claims the
// honest member's mesh address as its own. The honest member's mesh address
// must not go to the attacker, in either order.
func TestAttackMeshAddressClaimed(t *testing.T) {
	_, h := honest(t)
	ak := testKey(t)
	attacker := Affiliate{ID: "0", NodeName: "evil", PublicKey: ak.String(), Address: h.Address}
	for _, order := range [][]*Affiliate{{ref(attacker), ref(h)}, {ref(h), ref(attacker)}} {
		res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: order})
		if evil := peerByName(res.Peers, "evil"); evil != nil && covers(evil.AllowedIPs, h.Address) {
			t.Errorf("order %s,%s: attacker holds %s: %v", order[0].ID, order[1].ID, h.Address, evil.AllowedIPs)
		}
	}
	// A static peer is the operator's word: it keeps its address.
	_, h2 := honest(t)
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: []*Affiliate{ref(attacker)},
		Static: staticOf(h2)})
	if s := peerByName(res.Peers, "honest"); s == nil || !covers(s.AllowedIPs, h2.Address) {
		t.Errorf("static peer lost its mesh address to an affiliate: %+v", res.Peers)
	}
}

func staticOf(a Affiliate) []config.StaticPeer {
	return []config.StaticPeer{{Name: a.NodeName, PublicKey: a.PublicKey, Address: a.Address.String()}}
}

// TestApprovedWideRoute: an exit node approved for 0.0.0.0/0 gets it, minus
// this node's and other members' addresses and special ranges; the same
// advert from a peer not approved is refused.
func TestApprovedWideRoute(t *testing.T) {
	_, h := honest(t)
	ek := testKey(t)
	exit := Affiliate{ID: "0", NodeName: "exit", PublicKey: ek.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::e"),
		Networks: prefixes("0.0.0.0/0", "::/0")}
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: []*Affiliate{ref(exit), ref(h)},
		Approved: []ApprovedRoute{{PublicKey: ek, Networks: prefixes("0.0.0.0/0")}}})
	e := peerByName(res.Peers, "exit")
	for _, dst := range addrs("8.8.8.8", "198.51.100.1", "10.244.2.1") {
		if !covers(e.AllowedIPs, dst) {
			t.Errorf("approved exit node does not route %s: %v", dst, e.AllowedIPs)
		}
	}
	for _, dst := range addrs("192.0.2.10", "192.0.2.11", "203.0.113.11", "10.244.1.1", "127.0.0.1", "169.254.169.254", "2001:4860::8888") {
		if covers(e.AllowedIPs, dst) {
			t.Errorf("approved exit node takes %s: %v", dst, e.AllowedIPs)
		}
	}
	if len(res.Refused) != 1 || res.Refused[0].Prefix != netip.MustParsePrefix("::/0") {
		t.Errorf("refused = %+v; want ::/0 only (not approved)", res.Refused)
	}
}

// TestAttackUnusableEndpoints: endpoints that would turn this node into a
// reflector (at itself, at broadcast, at the mesh) are dropped.
func TestAttackUnusableEndpoints(t *testing.T) {
	k := testKey(t)
	bad := []string{"127.0.0.1:51820", "[::1]:51820", "0.0.0.0:51820", "[::]:51820", "224.0.0.1:51820", "[ff02::1]:51820",
		"255.255.255.255:51820", "240.0.0.1:51820", "192.0.2.10:51820", "[2001:db8::10]:51820", "[fd7f:175a:b97c:5602::7]:51820",
		"[fe80::1]:51820", "169.254.1.1:51820", "192.0.2.12:0", "[::ffff:127.0.0.1]:51820", "0.1.2.3:51820"}
	var eps []netip.AddrPort
	for _, s := range bad {
		eps = append(eps, netip.MustParseAddrPort(s))
	}
	good := netip.MustParseAddrPort("192.0.2.12:51820")
	eps = append(eps, good)
	eps = append(eps, netip.MustParseAddrPort("192.0.2.255:51820"), netip.MustParseAddrPort("192.0.2.0:51820"))
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, OwnNets: prefixes("192.0.2.10/24", "2001:db8::10/64"),
		Affiliates: []*Affiliate{{ID: "a", NodeName: "a", PublicKey: k.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::a"), Endpoints: eps}}})
	if got := res.Peers[0].Endpoints; !slices.Equal(got, []netip.AddrPort{good}) {
		t.Errorf("candidates = %v; want only %v", got, good)
	}
}

// TestAttackManyEndpoints: 64 endpoints per affiliate are cut to
// MaxCandidates; the peerEndpoints filter applies.
func TestAttackManyEndpoints(t *testing.T) {
	k := testKey(t)
	var eps []netip.AddrPort
	for i := range 64 {
		eps = append(eps, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 51820))
	}
	eps = append(eps, netip.MustParseAddrPort("192.0.2.12:51820"))
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn,
		Affiliates: []*Affiliate{{ID: "a", NodeName: "a", PublicKey: k.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::a"), Endpoints: eps}}})
	if n := len(res.Peers[0].Endpoints); n != MaxCandidates {
		t.Errorf("%d candidates; want the first %d", n, MaxCandidates)
	}
	f, _ := ParseFilter([]string{"192.0.2.0/24"})
	res = Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Filter: f,
		Affiliates: []*Affiliate{{ID: "a", NodeName: "a", PublicKey: k.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::a"), Endpoints: eps}}})
	if got := res.Peers[0].Endpoints; !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.12:51820")}) {
		t.Errorf("candidates with peerEndpoints [192.0.2.0/24] = %v", got)
	}
}

// TestAttackCrowdedEndpoints: other members report (as "observed") many
// endpoints for an honest peer, ahead of its own: the ones at the peer's
// own addresses, which only its sealed data names, are still candidates,
// and first.
func TestAttackCrowdedEndpoints(t *testing.T) {
	k, h := honest(t)
	var junk []netip.AddrPort
	for i := range 63 {
		junk = append(junk, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), 51820))
	}
	own := h.Endpoints[0] // 192.0.2.11:51820, at its routed address
	h.Endpoints = append(junk, h.Endpoints...)
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: []*Affiliate{ref(h)}})
	p := peerByName(res.Peers, "honest")
	if p == nil || p.PublicKey != k || len(p.Endpoints) != MaxCandidates || p.Endpoints[0] != own {
		t.Fatalf("candidates %v; want %d with %s first", p.Endpoints, MaxCandidates, own)
	}
	if !slices.Equal(p.Endpoints[1:], junk[:MaxCandidates-1]) {
		t.Errorf("after its own: %v; want the others in the peer's order", p.Endpoints[1:])
	}
}

// TestAttackProbeRate: 100 hostile peers with 8 dead candidates each cannot
// make the tracker set endpoints (each one a WireGuard handshake) faster
// than the budget, and a real peer that appears among them still gets its
// first endpoint within seconds.
func TestAttackProbeRate(t *testing.T) {
	tr := NewTracker(testHealth, testKey(t))
	var peers []Peer
	for i := range 100 {
		p := Peer{PublicKey: testKey(t), Name: fmt.Sprintf("evil-%d", i)}
		for j := range MaxCandidates {
			p.Endpoints = append(p.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + j)}), uint16(1000+i)))
		}
		peers = append(peers, p)
	}
	start := time.Unix(1_700_000_000, 0)
	sets := 0
	real := Peer{PublicKey: testKey(t), Name: "real", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:51820")}}
	realAt, realSet := time.Duration(0), false
	const span = 60 * time.Second
	for d := time.Duration(0); d <= span; d += 250 * time.Millisecond {
		ps := peers
		if d >= 30*time.Second {
			ps = append(slices.Clone(peers), real)
		}
		for k, st := range tr.Step(start.Add(d), ps, nil) {
			if st.SetEndpoint.IsValid() {
				sets++
				if k == real.PublicKey && !realSet {
					realAt, realSet = d-30*time.Second, true
				}
			}
		}
	}
	if limit := int(ProbeRate*span.Seconds()) + ProbeBurst; sets > limit {
		t.Errorf("%d endpoint sets in %s; want at most %d (%d/s + burst %d)", sets, span, limit, ProbeRate, ProbeBurst)
	}
	if !realSet || realAt > 2*time.Second {
		t.Errorf("real peer got its first endpoint %s after it appeared; want within 2 s", realAt)
	}
}

// TestAttackOthersEndpoint: a hostile affiliate lists an honest member's
// live WireGuard endpoint as its own. This node must not send handshakes
// for the hostile key there: enough of them and the honest member's
// WireGuard rate-limits this node's real handshakes (its peer flapped in
// tests/trust). Two members behind one NAT (same address, other ports)
// keep their endpoints.
func TestAttackOthersEndpoint(t *testing.T) {
	hk, h := honest(t)
	live := netip.MustParseAddrPort("192.0.2.11:51820")
	ak := testKey(t)
	attacker := Affiliate{ID: "0", NodeName: "evil", PublicKey: ak.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::e"),
		Endpoints: []netip.AddrPort{live, netip.MustParseAddrPort("203.0.113.11:51820"), netip.MustParseAddrPort("192.0.2.66:51820")}}
	nk := testKey(t)
	natted := Affiliate{ID: "n", NodeName: "natted", PublicKey: nk.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::c"),
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.11:40002")}}
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: []*Affiliate{ref(attacker), ref(h), ref(natted)},
		Observed: map[wgtypes.Key][]netip.AddrPort{hk: {live}}})
	// 203.0.113.11:51820 both advertise and nothing tells them apart: kept.
	want := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.11:51820"), netip.MustParseAddrPort("192.0.2.66:51820")}
	if got := peerByName(res.Peers, "evil").Endpoints; !slices.Equal(got, want) {
		t.Errorf("attacker's candidates = %v; want %v, without the honest member's live %s", got, want, live)
	}
	if got := peerByName(res.Peers, "honest").Endpoints; !slices.Contains(got, live) {
		t.Errorf("honest member's candidates = %v; want its live %s", got, live)
	}
	if got := peerByName(res.Peers, "natted").Endpoints; len(got) != 1 {
		t.Errorf("member behind the same NAT lost its endpoint: %v", got)
	}
}

// TestSharedEndpointIsNotUnreachable: addresses affiliates only list as
// endpoints (members behind one NAT share one; a hostile one may list any)
// are kept out of everybody's routes but never made unreachable: otherwise
// two affiliates listing this node's DNS server or gateway would cut it off.
func TestSharedEndpointIsNotUnreachable(t *testing.T) {
	dns := netip.MustParseAddrPort("192.0.2.53:53")
	var affs []*Affiliate
	for i := range 2 {
		affs = append(affs, &Affiliate{ID: fmt.Sprint(i), NodeName: fmt.Sprint("evil-", i), PublicKey: testKey(t).String(),
			Address:   netip.AddrFrom16([16]byte{0xfd, 0x7f, 0x17, 0x5a, 0xb9, 0x7c, 0x56, 0x02, 15: byte(0x20 + i)}),
			Endpoints: []netip.AddrPort{dns}, Networks: prefixes("10.9.0.0/24")})
	}
	affs[0].Addresses = addrs("198.51.100.7")
	affs[1].Addresses = addrs("198.51.100.7")
	res := Build(Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: affs})
	for _, c := range res.Contested {
		if c.Contains(dns.Addr()) {
			t.Errorf("contested (unreachable) %v holds %s, which is only an endpoint", res.Contested, dns.Addr())
		}
	}
	if !slices.Contains(res.Contested, netip.MustParsePrefix("198.51.100.7/32")) || !slices.Contains(res.Contested, netip.MustParsePrefix("10.9.0.0/24")) {
		t.Errorf("contested = %v; want the address and the network both claim as routed", res.Contested)
	}
}

// TestAttackNewPeerOrder: a node starting among 100 hostile affiliates,
// all new, serves them in an order the affiliates cannot choose (IDs that
// sort first do not go first), static peers first.
func TestAttackNewPeerOrder(t *testing.T) {
	var peers []Peer
	for i := range 100 {
		peers = append(peers, Peer{PublicKey: testKey(t), AffiliateID: fmt.Sprintf("0%03d", i),
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 200}), uint16(1000+i))}})
	}
	real := Peer{PublicKey: testKey(t), AffiliateID: "zz-real", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:51820")}}
	static := Peer{PublicKey: testKey(t), Name: "static", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.12:51820")}}
	start := time.Unix(1_700_000_000, 0)
	served := 0
	for range 100 {
		tr := NewTracker(testHealth, testKey(t))
		got := tr.Step(start, append(slices.Clone(peers), real, static), nil)
		if !got[static.PublicKey].SetEndpoint.IsValid() {
			t.Fatal("a static peer was not among the first served")
		}
		if got[real.PublicKey].SetEndpoint.IsValid() {
			served++
		}
	}
	// The first pass serves the static peer and ProbeBurst-1 affiliates:
	// an honest one among 101 is in it about a fifth of the time (never
	// in 100 tries: 0.81^100, below 1e-9), never if IDs decided.
	if served == 0 {
		t.Errorf("the real affiliate was never in the first burst of 100 fresh trackers; the hostile IDs that sort first went first")
	}
}
