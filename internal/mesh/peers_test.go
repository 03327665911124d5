package mesh

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

func testKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestPeersAllowedIPsAndOverlap(t *testing.T) {
	self, ka, kb, kc := testKey(t), testKey(t), testKey(t), testKey(t)
	prefix := netip.MustParsePrefix("fd7f:175a:b97c:5602::/64")
	in := Input{
		Self:   self,
		Prefix: prefix,
		Static: []config.StaticPeer{{
			Name: "static-a", PublicKey: ka.String(), Address: "fd7f:175a:b97c:5602::a",
			Endpoints: []string{"192.0.2.10:51820"}, Networks: []string{"10.1.0.0/16"},
		}},
		Affiliates: []*Affiliate{
			{ // processed after "aff-b" (sorted by ID)
				ID: "aff-c", NodeName: "c", PublicKey: kc.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::c"),
				Addresses: addrs("192.0.2.12"), Networks: prefixes("10.2.0.0/16"),
			},
			{
				ID: "aff-b", NodeName: "b", PublicKey: kb.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::b"),
				Addresses: addrs("192.0.2.11"), Networks: prefixes("10.1.128.0/17", "10.2.0.0/24", "10.3.0.0/16"),
				ExcludeNetworks: prefixes("10.3.0.0/17"),
				Endpoints:       []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:51820")},
			},
			{ID: "self", PublicKey: self.String(), Address: netip.MustParseAddr("fd7f:175a:b97c:5602::1")},
			{ID: "no-mesh", NodeName: "talos-without-kubespan"},
		},
	}
	peers, warnings := Peers(in)
	if len(peers) != 3 {
		t.Fatalf("got %d peers, want 3 (static-a, b, c): %+v", len(peers), peers)
	}
	want := map[string][]netip.Prefix{
		// Static peer first: keeps all of 10.1.0.0/16.
		"static-a": prefixes("10.1.0.0/16", "fd7f:175a:b97c:5602::a/128"),
		// b loses 10.1.128.0/17 to static-a and the excluded half of
		// 10.3/16; 10.2.0.0/24, which c advertises too, goes to neither.
		"b": prefixes("10.3.128.0/17", "192.0.2.11/32", "fd7f:175a:b97c:5602::b/128"),
		// c loses 10.2.0.0/24 (b advertises it too).
		"c": prefixes("10.2.1.0/24", "10.2.2.0/23", "10.2.4.0/22", "10.2.8.0/21", "10.2.16.0/20", "10.2.32.0/19", "10.2.64.0/18", "10.2.128.0/17", "192.0.2.12/32", "fd7f:175a:b97c:5602::c/128"),
	}
	for _, p := range peers {
		if !reflect.DeepEqual(p.AllowedIPs, want[p.Name]) {
			t.Errorf("%s AllowedIPs = %v\nwant %v", p.Name, p.AllowedIPs, want[p.Name])
		}
	}
	if peers[1].AffiliateID != "aff-b" || peers[2].AffiliateID != "aff-c" {
		t.Errorf("order = %s, %s; want affiliates sorted by ID", peers[1].AffiliateID, peers[2].AffiliateID)
	}
	if len(warnings) != 2 {
		t.Errorf("warnings = %q, want one per overlap (b with static-a, b with c)", warnings)
	}
}

