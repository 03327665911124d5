package drive

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
)

// recBind is a fakeBind that counts SetRelays and records what the
// driver tells its prober: a peer stepped gets its candidates set once per
// step, a peer forgotten gets none.
type recBind struct {
	*fakeBind
	setRelays int
	calls     map[wgtypes.Key]int              // SetCandidates per peer
	cands     map[wgtypes.Key][]netip.AddrPort // the last candidates set; absent once set to none
}

func (r *recBind) SetRelays(relays []relay.Target) {
	r.setRelays++
	r.fakeBind.SetRelays(relays)
}

func (r *recBind) SetCandidates(peer [32]byte, candidates []netip.AddrPort) {
	r.calls[peer]++
	if len(candidates) == 0 {
		delete(r.cands, peer)
		return
	}
	r.cands[peer] = candidates
}

// someChooser returns a chooser whose relays always answer (registered
// at now), having read remote's traversal data.
func someChooser(now time.Time, remote map[wgtypes.Key]discovery.Traversal) (*Chooser, *recBind) {
	rb := &recBind{fakeBind: &fakeBind{registered: now}, calls: map[wgtypes.Key]int{}, cands: map[wgtypes.Key][]netip.AddrPort{}}
	c := &Chooser{Driver: New(rb, natpath.Timing{}, time.Minute)}
	c.Traverse(now, remote)
	return c, rb
}

func somePeer(k wgtypes.Key, name string, eps ...string) mesh.Peer {
	p := mesh.Peer{PublicKey: k, Name: name}
	for _, e := range eps {
		p.Endpoints = append(p.Endpoints, netip.MustParseAddrPort(e))
	}
	return p
}

// TestChooseSome: ChooseSome of new peers, and of a known one whose
// candidates changed, gives each the Choice a Choose over everyone gives it
// at that moment (with the same history), using the relays the last Choose
// registered but leaving them alone; the other peers' choices and state
// stay as they were. Forget drops a peer everywhere, and the next Choose
// over everyone holds exactly its peers: those ChooseSome stepped and still
// listed, not those forgotten or gone unannounced.
func TestChooseSome(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rk, a, b := key(t), key(t), key(t)
	remote := map[wgtypes.Key]discovery.Traversal{rk: {RelayPort: 51821}}
	peers := []mesh.Peer{
		somePeer(rk, "r", "192.0.2.9:51820"),
		somePeer(a, "a", "192.0.2.10:51820"),
		somePeer(b, "b"), // advertises nothing: relayed
	}
	// c takes the change pass; ref, the same timeline, only Choose.
	c, rb := someChooser(t0, remote)
	ref, _ := someChooser(t0, remote)
	for _, ms := range []int{0, 1000} {
		c.Choose(at(ms), peers, nil)
		ref.Choose(at(ms), peers, nil)
	}

	n1, n2 := key(t), key(t)
	changed := []mesh.Peer{
		somePeer(n1, "n1"),                       // new, relayed via r at once
		somePeer(n2, "n2", "198.51.100.5:51820"), // new, tries its candidate
		somePeer(a, "a"),                         // its candidate withdrawn
	}
	before := maps.Clone(c.choices)
	rxBefore := maps.Clone(c.Driver.rx)
	calls := maps.Clone(rb.calls)
	got := c.ChooseSome(at(1300), changed, nil)
	want := ref.Choose(at(1300), append(slices.Clone(peers[:1]), peers[2], changed[0], changed[1], changed[2]), nil)
	for _, p := range changed {
		if got[p.PublicKey] != want[p.PublicKey] {
			t.Errorf("%s: ChooseSome %+v; Choose %+v", p.Name, got[p.PublicKey], want[p.PublicKey])
		}
		if rb.calls[p.PublicKey] != calls[p.PublicKey]+1 {
			t.Errorf("%s: candidates set %d times by ChooseSome, want once", p.Name, rb.calls[p.PublicKey]-calls[p.PublicKey])
		}
	}
	if g := got[n1]; g.Path != string(natpath.ModeRelayed) || g.Via != "r" || !g.SetEndpoint.IsValid() {
		t.Errorf("n1: %+v; want relayed via r (the last Choose's relay) at once", g)
	}
	if g := got[n2]; g.SetEndpoint != changed[1].Endpoints[0] {
		t.Errorf("n2: %+v; want its candidate set", g)
	}
	for _, k := range []wgtypes.Key{rk, b} {
		if got[k] != before[k] || c.Driver.rx[k] != rxBefore[k] || rb.calls[k] != calls[k] {
			t.Errorf("a peer ChooseSome was not given changed: %+v (was %+v), rx %+v (was %+v), %d candidate sets (were %d)",
				got[k], before[k], c.Driver.rx[k], rxBefore[k], rb.calls[k], calls[k])
		}
	}
	if len(got) != 5 || rb.setRelays != 2 {
		t.Errorf("%d choices, SetRelays called %d times; want 5 choices, SetRelays only by the two Choose", len(got), rb.setRelays)
	}

	// b and n2 leave, announced; n3 joins and leaves before the next
	// Choose, unannounced.
	c.Forget([]wgtypes.Key{b, n2})
	for _, k := range []wgtypes.Key{b, n2} {
		_, inChoices := c.choices[k]
		_, inStatus := c.status[k]
		_, inRx := c.Driver.rx[k]
		_, probed := rb.cands[k]
		if inChoices || inStatus || inRx || probed {
			t.Errorf("forgotten peer kept: choice %v, status %v, rx %v, probed %v", inChoices, inStatus, inRx, probed)
		}
	}
	if n := c.Driver.table.Len(); n != 3 || len(c.Driver.rx) != 3 || len(c.choices) != 3 {
		t.Errorf("after Forget: %d paths, %d rx entries, %d choices; want 3 (r, a, n1)", n, len(c.Driver.rx), len(c.choices))
	}
	n3 := key(t)
	c.ChooseSome(at(1600), []mesh.Peer{somePeer(n3, "n3", "203.0.113.3:51820")}, nil)

	listed := []mesh.Peer{peers[0], changed[2], changed[0]} // r, a, n1
	calls = maps.Clone(rb.calls)
	got = c.Choose(at(2000), listed, nil)
	want = ref.Choose(at(2000), listed, nil)
	if len(got) != 3 || len(c.status) != 3 || len(c.Driver.rx) != 3 || c.Driver.table.Len() != 3 {
		t.Fatalf("Choose after ChooseSome and Forget: %d choices, %d statuses, %d rx entries, %d paths; want 3 (r, a, n1)",
			len(got), len(c.status), len(c.Driver.rx), c.Driver.table.Len())
	}
	if _, probed := rb.cands[n3]; probed {
		t.Error("n3, gone unannounced, still probed after Choose")
	}
	// a and n1 were stepped at the same times by both (ChooseSome in
	// place of Choose); r was not (ChooseSome did not concern it).
	for _, p := range []mesh.Peer{changed[2], changed[0]} {
		if got[p.PublicKey] != want[p.PublicKey] {
			t.Errorf("%s after Choose: %+v; with Choose only %+v", p.Name, got[p.PublicKey], want[p.PublicKey])
		}
	}
	for _, p := range listed {
		if rb.calls[p.PublicKey] != calls[p.PublicKey]+1 {
			t.Errorf("%s: stepped %d times by Choose, want once", p.Name, rb.calls[p.PublicKey]-calls[p.PublicKey])
		}
	}

	// Listed twice right after a ChooseSome of it: the first entry counts.
	c.ChooseSome(at(2500), []mesh.Peer{somePeer(n1, "n1")}, nil)
	calls = maps.Clone(rb.calls)
	c.Choose(at(3000), append(listed, somePeer(n1, "n1", "198.51.100.9:51820")), nil)
	if rb.calls[n1] != calls[n1]+1 || rb.cands[n1] != nil {
		t.Errorf("n1 listed twice: stepped %d times with %v last; want once, with the first entry's (none)", rb.calls[n1]-calls[n1], rb.cands[n1])
	}
}

