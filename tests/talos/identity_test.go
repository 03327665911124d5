package talos

import (
	"crypto/rand"
	"encoding/base64"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/netx/eui64"
	"github.com/siderolabs/talos/pkg/machinery/resources/network"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// Fact sheet 4.2 vector (Talos ula_test.go / identity_test.go).
const (
	vectorClusterID = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
	vectorPrefix    = "fd7f:175a:b97c:5602::/64"
	vectorMAC       = "2e:1a:b6:53:81:69"
	vectorAddress   = "fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169"
)

func TestMeshPrefixVector(t *testing.T) {
	talos := network.ULAPrefix(vectorClusterID, network.ULAKubeSpan)
	ours := clusterkey.MeshPrefix(vectorClusterID)
	if talos.String() != vectorPrefix || ours != talos {
		t.Fatalf("prefix: Talos %s, meshspan %s, fact sheet %s", talos, ours, vectorPrefix)
	}
}

// TestMeshPrefixRandomIDs compares the prefix with Talos's for thousands of
// cluster IDs in every encoding Talos produces or accepts: standard padded
// base64 (Talos >= 1.14 and meshspan_cluster_secrets), URL-safe padded
// (Talos before 1.14, including the v1.11.5 generator), and arbitrary
// strings (Talos hashes the ID string as is and never decodes it).
func TestMeshPrefixRandomIDs(t *testing.T) {
	encodings := map[string]*base64.Encoding{"std": base64.StdEncoding, "url": base64.URLEncoding}
	const n = 4000
	urlSpecific := 0
	for i := range n {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			t.Fatal(err)
		}
		for name, enc := range encodings {
			id := enc.EncodeToString(raw[:])
			if got, want := clusterkey.MeshPrefix(id), network.ULAPrefix(id, network.ULAKubeSpan); got != want {
				t.Fatalf("%s id %q: meshspan %s, Talos %s", name, id, got, want)
			}
			if err := config.ValidateClusterID(id); err != nil {
				t.Fatalf("%s id %q (as Talos generates) refused by meshspan: %v", name, id, err)
			}
			if name == "url" && id != base64.StdEncoding.EncodeToString(raw[:]) {
				urlSpecific++
			}
		}
		// Opaque strings of any length: Talos only hashes them.
		s := make([]byte, mrand.IntN(64)+1)
		for j := range s {
			s[j] = byte(mrand.IntN(94) + 33)
		}
		if got, want := clusterkey.MeshPrefix(string(s)), network.ULAPrefix(string(s), network.ULAKubeSpan); got != want {
			t.Fatalf("id %q (#%d): meshspan %s, Talos %s", s, i, got, want)
		}
	}
	// Most 32-byte IDs contain '+' or '/' in std encoding, so the URL-safe
	// spelling differs and gives another prefix: both were exercised.
	if urlSpecific < n/2 {
		t.Fatalf("only %d of %d URL-safe IDs differed from std; the encodings were not both exercised", urlSpecific, n)
	}
	t.Logf("%d cluster IDs x (std, url-safe, opaque) agree with machinery's ULAPrefix", n)
}

// TestNodeAddressFromMAC checks the node address against eui64.ParseMAC,
// the function Talos's KubeSpan identity (adapters/kubespan.UpdateAddress)
// calls with ULAPrefix(clusterID, ULAKubeSpan).
func TestNodeAddressFromMAC(t *testing.T) {
	talos := func(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
		p := prefix.Addr().As16()
		ip, err := eui64.ParseMAC(net.IP(p[:]), mac)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netip.AddrFromSlice(ip)
		return a
	}
	prefix := network.ULAPrefix(vectorClusterID, network.ULAKubeSpan)
	mac, _ := net.ParseMAC(vectorMAC)
	ours, err := clusterkey.NodeAddress(prefix, mac)
	if err != nil || ours.String() != vectorAddress || talos(prefix, mac) != ours {
		t.Fatalf("vector: meshspan %s (%v), Talos %s, fact sheet %s", ours, err, talos(prefix, mac), vectorAddress)
	}
	for i := range 2000 {
		id := base64.URLEncoding.EncodeToString(new(big.Int).SetInt64(int64(i) * 7919).Bytes())
		prefix := network.ULAPrefix(id, network.ULAKubeSpan)
		for _, size := range []int{6, 8} {
			mac := make(net.HardwareAddr, size)
			if _, err := rand.Read(mac); err != nil {
				t.Fatal(err)
			}
			ours, err := clusterkey.NodeAddress(prefix, mac)
			if err != nil {
				t.Fatalf("MAC %s: %v", mac, err)
			}
			if want := talos(prefix, mac); ours != want {
				t.Fatalf("MAC %s in %s: meshspan %s, Talos %s", mac, prefix, ours, want)
			}
		}
	}
}