func TestPeersMergeStaticAndAffiliate(t *testing.T) {
	k := testKey(t)
	prefix := netip.MustParsePrefix("fd00:1:2:3::/64")
	peers, _ := Peers(Input{
		Self:   testKey(t),
		Prefix: prefix,
		Static: []config.StaticPeer{{Name: "n1", PublicKey: k.String(), Address: "fd00:1:2:3::9", Endpoints: []string{"192.0.2.9:51820"}}},
		Affiliates: []*Affiliate{{ID: "x", NodeName: "n1", PublicKey: k.String(), Address: netip.MustParseAddr("fd00:1:2:3::9"),
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.9:51820"), netip.MustParseAddrPort("192.0.2.9:51820")}}},
		Observed: map[wgtypes.Key][]netip.AddrPort{k: {netip.MustParseAddrPort("203.0.113.9:40000")}},
	})
	if len(peers) != 1 {
		t.Fatalf("got %d peers, want 1 merged", len(peers))
	}
	wantEps := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.9:51820"),
		netip.MustParseAddrPort("198.51.100.9:51820"),
		netip.MustParseAddrPort("203.0.113.9:40000"),
	}
	if !reflect.DeepEqual(peers[0].Endpoints, wantEps) {
		t.Errorf("Endpoints = %v, want %v", peers[0].Endpoints, wantEps)
	}
	if peers[0].AffiliateID != "x" {
		t.Errorf("AffiliateID = %q, want x", peers[0].AffiliateID)
	}
}

func TestPeersSkipsBadEntries(t *testing.T) {
	prefix := netip.MustParsePrefix("fd00:1:2:3::/64")
	peers, warnings := Peers(Input{
		Self:   testKey(t),
		Prefix: prefix,
		Affiliates: []*Affiliate{
			{ID: "bad-key", PublicKey: "nope", Address: netip.MustParseAddr("fd00:1:2:3::1")},
			{ID: "foreign", PublicKey: testKey(t).String(), Address: netip.MustParseAddr("fd99::1")},
		},
	})
	if len(peers) != 0 || len(warnings) != 2 {
		t.Fatalf("peers %v warnings %q; want none and two warnings", peers, warnings)
	}
	if !strings.Contains(warnings[1], "fd99::1") {
		t.Errorf("warning %q does not name the bad address", warnings[1])
	}
}

func TestPeersFilterCandidates(t *testing.T) {
	k := testKey(t)
	f, _ := ParseFilter([]string{"0.0.0.0/0", "!192.168.0.0/16"})
	peers, _ := Peers(Input{
		Self:   testKey(t),
		Prefix: netip.MustParsePrefix("fd00:1:2:3::/64"),
		Filter: f,
		Affiliates: []*Affiliate{{ID: "a", PublicKey: k.String(), Address: netip.MustParseAddr("fd00:1:2:3::1"),
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.1:51820"), netip.MustParseAddrPort("[2001:db8::1]:51820"), netip.MustParseAddrPort("192.0.2.1:51820")}}},
	})
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51820")}
	if !reflect.DeepEqual(peers[0].Endpoints, want) {
		t.Errorf("Endpoints = %v, want %v", peers[0].Endpoints, want)
	}
}

func TestLocalEndpoints(t *testing.T) {
	prefix := netip.MustParsePrefix("fd00:1:2:3::/64")
	f, _ := ParseFilter([]string{"0.0.0.0/0", "!10.0.0.0/8", "::/0"})
	got := LocalEndpoints(LocalInput{
		Addrs:    addrs("127.0.0.1", "10.0.0.4", "192.0.2.4", "fe80::1", "fd00:1:2:3::4", "2001:db8::4", "ff02::1", "192.0.2.4"),
		Prefix:   prefix,
		Observed: netip.MustParseAddr("203.0.113.4"),
		Port:     51820,
		Filter:   f,
		Extra:    []netip.AddrPort{netip.MustParseAddrPort("10.9.9.9:6000"), netip.MustParseAddrPort("192.0.2.4:51820")},
	})
	want := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.4:51820"),
		netip.MustParseAddrPort("203.0.113.4:51820"),
		netip.MustParseAddrPort("[2001:db8::4]:51820"),
		netip.MustParseAddrPort("10.9.9.9:6000"), // extra: not filtered
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LocalEndpoints = %v\nwant %v", got, want)
	}
	routed := Routed(addrs("127.0.0.1", "10.0.0.4", "fe80::1", "fd00:1:2:3::4", "10.0.0.4"), prefix)
	if !reflect.DeepEqual(routed, addrs("10.0.0.4")) {
		t.Errorf("Routed = %v, want [10.0.0.4]", routed)
	}
}

// ref is a copy of a, for inputs built from values.
func ref(a Affiliate) *Affiliate { return &a }
