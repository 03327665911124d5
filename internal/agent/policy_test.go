package agent

import (
	"net/netip"
	"reflect"
	"testing"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

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
	cfg := &config.Config{WireGuard: config.WireGuard{MTU: 1420}, AllowDownPeerBypass: true}
	cfg.ApplyDefaults()
	a := &agent{cfg: cfg, dev: dev, prefix: netip.MustParsePrefix("fd00:1:2:3::/64"),
		bypass: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}
	up, down := mesh.Peer{PublicKey: wgtypes.Key{1}}, mesh.Peer{PublicKey: wgtypes.Key{2}}
	up.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1:2:3::a/128")}
	down.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32"), netip.MustParsePrefix("fd00:1:2:3::b/128")}
	s := a.policyState([]mesh.Peer{up, down}, map[wgtypes.Key]mesh.Status{up.PublicKey: {State: mesh.StateUp}, down.PublicKey: {State: mesh.StateDown}})

	if s.Interface != "meshspan0" || s.ListenPort != 51820 || s.MTU != 1420 || s.Routing != cfg.Routing || !s.AllowDownPeerBypass {
		t.Errorf("state header %+v does not carry the device and config", s)
	}
	// Mesh addresses are routed by the link's own /64; members' other
	// prefixes go through the policy table, and a down member's are unreachable.
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.5/32")}; !reflect.DeepEqual(s.Routed, want) {
		t.Errorf("Routed = %v, want %v", s.Routed, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32")}; !reflect.DeepEqual(s.Unreachable, want) {
		t.Errorf("Unreachable = %v, want %v", s.Unreachable, want)
	}
	if !reflect.DeepEqual(s.LANBypass, a.bypass) {
		t.Errorf("LANBypass = %v, want %v", s.LANBypass, a.bypass)
	}
}
