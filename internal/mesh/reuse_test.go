package mesh

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// StepInto reuses the caller's map and the tracker its last order: a peer
// replaced by another (the same count) is forgotten, the new one starts
// fresh, and the verdicts hold this Step's peers only.
func TestTrackerForgetsReplacedPeers(t *testing.T) {
	a, b, c := testKey(t), testKey(t), testKey(t)
	tr := NewTracker(testHealth, testKey(t))
	now := time.Unix(1700000000, 0)
	ep := func(s string) []netip.AddrPort { return []netip.AddrPort{netip.MustParseAddrPort(s)} }
	out := tr.StepInto(make(map[wgtypes.Key]Status), now, []Peer{{PublicKey: a, Endpoints: ep("192.0.2.1:1")}, {PublicKey: b, Endpoints: ep("192.0.2.2:1")}}, nil)
	out = tr.StepInto(out, now.Add(time.Second), []Peer{{PublicKey: c, Endpoints: ep("192.0.2.3:1")}, {PublicKey: a, Endpoints: ep("192.0.2.1:1")}}, nil)
	if _, ok := out[b]; ok || len(out) != 2 {
		t.Errorf("verdicts %v: want a and c only", out)
	}
	if _, ok := tr.peers[b]; ok || len(tr.peers) != 2 {
		t.Errorf("tracker keeps %d peers: want a and c", len(tr.peers))
	}
	if got := tr.peers[c].firstSeen; !got.Equal(now.Add(time.Second)) {
		t.Errorf("new peer first seen %v, want the second Step", got)
	}
}

// The served order is the full sort's at every Step, and the shortcut
// (sort the changed, merge with the unchanged) finds it without the
// fallback: endpoints set (setAt moves), peers replaced and added.
func TestTrackerOrderShortcut(t *testing.T) {
	tr := NewTracker(testHealth, testKey(t))
	var peers []Peer
	for i := range 40 {
		peers = append(peers, Peer{PublicKey: testKey(t), AffiliateID: map[bool]string{true: "a"}[i%3 != 0],
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1), netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 1)}})
	}
	start := time.Unix(1700000000, 0)
	out := map[wgtypes.Key]Status{}
	for step := range 120 {
		now := start.Add(time.Duration(step) * 500 * time.Millisecond)
		switch step {
		case 30: // one replaced
			peers[7] = Peer{PublicKey: testKey(t), Endpoints: peers[7].Endpoints}
		case 60: // one added
			peers = append(peers, Peer{PublicKey: testKey(t), AffiliateID: "b", Endpoints: peers[3].Endpoints})
		case 90: // one became static (discovered changes)
			peers[5].AffiliateID = ""
		}
		tr.StepInto(out, now, peers, nil)
		if len(tr.keys) != len(peers) {
			t.Fatalf("step %d: %d keys for %d peers", step, len(tr.keys), len(peers))
		}
		if !slices.IsSortedFunc(tr.keys, compareTrackerKeys) {
			t.Fatalf("step %d: served out of order", step)
		}
	}
	if tr.resorts != 0 {
		t.Errorf("the shortcut's order was wrong %d times (a key's change not noticed)", tr.resorts)
	}
}

// A Builder reused across peer sets (contested addresses, endpoints two
// members list, networks cut around others' addresses) answers each as a
// fresh one does: nothing of one call leaks into the next.
func TestBuilderReuse(t *testing.T) {
	var keys []wgtypes.Key
	for range 4 {
		keys = append(keys, testKey(t))
	}
	self := testKey(t)
	var b Builder
	// An endpoint WireGuard saw one member at, then listed by another
	// alone: the second set must not remember the first one's claim.
	ep := netip.MustParseAddrPort("198.51.100.7:51820")
	mesh := func(i byte) netip.Addr {
		a := trustPrefix.Addr().As16()
		a[15] = i
		return netip.AddrFrom16(a)
	}
	first := Input{Self: self, Prefix: trustPrefix, Own: victimOwn,
		Affiliates: []*Affiliate{{ID: "a", PublicKey: keys[0].String(), Address: mesh(1)}, {ID: "b", PublicKey: keys[1].String(), Address: mesh(2)}},
		Observed:   map[wgtypes.Key][]netip.AddrPort{keys[1]: {ep}}}
	second := Input{Self: self, Prefix: trustPrefix, Own: victimOwn,
		Affiliates: []*Affiliate{{ID: "a", PublicKey: keys[0].String(), Address: mesh(1), Endpoints: []netip.AddrPort{ep}}, {ID: "b", PublicKey: keys[1].String(), Address: mesh(2)}}}
	b.Build(first)
	if want, got := Build(second), b.Build(second); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a set where %s was another's: a reused Builder answered\n%+v\na fresh one\n%+v", ep, got, want)
	}
	// An address one member routed, then two list as their endpoints'
	// address (behind one NAT): contested, but routed to nobody now.
	nat := netip.MustParseAddr("203.0.113.5")
	routed := Input{Self: self, Prefix: trustPrefix, Own: victimOwn,
		Affiliates: []*Affiliate{{ID: "a", PublicKey: keys[0].String(), Address: mesh(1), Addresses: []netip.Addr{nat}}}}
	shared := Input{Self: self, Prefix: trustPrefix, Own: victimOwn,
		Affiliates: []*Affiliate{{ID: "a", PublicKey: keys[0].String(), Address: mesh(1), Endpoints: []netip.AddrPort{netip.AddrPortFrom(nat, 1)}},
			{ID: "b", PublicKey: keys[1].String(), Address: mesh(2), Endpoints: []netip.AddrPort{netip.AddrPortFrom(nat, 2)}}}}
	b.Build(routed)
	if want, got := Build(shared), b.Build(shared); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a set where %s was routed: a reused Builder answered\n%+v\na fresh one\n%+v", nat, got, want)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		data := make([]byte, 40+rng.IntN(80))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		in := fuzzInput(data, keys, self)
		if want, got := Build(in), b.Build(in); !reflect.DeepEqual(got, want) {
			t.Fatalf("input %d: a reused Builder answered\n%+v\na fresh one\n%+v", i, got, want)
		}
	}
}
