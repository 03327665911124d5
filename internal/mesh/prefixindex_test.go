package mesh

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestPrefixIndexMatchesScan: subtracting only what the index says overlaps
// gives what subtracting every claimed prefix gives.
func TestPrefixIndexMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func() netip.Prefix {
		if rng.IntN(2) == 0 {
			a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))})
			return netip.PrefixFrom(a, 8+rng.IntN(25)).Masked()
		}
		var b [16]byte
		b[0], b[1], b[15] = 0xfd, byte(rng.IntN(4)), byte(rng.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom16(b), []int{16, 64, 120, 126, 128}[rng.IntN(5)]).Masked()
	}
	idx := newPrefixIndex()
	var all []netip.Prefix
	for range 2000 {
		p := random()
		want := subtractPrefixes(p, all)
		got := subtractPrefixes(p, idx.overlapping(p))
		if !slices.Equal(got, want) {
			t.Fatalf("%s minus %d claimed: index gives %v, scan gives %v", p, len(all), got, want)
		}
		if rng.IntN(3) == 0 {
			idx.add(p)
			all = append(all, p)
		}
	}
}
