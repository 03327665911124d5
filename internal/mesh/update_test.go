package mesh

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// FuzzUpdate runs a Builder through a sequence of affiliate sets (members
// moving, joining, leaving, sharing endpoints and addresses, advertising
// networks, one key listed twice): every Update that answers must answer
// what a fresh Build does, and its Delta must name exactly the peers that
// came, went or differ.
func FuzzUpdate(f *testing.F) {
	f.Add([]byte("\x03\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("0123456789abcdef0123456789abcdef\x7f\x00\x00\x01\x00\x35\x00\xc0\x00\x02\x0b\x18"))
	keys := make([]wgtypes.Key, 8)
	for i := range keys {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			f.Fatal(err)
		}
		keys[i] = k.PublicKey()
	}
	self, _ := wgtypes.GeneratePrivateKey()
	f.Fuzz(func(t *testing.T, data []byte) {
		checkUpdates(t, data, keys, self.PublicKey())
	})
}

// updateMember is one affiliate of the sequence, drawn from r.
func updateMember(r *reader, id int, keys []wgtypes.Key) Affiliate {
	a := Affiliate{ID: fmt.Sprintf("m%02d", id), NodeName: fmt.Sprint("n", id), PublicKey: keys[int(r.byte())%len(keys)].String(), Address: r.meshAddr()}
	// Few distinct endpoints and addresses, so that members collide.
	for range r.byte() % 3 {
		a.Endpoints = append(a.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, r.byte() % 12}), 51820+uint16(r.byte()%2)))
	}
	switch r.byte() % 8 {
	case 0:
		a.Addresses = []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, r.byte() % 12})}
	case 1:
		a.Networks = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, 0}), 28+int(r.byte()%5)).Masked()}
	case 2:
		a.PublicKey = "" // a member not on the mesh
	}
	return a
}

// checkUpdates is FuzzUpdate's property for one input; it returns how
// many Updates answered.
func checkUpdates(t *testing.T, data []byte, keys []wgtypes.Key, self wgtypes.Key) (answered int) {
	r := &reader{b: data}
	var affs []*Affiliate
	for i := range 4 + int(r.byte()%6) {
		affs = append(affs, ref(updateMember(r, i*2, keys)))
	}
	in := Input{Self: self, Prefix: trustPrefix, Own: victimOwn, Affiliates: affs,
		Observed: map[wgtypes.Key][]netip.AddrPort{keys[int(r.byte())%len(keys)]: {netip.MustParseAddrPort("198.51.100.3:51820")}}}
	var b Builder
	prev := b.Build(in)
	for range 12 {
		next := slices.Clone(in.Affiliates)
		switch i := int(r.byte()) % (len(next) + 1); {
		case i == len(next) || r.byte()%4 == 0: // one joins, at an odd ID
			a := ref(updateMember(r, 2*int(r.byte()%16)+1, keys))
			at, found := slices.BinarySearchFunc(next, a.ID, func(x *Affiliate, id string) int { return strings.Compare(x.ID, id) })
			if !found {
				next = slices.Insert(next, at, a)
			}
		case r.byte()%3 == 0: // one leaves
			next = slices.Delete(next, i, i+1)
		default: // one changes
			next[i] = ref(updateMember(r, 0, keys))
			next[i].ID = in.Affiliates[i].ID
		}
		in.Affiliates = next
		got, d, ok := b.Update(in)
		want := Build(in)
		if !ok {
			b.Build(in)
			prev = want
			continue
		}
		answered++
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Update answered\n%+v\nBuild\n%+v\nfor %+v", got, want, in.Affiliates)
		}
		changed, removed := peerDelta(prev.Peers, want.Peers)
		if !sameKeys(d.Changed, changed) || !sameKeys(d.Removed, removed) {
			t.Fatalf("delta changed %v removed %v; the peers show changed %v removed %v", d.Changed, d.Removed, changed, removed)
		}
		prev = want
	}
	return answered
}

// peerDelta is what differs between two peer sets, by key.
func peerDelta(old, cur []Peer) (changed, removed []wgtypes.Key) {
	was := map[wgtypes.Key]*Peer{}
	for i := range old {
		was[old[i].PublicKey] = &old[i]
	}
	is := map[wgtypes.Key]bool{}
	for i := range cur {
		p := &cur[i]
		is[p.PublicKey] = true
		if q, ok := was[p.PublicKey]; !ok || !reflect.DeepEqual(*q, *p) {
			changed = append(changed, p.PublicKey)
		}
	}
	for k := range was {
		if !is[k] {
			removed = append(removed, k)
		}
	}
	return changed, removed
}

