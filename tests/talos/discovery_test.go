package talos

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/netx/eui64"
	clientpb "github.com/siderolabs/discovery-api/api/v1alpha1/client/pb"
	dclient "github.com/siderolabs/discovery-client/pkg/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/resources/cluster"
	"github.com/siderolabs/talos/pkg/machinery/resources/kubespan"
	"github.com/siderolabs/talos/pkg/machinery/resources/network"
	"go.uber.org/zap"
	"go4.org/netipx"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// The conversions below restate, in our words, what Talos v1.11.5 does in
// internal/app/machined/pkg/controllers/cluster/discovery_service.go
// (pbAffiliate, pbEndpoints, specAffiliate) and in
// controllers/kubespan/peer_spec.go; those packages are internal to Talos and
// cannot be imported. The types are machinery's.

// talosAffiliateProto is the plaintext a Talos node seals for its affiliate.
func talosAffiliateProto(s *cluster.AffiliateSpec) (*clientpb.Affiliate, []*clientpb.Endpoint) {
	bin := func(a netip.Addr) []byte { b, _ := a.MarshalBinary(); return b }
	p := &clientpb.Affiliate{
		NodeId: s.NodeID, Hostname: s.Hostname, Nodename: s.Nodename,
		MachineType: s.MachineType.String(), OperatingSystem: s.OperatingSystem,
	}
	for _, a := range s.Addresses {
		p.Addresses = append(p.Addresses, bin(a))
	}
	var eps []*clientpb.Endpoint
	if s.KubeSpan.PublicKey != "" {
		p.Kubespan = &clientpb.KubeSpan{PublicKey: s.KubeSpan.PublicKey, Address: bin(s.KubeSpan.Address)}
		for _, n := range s.KubeSpan.AdditionalAddresses {
			p.Kubespan.AdditionalAddresses = append(p.Kubespan.AdditionalAddresses, &clientpb.IPPrefix{Ip: bin(n.Addr()), Bits: uint32(n.Bits())})
		}
		for _, e := range s.KubeSpan.Endpoints {
			eps = append(eps, &clientpb.Endpoint{Ip: bin(e.Addr()), Port: uint32(e.Port())})
		}
	}
	if s.ControlPlane != nil {
		p.ControlPlane = &clientpb.ControlPlane{ApiServerPort: uint32(s.ControlPlane.APIServerPort)}
	}
	return p, eps
}

// talosAffiliateSpec is how a Talos node reads a discovered affiliate.
func talosAffiliateSpec(t *testing.T, p *clientpb.Affiliate, eps []*clientpb.Endpoint) cluster.AffiliateSpec {
	mt, err := machine.ParseType(p.MachineType)
	if err != nil {
		t.Errorf("machine type %q: Talos parses it as unknown with error %v", p.MachineType, err)
	}
	s := cluster.AffiliateSpec{NodeID: p.NodeId, Hostname: p.Hostname, Nodename: p.Nodename, OperatingSystem: p.OperatingSystem, MachineType: mt}
	if p.ControlPlane != nil {
		s.ControlPlane = &cluster.ControlPlane{APIServerPort: int(p.ControlPlane.ApiServerPort)}
	}
	for _, b := range p.Addresses {
		var a netip.Addr
		if err := a.UnmarshalBinary(b); err != nil {
			t.Errorf("address %x does not decode as Talos decodes it: %v", b, err)
			continue
		}
		s.Addresses = append(s.Addresses, a)
	}
	if ks := p.Kubespan; ks != nil {
		s.KubeSpan.PublicKey = ks.PublicKey
		if err := s.KubeSpan.Address.UnmarshalBinary(ks.Address); err != nil {
			t.Errorf("KubeSpan address %x does not decode: %v", ks.Address, err)
		}
		for _, n := range ks.AdditionalAddresses {
			var a netip.Addr
			if err := a.UnmarshalBinary(n.Ip); err != nil {
				t.Errorf("additional address %x does not decode: %v", n.Ip, err)
				continue
			}
			s.KubeSpan.AdditionalAddresses = append(s.KubeSpan.AdditionalAddresses, netip.PrefixFrom(a, int(n.Bits)))
		}
		for _, e := range eps {
			var a netip.Addr
			if err := a.UnmarshalBinary(e.Ip); err != nil {
				t.Errorf("endpoint %x does not decode: %v", e.Ip, err)
				continue
			}
			s.KubeSpan.Endpoints = append(s.KubeSpan.Endpoints, netip.AddrPortFrom(a, uint16(e.Port)))
		}
	}
	return s
}

