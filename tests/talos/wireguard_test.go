package talos

import (
	"fmt"
	"testing"
	"time"

	"github.com/siderolabs/talos/pkg/machinery/constants"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// TestWireGuardDetails states, in one table, what a Talos KubeSpan peer
// expects of a meshspan peer, against Talos's own constants. "must match"
// rows break the mesh when they differ; "local" rows are each node's own
// business and are listed to show which differences are deliberate.
func TestWireGuardDetails(t *testing.T) {
	var def config.Config
	def.ApplyDefaults()

	// PSK: Talos parses the cluster secret string as a WireGuard key
	// (controllers/kubespan/manager.go: wgtypes.ParseKey(cfg.SharedSecret)).
	secret := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	talosPSK, err := wgtypes.ParseKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	ourPSK, err := clusterkey.PresharedKey(secret)
	if err != nil {
		t.Fatal(err)
	}

	rows := []struct {
		name       string
		mustMatch  bool
		talos, our any
		why        string
	}{
		{"preshared key = cluster secret", true, talosPSK, ourPSK, "WireGuard drops handshakes whose PSK differs"},
		{"listen port", true, constants.KubeSpanDefaultPort, def.WireGuard.ListenPort, "Talos advertises its endpoints with 51820 and the firewall opens only that port"},
		{"link MTU", true, constants.KubeSpanLinkMTU, def.WireGuard.MTU, "same MTU and MSS clamp on both ends of a TCP flow"},
		{"minimum MTU", true, constants.KubeSpanLinkMinimumMTU, config.MinMTU, "what Talos's validator accepts"},
		{"routing table", false, constants.KubeSpanDefaultRoutingTable, def.Routing.Table, "per host; kept equal so one runbook fits both"},
		{"WireGuard firewall mark", false, constants.KubeSpanDefaultFirewallMark, int(def.Routing.FirewallMark), "per host"},
		{"force mark", false, constants.KubeSpanDefaultForceFirewallMark, int(def.Routing.ForceMark), "per host"},
		{"mark mask", false, constants.KubeSpanDefaultFirewallMask, int(def.Routing.MarkMask), "per host"},
		// Not a machinery constant: Talos's routing_rules.go takes the first
		// free priority counting down from 32500.
		{"policy rule priority", false, 32500, def.Routing.RulePriority, "per host"},
	}
	for _, r := range rows {
		equal := fmt.Sprint(r.talos) == fmt.Sprint(r.our)
		t.Logf("%-32s Talos %-45v meshspan %-45v must match: %v (%s)", r.name, r.talos, r.our, r.mustMatch, r.why)
		if !equal {
			t.Errorf("%s: Talos %v, meshspan %v", r.name, r.talos, r.our)
		}
	}

	// Keepalive is a sender's setting: each end keeps the NAT mapping open
	// with its own packets. Talos sends every 25 s; meshspan sends more
	// often (half of wireguard.keepalive) so it can tell a dead peer within
	// seconds. A Talos peer keeps seeing traffic well inside its 275 s
	// down threshold either way.
	talosKeepalive := constants.KubeSpanDefaultPeerKeepalive
	ourKeepalive := mesh.WireGuardKeepalive(def.WireGuard.Keepalive.D())
	t.Logf("%-32s Talos %-45v meshspan %-45v must match: false (sender's setting)", "persistent keepalive", talosKeepalive, ourKeepalive)
	if talosKeepalive != 25*time.Second {
		t.Errorf("Talos keepalive is %s, the fact sheet says 25s", talosKeepalive)
	}
	if ourKeepalive <= 0 || ourKeepalive > talosKeepalive {
		t.Errorf("meshspan keepalive %s: a Talos peer would see meshspan nodes less often than Talos nodes", ourKeepalive)
	}
}
