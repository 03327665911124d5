package agent

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

func TestPolicyState(t *testing.T) {
	key, _ := wgtypes.GeneratePrivateKey()
	dev, err := wg.NewUserspace(tuntest.NewChannelTUN().TUN(), wg.Options{Name: "meshspan0", ListenPort: 51820, PrivateKey: key, Bind: bindtest.NewChannelBinds()[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	sec, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Cluster:   config.Cluster{ID: sec.ID, Secret: sec.Secret},
		WireGuard: config.WireGuard{MTU: 1420}, AllowDownPeerBypass: true,
		LANBypass: []string{"192.168.0.0/16"},
		Firewall:  config.Firewall{DefaultAction: "block"},
		Relay:     config.Relay{Enabled: true, Port: 3478},
	}
	cfg.ApplyDefaults()
	a, err := newAgent(Options{Config: cfg, StateDir: t.TempDir(), MemoryLimit: -1,
		MAC: func() (net.HardwareAddr, error) { return net.HardwareAddr{2, 0, 0, 0, 0, 1}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	a.dev, a.prefix = dev, netip.MustParsePrefix("fd00:1:2:3::/64")
	up, down := mesh.Peer{PublicKey: wgtypes.Key{1}}, mesh.Peer{PublicKey: wgtypes.Key{2}}
	up.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1:2:3::a/128")}
	down.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32"), netip.MustParsePrefix("fd00:1:2:3::b/128")}
	// 10.9.0.0/24 is claimed by two members: it stays in the mesh, unreachable.
	contested := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("fd00:1:2:3::c/128")}
	s := a.policyState([]mesh.Peer{up, down}, map[wgtypes.Key]mesh.Status{up.PublicKey: {State: mesh.StateUp}, down.PublicKey: {State: mesh.StateDown}}, contested)

	if s.Interface != "meshspan0" || s.ListenPort != 51820 || s.MTU != 1420 || s.Routing != cfg.Routing || !s.AllowDownPeerBypass {
		t.Errorf("state header %+v does not carry the device and config", s)
	}
	// Mesh addresses are routed by the link's own /64; members' other
	// prefixes go through the policy table, and a down member's are unreachable.
	if want := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.5/32")}; !reflect.DeepEqual(s.Routed, want) {
		t.Errorf("Routed = %v, want %v", s.Routed, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("192.0.2.5/32")}; !reflect.DeepEqual(s.Unreachable, want) {
		t.Errorf("Unreachable = %v, want %v", s.Unreachable, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}; !reflect.DeepEqual(s.LANBypass, want) {
		t.Errorf("LANBypass = %v, want %v", s.LANBypass, want)
	}
	// A relay on its own port must get through a blocking host firewall.
	if s.RelayPort != 3478 || s.Firewall.DefaultAction != "block" {
		t.Errorf("RelayPort = %d, Firewall.DefaultAction = %q; want 3478 and block from the config", s.RelayPort, s.Firewall.DefaultAction)
	}
}
