package mesh

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// BenchmarkBuildHostile: one reconcile pass's peer set with the issue's
// hostile publisher (100 affiliates x 64 endpoints, every route refused)
// next to one honest member.
func BenchmarkBuildHostile(b *testing.B) {
	var affs []*Affiliate
	for i := range 100 {
		k, _ := wgtypes.GeneratePrivateKey()
		a := Affiliate{ID: fmt.Sprintf("0%03d", i), NodeName: fmt.Sprint("evil-", i), PublicKey: k.PublicKey().String(),
			Address:   netip.AddrFrom16([16]byte{0xfd, 0x7f, 0x17, 0x5a, 0xb9, 0x7c, 0x56, 0x02, 0, 0, 0, 0, 0, 0, 1, byte(i)}),
			Networks:  prefixes("0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/1", "192.0.2.0/24", "fd7f:175a:b97c::/48"),
			Addresses: addrs("192.0.2.11", "192.0.2.10")}
		for j := range 64 {
			a.Endpoints = append(a.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + j)}), 51820))
		}
		affs = append(affs, ref(a))
	}
	hk, h := honestBench()
	affs = append(affs, ref(h))
	in := Input{Self: wgtypes.Key{1}, Prefix: trustPrefix, Own: victimOwn, Affiliates: affs,
		Observed: map[wgtypes.Key][]netip.AddrPort{hk: {netip.MustParseAddrPort("192.0.2.11:51820")}}}
	b.ReportAllocs()
	for b.Loop() {
		Build(in)
	}
}

func honestBench() (wgtypes.Key, Affiliate) {
	k, _ := wgtypes.GeneratePrivateKey()
	return k.PublicKey(), Affiliate{ID: "zz", NodeName: "honest", PublicKey: k.PublicKey().String(),
		Address: netip.MustParseAddr("fd7f:175a:b97c:5602::b"), Addresses: addrs("192.0.2.11"), Networks: prefixes("10.244.1.0/24"),
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:51820")}}
}