func sameKeys(a, b []wgtypes.Key) bool {
	cmp := func(x, y wgtypes.Key) int { return slices.Compare(x[:], y[:]) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// The seeds of FuzzUpdate and random sequences: Update answers for a good
// part of the changes (it is not a Build that always declines), and each
// answer is Build's.
func TestUpdateRandomSequences(t *testing.T) {
	keys := make([]wgtypes.Key, 8)
	for i := range keys {
		keys[i] = testKey(t)
	}
	self := testKey(t)
	rng := rand.New(rand.NewPCG(3, 4))
	answered := 0
	for range 2000 {
		data := make([]byte, 200)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		answered += checkUpdates(t, data, keys, self)
	}
	t.Logf("Update answered %d of 24,000 changes", answered)
	if answered < 2000 {
		t.Errorf("Update answered %d of 24,000 changes: it declines what it should take", answered)
	}
}

// At a thousand members, the changes a cluster sees every day — one
// member's endpoint moving, one joining, one leaving — are Updates; an
// endpoint another member lists, and networks, are a Build's.
func TestUpdateCommonChanges(t *testing.T) {
	in, _ := largeInput(t, 1000)
	var b Builder
	b.Build(in)
	step := func(name string, affs []*Affiliate, wantOK bool, wantChanged, wantRemoved int) {
		t.Helper()
		in.Affiliates = affs
		got, d, ok := b.Update(in)
		if ok != wantOK {
			t.Fatalf("%s: Update ok %v, want %v", name, ok, wantOK)
		}
		want := Build(in)
		if !ok {
			b.Build(in)
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: Update differs from Build", name)
		}
		if len(d.Changed) != wantChanged || len(d.Removed) != wantRemoved {
			t.Fatalf("%s: delta %d changed %d removed, want %d and %d", name, len(d.Changed), len(d.Removed), wantChanged, wantRemoved)
		}
	}
	moved := changed(in.Affiliates, 500, func(a *Affiliate) { a.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:40000")} })
	step("an endpoint moves", moved, true, 1, 0)
	step("the same set again", slices.Clone(moved), true, 0, 0)
	left := slices.Delete(slices.Clone(moved), 10, 11)
	step("a member leaves", left, true, 0, 1)
	step("it comes back", moved, true, 1, 0)
	taken := changed(moved, 20, func(a *Affiliate) { a.Endpoints = moved[21].Endpoints })
	step("an endpoint another member lists", taken, false, 0, 0)
	nets := changed(moved, 30, func(a *Affiliate) { a.Networks = []netip.Prefix{netip.MustParsePrefix("10.30.0.0/24")} })
	step("a member advertises a network", nets, false, 0, 0)
}

// changed is affs with its i-th affiliate replaced by a copy that f
// changed (inputs' affiliates are never changed in place).
func changed(affs []*Affiliate, i int, f func(*Affiliate)) []*Affiliate {
	c := slices.Clone(affs)
	a := *c[i]
	f(&a)
	c[i] = &a
	return c
}

// largeInput is n members with one endpoint each, as tests/scale runs them.
func largeInput(t testing.TB, n int) (Input, []wgtypes.Key) {
	var keys []wgtypes.Key
	var affs []*Affiliate
	for i := range n {
		k := testKey(t)
		keys = append(keys, k)
		a := trustPrefix.Addr().As16()
		a[13], a[14], a[15] = 2, byte((i+1)>>8), byte(i+1)
		affs = append(affs, &Affiliate{ID: fmt.Sprintf("node-%04d", i), NodeName: fmt.Sprintf("node-%04d", i), PublicKey: k.String(),
			Address: netip.AddrFrom16(a), Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(100 + i/256), byte(i)}), 51820)}})
	}
	return Input{Self: testKey(t), Prefix: trustPrefix, Own: victimOwn, Affiliates: affs}, keys
}

// BenchmarkUpdate: one member of a thousand moves its endpoint, as an
// Update and as a Build.
func BenchmarkUpdate(b *testing.B) {
	in, _ := largeInput(b, 1000)
	alt := changed(in.Affiliates, 500, func(a *Affiliate) { a.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:40000")} })
	sets := [][]*Affiliate{in.Affiliates, alt}
	b.Run("update", func(b *testing.B) {
		var bl Builder
		bl.Build(in)
		for i := range b.N {
			in.Affiliates = sets[i%2]
			if _, _, ok := bl.Update(in); !ok {
				b.Fatal("Update declined")
			}
		}
	})
	b.Run("build", func(b *testing.B) {
		var bl Builder
		for i := range b.N {
			in.Affiliates = sets[i%2]
			bl.Build(in)
		}
	})
}