// talosPeerSpec is the KubeSpan peer a Talos node makes of one affiliate
// (no other peers, so no overlap removal).
func talosPeerSpec(t *testing.T, s cluster.AffiliateSpec) kubespan.PeerSpecSpec {
	var b netipx.IPSetBuilder
	for _, p := range s.KubeSpan.AdditionalAddresses {
		b.AddPrefix(p)
	}
	for _, a := range s.Addresses {
		b.Add(a)
	}
	b.Add(s.KubeSpan.Address)
	set, err := b.IPSet()
	if err != nil {
		t.Fatal(err)
	}
	return kubespan.PeerSpecSpec{Address: s.KubeSpan.Address, AllowedIPs: set.Prefixes(), Endpoints: slices.Clone(s.KubeSpan.Endpoints), Label: s.Nodename}
}

func randomMAC(t *testing.T) net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		t.Fatal(err)
	}
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	return mac
}

// TestTalosAndMeshspanShareDiscovery: one meshspan discovery service on
// loopback, a Talos-shaped node publishing through the real discovery
// client exactly as Talos v1.11.5 does, and a meshspan node publishing
// through meshspan's client. Each side must see the other as a KubeSpan
// peer with the right address, AllowedIPs and endpoints.
func TestTalosAndMeshspanShareDiscovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	endpoint := startDiscovery(t)

	// The cluster comes from Talos's own secrets generator (URL-safe ID).
	bundle, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersion1_11)
	if err != nil {
		t.Fatal(err)
	}
	clusterID, clusterSecret := bundle.Cluster.ID, bundle.Cluster.Secret
	talosPrefix := network.ULAPrefix(clusterID, network.ULAKubeSpan)

	// The Talos node: identity as Talos derives it.
	talosKey, _ := wgtypes.GeneratePrivateKey()
	talosMAC := randomMAC(t)
	pfx := talosPrefix.Addr().As16()
	ip, err := eui64.ParseMAC(net.IP(pfx[:]), talosMAC)
	if err != nil {
		t.Fatal(err)
	}
	talosAddr, _ := netip.AddrFromSlice(ip)
	talosNodeID, _ := discovery.NewAffiliateID()
	talosSpec := cluster.AffiliateSpec{
		NodeID: talosNodeID, Hostname: "talos-cp-1.example.com", Nodename: "talos-cp-1",
		OperatingSystem: "Talos (v1.11.5)", MachineType: machine.TypeControlPlane,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.21"), netip.MustParseAddr("2001:db8::21")},
		KubeSpan: cluster.KubeSpanAffiliateSpec{
			PublicKey: talosKey.PublicKey().String(), Address: talosAddr,
			AdditionalAddresses: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
			Endpoints:           []netip.AddrPort{netip.MustParseAddrPort("192.0.2.21:51820"), netip.MustParseAddrPort("[2001:db8::21]:51820")},
		},
		ControlPlane: &cluster.ControlPlane{APIServerPort: 6443},
	}
	key, _ := clusterkey.Key(clusterSecret)
	block, _ := aes.NewCipher(key[:])
	target, insecure, err := discovery.ParseEndpoint(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := dclient.NewClient(dclient.Options{Cipher: block, Endpoint: target, Insecure: insecure, ClusterID: clusterID,
		AffiliateID: talosNodeID, ClientVersion: "v1.11.5", TTL: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tnotify := make(chan struct{}, 1)
	tdone := make(chan error, 1)
	go func() { tdone <- tc.Run(ctx, zap.NewNop(), tnotify) }()
	pb, eps := talosAffiliateProto(&talosSpec)
	if err := tc.SetLocalData(&dclient.Affiliate{Affiliate: pb, Endpoints: eps}, nil); err != nil {
		t.Fatal(err)
	}

	// The meshspan node, as the agent fills its affiliate.
	ourKey, _ := wgtypes.GeneratePrivateKey()
	ourPrefix := clusterkey.MeshPrefix(clusterID)
	ourAddr, err := clusterkey.NodeAddress(ourPrefix, randomMAC(t))
	if err != nil {
		t.Fatal(err)
	}
	ourID, _ := discovery.NewAffiliateID()
	mc, err := discovery.NewClient(discovery.ClientOptions{Endpoints: []string{endpoint}, ClusterID: clusterID, ClusterSecret: clusterSecret, AffiliateID: ourID, ClientVersion: "meshspan-test"})
	if err != nil {
		t.Fatal(err)
	}
	mdone := make(chan error, 1)
	go func() { mdone <- mc.Run(ctx) }()
	ours := discovery.Affiliate{
		NodeName: "hetzner-1", Hostname: "hetzner-1.example.com", MachineType: "unknown", OperatingSystem: "meshspan (test)",
		PublicKey: ourKey.PublicKey().String(), Address: ourAddr,
		Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.31")},
		Networks:  []netip.Prefix{netip.MustParsePrefix("10.250.0.0/24")},
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.31:51820"), netip.MustParseAddrPort("[2001:db8::31]:51820")},
		Traversal: discovery.Traversal{RelayPort: 51821}, // meshspan's extra field: Talos must skip it
	}
	mc.SetLocal(ours, nil)

	// meshspan side: the Talos node becomes a peer.
	var found []*discovery.Affiliate
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && len(found) == 0; {
		for _, a := range mc.Affiliates() {
			if a.ID == talosNodeID {
				found = append(found, a)
			}
		}
		if len(found) == 0 {
			select {
			case <-mc.Changes():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("meshspan client never saw the Talos affiliate; it saw %v (decrypt failures %d)", mc.Affiliates(), mc.DecryptFailures())
	}
	d := found[0]
	// As internal/agent hands discovery affiliates to the peer set.
	peers, warnings := mesh.Peers(mesh.Input{Self: ourKey.PublicKey(), Prefix: ourPrefix, Affiliates: []*mesh.Affiliate{{
		ID: d.ID, NodeName: d.NodeName, PublicKey: d.PublicKey, Address: d.Address,
		Addresses: d.Addresses, Networks: d.Networks, ExcludeNetworks: d.ExcludeNetworks, Endpoints: d.Endpoints,
	}}})
	if len(warnings) > 0 || len(peers) != 1 {
		t.Fatalf("peer set from the Talos affiliate: %v, warnings %v", peers, warnings)
	}
	want := talosPeerSpec(t, talosSpec) // what a Talos node would program for the same affiliate
	p := peers[0]
	if p.PublicKey != talosKey.PublicKey() || p.Address != talosAddr || p.Name != "talos-cp-1" || p.AffiliateID != talosNodeID {
		t.Fatalf("peer identity: %+v", p)
	}
	if !slices.Equal(p.AllowedIPs, want.AllowedIPs) {
		t.Fatalf("AllowedIPs: meshspan %v, Talos %v", p.AllowedIPs, want.AllowedIPs)
	}
	if !slices.Equal(p.Endpoints, want.Endpoints) {
		t.Fatalf("endpoints: meshspan %v, Talos %v", p.Endpoints, want.Endpoints)
	}
	t.Logf("meshspan peer from Talos affiliate: address %s AllowedIPs %v endpoints %v", p.Address, p.AllowedIPs, p.Endpoints)

	// Talos side: the meshspan node decodes into Talos's types.
	var got *dclient.Affiliate
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && got == nil; {
		for _, a := range tc.GetAffiliates() {
			if a.Affiliate != nil && a.Affiliate.NodeId == ourID {
				got = a
			}
		}
		if got == nil {
			select {
			case <-tnotify:
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if got == nil {
		t.Fatal("the Talos-side discovery client never saw the meshspan affiliate")
	}
	spec := talosAffiliateSpec(t, got.Affiliate, got.Endpoints)
	if spec.NodeID != ourID || spec.Hostname != ours.Hostname || spec.Nodename != ours.NodeName ||
		spec.OperatingSystem != ours.OperatingSystem || spec.MachineType != machine.TypeUnknown || spec.ControlPlane != nil {
		t.Fatalf("meshspan affiliate as Talos reads it: %+v", spec)
	}
	if !slices.Equal(spec.Addresses, ours.Addresses) || spec.KubeSpan.PublicKey != ours.PublicKey || spec.KubeSpan.Address != ourAddr ||
		!slices.Equal(spec.KubeSpan.AdditionalAddresses, ours.Networks) || !slices.Equal(spec.KubeSpan.Endpoints, ours.Endpoints) {
		t.Fatalf("KubeSpan data as Talos reads it: %+v, published %+v", spec, ours)
	}
	if _, err := wgtypes.ParseKey(spec.KubeSpan.PublicKey); err != nil {
		t.Fatalf("public key %q does not parse as Talos parses it: %v", spec.KubeSpan.PublicKey, err)
	}
	if !talosPrefix.Contains(spec.KubeSpan.Address) || !network.IsULA(spec.KubeSpan.Address, network.ULAKubeSpan) {
		t.Fatalf("meshspan address %s is outside Talos's KubeSpan prefix %s", spec.KubeSpan.Address, talosPrefix)
	}
	tp := talosPeerSpec(t, spec)
	wantAllowed := []netip.Prefix{netip.MustParsePrefix("10.250.0.0/24"), netip.MustParsePrefix("203.0.113.31/32"), netip.PrefixFrom(ourAddr, 128)}
	if !slices.Equal(tp.AllowedIPs, wantAllowed) || !slices.Equal(tp.Endpoints, ours.Endpoints) || tp.Label != "hetzner-1" {
		t.Fatalf("Talos peer spec for the meshspan node: %+v, want AllowedIPs %v", tp, wantAllowed)
	}
	t.Logf("Talos peer spec from meshspan affiliate: %+v", tp)

	cancel()
	for _, ch := range []chan error{tdone, mdone} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Error("a discovery client did not stop within 10s")
		}
	}
}

// startDiscovery starts a meshspan discovery service on loopback for the
// test and returns its endpoint URL.
func startDiscovery(t *testing.T) string {
	t.Helper()
	svc, err := discovery.Start(discovery.ServiceConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
	})
	return "http://" + svc.Addr().String() + "/"
}
