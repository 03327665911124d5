package talos

import (
	mrand "math/rand/v2"
	"net/netip"
	"sort"
	"testing"

	"go4.org/netipx"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// talosAllowedIPs restates Talos's KubeSpan peer-spec rule (Talos v1.13.0
// controllers/kubespan/peer_spec.go; v1.11.5 is the same without the
// exclusions): per affiliate in ID order, (additional addresses ∪ node
// addresses) − excluded networks, plus the KubeSpan address; then whatever
// an earlier peer already holds is removed.
type talosPeer struct {
	id         string
	address    netip.Addr
	addresses  []netip.Addr
	additional []netip.Prefix
	excluded   []netip.Prefix
}

func talosAllowedIPs(t *testing.T, peers []talosPeer) []*netipx.IPSet {
	sorted := append([]talosPeer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].id < sorted[j].id })
	var earlier []*netipx.IPSet
	for _, p := range sorted {
		var b netipx.IPSetBuilder
		for _, n := range p.additional {
			b.AddPrefix(n)
		}
		for _, a := range p.addresses {
			b.Add(a)
		}
		for _, n := range p.excluded {
			b.RemovePrefix(n)
		}
		b.Add(p.address)
		for _, o := range earlier {
			b.RemoveSet(o)
		}
		set, err := b.IPSet()
		if err != nil {
			t.Fatal(err)
		}
		earlier = append(earlier, set)
	}
	return earlier
}

// TestAllowedIPsMatchTalosRule compares meshspan's peer set with Talos's
// rule on thousands of random clusters whose members overlap, advertise
// networks and exclude parts of them (as Talos >= 1.13 publishes in
// exclude_advertised_addresses).
func TestAllowedIPsMatchTalosRule(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(20, 26))
	prefix := clusterkey.MeshPrefix(vectorClusterID)
	self, _ := wgtypes.GeneratePrivateKey()
	randPrefix := func() netip.Prefix {
		if rng.IntN(3) == 0 {
			a := prefix.Addr().As16()
			a[15] = byte(rng.IntN(4))
			return netip.PrefixFrom(netip.AddrFrom16(a), 126+rng.IntN(3)).Masked()
		}
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(2)), byte(rng.IntN(4)), byte(rng.IntN(256))})
		return netip.PrefixFrom(a, 22+rng.IntN(11)).Masked()
	}
	const clusters = 3000
	equal := 0
	for c := range clusters {
		n := 1 + rng.IntN(5)
		var tp []talosPeer
		var affs []*mesh.Affiliate
		for i := range n {
			key, _ := wgtypes.GeneratePrivateKey()
			a := prefix.Addr().As16()
			a[14], a[15] = byte(i), byte(rng.IntN(3)) // sometimes inside another's network
			p := talosPeer{id: string(rune('a'+rng.IntN(26))) + string(rune('a'+i)), address: netip.AddrFrom16(a)}
			for range rng.IntN(3) {
				p.addresses = append(p.addresses, netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(256))}))
			}
			for range rng.IntN(3) {
				p.additional = append(p.additional, randPrefix())
			}
			for range rng.IntN(2) {
				p.excluded = append(p.excluded, randPrefix())
			}
			tp = append(tp, p)
			affs = append(affs, &mesh.Affiliate{ID: p.id, PublicKey: key.PublicKey().String(), Address: p.address,
				Addresses: p.addresses, Networks: p.additional, ExcludeNetworks: p.excluded})
		}
		want := talosAllowedIPs(t, tp)
		peers, _ := mesh.Peers(mesh.Input{Self: self.PublicKey(), Prefix: prefix, Affiliates: affs})
		if len(peers) != n {
			t.Fatalf("cluster %d: %d peers from %d affiliates", c, len(peers), n)
		}
		var union netipx.IPSetBuilder
		for _, w := range want {
			union.AddSet(w)
		}
		talosAll, _ := union.IPSet()
		same := talosComparable(prefix, tp)
		if same {
			equal++
		}
		var seen netipx.IPSetBuilder
		for i, p := range peers {
			var b netipx.IPSetBuilder
			for _, a := range p.AllowedIPs {
				b.AddPrefix(a)
			}
			got, _ := b.IPSet()
			switch {
			case same && !got.Equal(want[i]):
				t.Fatalf("cluster %d peer %d (%s): meshspan AllowedIPs %v, Talos %v\naffiliates %+v", c, i, p.AffiliateID, p.AllowedIPs, want[i].Prefixes(), tp)
			case !subset(got, talosAll):
				t.Fatalf("cluster %d peer %d (%s): meshspan routes %v, which Talos routes to no peer (%v)", c, i, p.AffiliateID, p.AllowedIPs, talosAll.Prefixes())
			}
			sofar, _ := seen.IPSet()
			if sofar.Overlaps(got) {
				t.Fatalf("cluster %d peer %d (%s): AllowedIPs %v overlap another peer's", c, i, p.AffiliateID, p.AllowedIPs)
			}
			seen.AddSet(got)
		}
	}
	// Where members' claims overlap, or a member advertises a range inside
	// the mesh prefix, meshspan deliberately departs from Talos (issue
	// "Trust between members": overlaps go to neither, a member's own
	// addresses are its own, the mesh prefix is never taken from a peer):
	// there it routes nothing Talos would not, and never one range to two
	// peers. Everywhere else the two rules must agree exactly.
	if equal < clusters/10 {
		t.Fatalf("only %d of %d random clusters had no overlapping claims: the equality check proves too little", equal, clusters)
	}
	t.Logf("%d random clusters: meshspan's AllowedIPs equal Talos's rule in the %d without overlapping claims, and are within Talos's and disjoint in the rest", clusters, equal)
}

// talosComparable reports whether no two members' claims overlap and no
// member advertises a range inside the mesh prefix: the clusters where
// meshspan's rule and Talos's must give the same AllowedIPs.
func talosComparable(prefix netip.Prefix, peers []talosPeer) bool {
	claims := make([][]netip.Prefix, len(peers))
	for i, p := range peers {
		claims[i] = append(claims[i], netip.PrefixFrom(p.address, 128))
		for _, a := range p.addresses {
			claims[i] = append(claims[i], netip.PrefixFrom(a, a.BitLen()))
		}
		for _, n := range p.additional {
			if prefix.Overlaps(n) {
				return false
			}
			claims[i] = append(claims[i], n)
		}
	}
	for i := range claims {
		for j := i + 1; j < len(claims); j++ {
			for _, a := range claims[i] {
				for _, b := range claims[j] {
					if a.Overlaps(b) {
						return false
					}
				}
			}
		}
	}
	return true
}

func subset(a, b *netipx.IPSet) bool {
	for _, r := range a.Ranges() {
		if !b.ContainsRange(r) {
			return false
		}
	}
	return true
}