// Before any Choose, ChooseSome works with no relays (none registered
// yet), and touches none; the first Choose then registers them.
func TestChooseSomeBeforeChoose(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	rk, n := key(t), key(t)
	remote := map[wgtypes.Key]discovery.Traversal{rk: {RelayPort: 51821}}
	c, rb := someChooser(t0, remote)
	ref, _ := someChooser(t0, nil)
	p := somePeer(n, "n")
	got := c.ChooseSome(t0, []mesh.Peer{p}, nil)[n]
	if want := ref.Choose(t0, []mesh.Peer{p}, nil)[n]; got != want || got.Via != "" {
		t.Fatalf("ChooseSome before any Choose: %+v; want %+v (no relay)", got, want)
	}
	if rb.setRelays != 0 {
		t.Fatalf("ChooseSome set relays")
	}
	all := []mesh.Peer{somePeer(rk, "r", "192.0.2.9:51820"), p}
	c.Choose(t0.Add(time.Second), all, nil)
	if got := c.Choose(t0.Add(2*time.Second), all, nil)[n]; got.Path != string(natpath.ModeRelayed) || got.Via != "r" {
		t.Fatalf("after Choose: %+v; want relayed via r", got)
	}
}

// BenchmarkChooseSome: a change pass at a thousand peers (one peer's
// candidates changed) against the full Choose it spares.
func BenchmarkChooseSome(b *testing.B) {
	const n = 1000
	t0 := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	var peers []mesh.Peer
	remote := map[wgtypes.Key]discovery.Traversal{}
	obs := map[wgtypes.Key]mesh.Observation{}
	for i := range n {
		k := key(b)
		p := mesh.Peer{PublicKey: k, Name: "p", Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 51820)}}
		if i < 3 {
			remote[k] = discovery.Traversal{RelayPort: 51821}
		}
		peers = append(peers, p)
		obs[k] = mesh.Observation{Endpoint: p.Endpoints[0], LastHandshake: t0, RxBytes: 1000}
	}
	setup := func() *Chooser {
		c, _ := someChooser(t0, remote)
		c.Driver.fresh = 1 << 62 // the relays stay registered however long it runs
		c.Choose(t0, peers, obs)
		return c
	}
	b.Run("some=1", func(b *testing.B) {
		c := setup()
		one := []mesh.Peer{peers[n/2]}
		alt := [2][]netip.AddrPort{peers[n/2].Endpoints, {netip.MustParseAddrPort("203.0.113.1:51820")}}
		now := t0
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			now = now.Add(time.Millisecond)
			one[0].Endpoints = alt[i%2]
			c.ChooseSome(now, one, obs)
		}
	})
	b.Run("all=1000", func(b *testing.B) {
		c := setup()
		now := t0
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(time.Second)
			c.Choose(now, peers, obs)
		}
	})
}
