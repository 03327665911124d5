package talos

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netx/eui64"
	dclient "github.com/siderolabs/discovery-client/pkg/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/constants"
	"github.com/siderolabs/talos/pkg/machinery/resources/cluster"
	"github.com/siderolabs/talos/pkg/machinery/resources/network"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// TestAgentMeshesWithTalosNode runs a real meshspan agent (in process, on a
// channel TUN and userspace WireGuard, no root) and a Talos-shaped node: a
// WireGuard device configured exactly as Talos programs a KubeSpan peer
// (PSK = cluster secret, keepalive 25 s, AllowedIPs from Talos's peer-spec
// rule applied to the meshspan affiliate it discovered), publishing its
// affiliate as Talos does. Both use one meshspan discovery service. The
// agent must make the Talos node a peer with the right address, AllowedIPs
// and endpoint, the handshake must succeed (the PSK matches), and packets
// must flow both ways between the two mesh addresses.
//
// The channel transport decides the UDP endpoints: the agent reaches the
// Talos node at 127.0.0.1:1, and the Talos node the agent at 127.0.0.1:2.
func TestAgentMeshesWithTalosNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	endpoint := startDiscovery(t)

	bundle, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersion1_11)
	if err != nil {
		t.Fatal(err)
	}
	clusterID, clusterSecret := bundle.Cluster.ID, bundle.Cluster.Secret
	binds := bindtest.NewChannelBinds()

	// --- the meshspan node: a real agent.
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: "hetzner-1"},
		Cluster:    config.Cluster{ID: clusterID, Secret: clusterSecret},
		Discovery:  config.Discovery{Endpoints: []string{endpoint}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	agentTUN := tuntest.NewChannelTUN()
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(ctx, agent.Options{
			Config: cfg, StateDir: dir, Socket: sock, NoHostPolicy: true, MemoryLimit: -1, Version: "test",
			OpenDevice: func(o wg.Options) (agent.Device, error) {
				o.Bind = binds[0]
				return wg.NewUserspace(agentTUN.TUN(), o)
			},
			HostAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("203.0.113.31")}, nil },
			MAC:       func() (net.HardwareAddr, error) { return randomMAC(t), nil },
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-agentDone:
			if err != nil {
				t.Errorf("agent stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop within 15s")
		}
	}()

	// --- the Talos node: identity, affiliate and client as Talos has them.
	talosKey, _ := wgtypes.GeneratePrivateKey()
	prefix := network.ULAPrefix(clusterID, network.ULAKubeSpan)
	pfx := prefix.Addr().As16()
	ip, err := eui64.ParseMAC(net.IP(pfx[:]), randomMAC(t))
	if err != nil {
		t.Fatal(err)
	}
	talosAddr, _ := netip.AddrFromSlice(ip)
	talosNodeID, _ := discovery.NewAffiliateID()
	talosSpec := cluster.AffiliateSpec{
		NodeID: talosNodeID, Hostname: "talos-w-1", Nodename: "talos-w-1", OperatingSystem: "Talos (v1.11.5)", MachineType: machine.TypeWorker,
		Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.21")},
		KubeSpan: cluster.KubeSpanAffiliateSpec{
			PublicKey: talosKey.PublicKey().String(), Address: talosAddr,
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		},
	}
	key, _ := clusterkey.Key(clusterSecret)
	block, _ := aes.NewCipher(key[:])
	target, insecure, _ := discovery.ParseEndpoint(endpoint)
	tc, err := dclient.NewClient(dclient.Options{Cipher: block, Endpoint: target, Insecure: insecure, ClusterID: clusterID,
		AffiliateID: talosNodeID, ClientVersion: "v1.11.5", TTL: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tnotify := make(chan struct{}, 1)
	go func() { _ = tc.Run(ctx, zap.NewNop(), tnotify) }()
	pb, eps := talosAffiliateProto(&talosSpec)
	if err := tc.SetLocalData(&dclient.Affiliate{Affiliate: pb, Endpoints: eps}, nil); err != nil {
		t.Fatal(err)
	}

	// The Talos node learns the meshspan node from discovery.
	var ours *cluster.AffiliateSpec
	for deadline := time.Now().Add(30 * time.Second); ours == nil; {
		for _, a := range tc.GetAffiliates() {
			if a.Affiliate != nil && a.Affiliate.Kubespan != nil {
				s := talosAffiliateSpec(t, a.Affiliate, a.Endpoints)
				ours = &s
			}
		}
		if ours == nil {
			if time.Now().After(deadline) {
				t.Fatal("the Talos node never discovered the meshspan agent")
			}
			select {
			case <-tnotify:
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if ours.Nodename != "hetzner-1" || !prefix.Contains(ours.KubeSpan.Address) || !slices.Contains(ours.Addresses, netip.MustParseAddr("203.0.113.31")) ||
		ours.MachineType != machine.TypeUnknown || ours.OperatingSystem != "meshspan (test)" || ours.Hostname == "" || ours.NodeID == "" ||
		!slices.Contains(ours.KubeSpan.Endpoints, netip.MustParseAddrPort("203.0.113.31:51820")) {
		t.Fatalf("the meshspan affiliate as Talos reads it: %+v", ours)
	}
	peerKey, err := wgtypes.ParseKey(ours.KubeSpan.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// Talos's WireGuard peer for it (controllers/kubespan/manager.go):
	// PSK from the cluster secret, keepalive, AllowedIPs from the peer spec.
	spec := talosPeerSpec(t, *ours)
	psk, err := wgtypes.ParseKey(clusterSecret)
	if err != nil {
		t.Fatal(err)
	}
	var uapi strings.Builder
	fmt.Fprintf(&uapi, "private_key=%s\npublic_key=%s\npreshared_key=%s\nendpoint=127.0.0.1:2\npersistent_keepalive_interval=%d\nreplace_allowed_ips=true\n",
		hex.EncodeToString(talosKey[:]), hex.EncodeToString(peerKey[:]), hex.EncodeToString(psk[:]), int(constants.KubeSpanDefaultPeerKeepalive.Seconds()))
	for _, p := range spec.AllowedIPs {
		fmt.Fprintf(&uapi, "allowed_ip=%s\n", p)
	}
	talosTUN := tuntest.NewChannelTUN()
	talosDev := device.NewDevice(talosTUN.TUN(), binds[1], device.NewLogger(device.LogLevelSilent, ""))
	defer talosDev.Close()
	if err := talosDev.IpcSet(uapi.String()); err != nil {
		t.Fatalf("Talos-side WireGuard config: %v", err)
	}
	if err := talosDev.Up(); err != nil {
		t.Fatal(err)
	}

	// The agent makes the Talos node a peer, completes a handshake with it
	// (so the PSK matches: "up" alone also counts received handshake
	// initiations, which a wrong PSK does not stop) and reports it up.
	var st *agent.Status
	var peer agent.PeerStatus
	for deadline := time.Now().Add(45 * time.Second); ; {
		s, err := agent.FetchStatus(ctx, sock)
		if err == nil && len(s.Peers) == 1 && s.Peers[0].State == "up" && s.Peers[0].LastHandshake != "" {
			st, peer = s, *s.Peers[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never had the Talos node up: %v %+v", err, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := talosPeerSpec(t, talosSpec)
	var wantAllowed []string
	for _, p := range want.AllowedIPs {
		wantAllowed = append(wantAllowed, p.String())
	}
	if peer.PublicKey != talosKey.PublicKey().String() || peer.Address != talosAddr.String() || peer.Name != "talos-w-1" ||
		peer.AffiliateID != talosNodeID || !slices.Equal(peer.AllowedIPs, wantAllowed) || slices.Contains(peer.Candidates, "127.0.0.1:1") {
		// The Talos node publishes its loopback endpoint (this test's
		// underlay); members' loopback endpoints are never dialled (issue
		// "Trust between members"), so the agent learns the node's
		// endpoint when the node's handshake arrives and WireGuard roams.
		t.Fatalf("the agent's peer for the Talos node: %+v; want address %s AllowedIPs %v and the published loopback endpoint refused", peer, talosAddr, wantAllowed)
	}
	if st.Address != ours.KubeSpan.Address.String() {
		t.Fatalf("agent address %s, published %s", st.Address, ours.KubeSpan.Address)
	}
	t.Logf("agent peer: %s %s AllowedIPs %v endpoint %s state %s", peer.Name, peer.Address, peer.AllowedIPs, peer.Endpoint, peer.State)

	// Packets between the two mesh addresses, and between the routed
	// underlay addresses (which KubeSpan also sends through the mesh), both
	// ways.
	ourAddr := ours.KubeSpan.Address
	talosRouted, ourRouted := netip.MustParseAddr("198.51.100.21"), netip.MustParseAddr("203.0.113.31")
	for _, dir := range []struct {
		name     string
		from, to *tuntest.ChannelTUN
		src, dst netip.Addr
	}{
		{"Talos -> meshspan (mesh IPv6)", talosTUN, agentTUN, talosAddr, ourAddr},
		{"meshspan -> Talos (mesh IPv6)", agentTUN, talosTUN, ourAddr, talosAddr},
		{"Talos -> meshspan (routed IPv4)", talosTUN, agentTUN, talosRouted, ourRouted},
		{"meshspan -> Talos (routed IPv4)", agentTUN, talosTUN, ourRouted, talosRouted},
	} {
		pkt := packet(dir.src, dir.dst)
		dir.from.Outbound <- pkt
		select {
		case got := <-dir.to.Inbound:
			if !bytes.Equal(got, pkt) {
				t.Fatalf("%s: received %x, want %x", dir.name, got, pkt)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the packet did not arrive", dir.name)
		}
	}
}

// packet is an ICMPv4 echo (tuntest.Ping) or, for IPv6, a minimal IPv6
// packet with no next header: WireGuard routes on the addresses only.
func packet(src, dst netip.Addr) []byte {
	if src.Is4() {
		return tuntest.Ping(dst, src)
	}
	payload := []byte("talos<->meshspan")
	b := make([]byte, 40+len(payload))
	b[0] = 0x60
	b[4], b[5] = byte(len(payload)>>8), byte(len(payload))
	b[6], b[7] = 59, 64 // no next header, hop limit
	s16, d16 := src.As16(), dst.As16()
	copy(b[8:24], s16[:])
	copy(b[24:40], d16[:])
	copy(b[40:], payload)
	return b
}
