package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"gopkg.in/yaml.v3"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/userdata"
)

const (
	testClusterID     = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
	testClusterSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	testPeerKey       = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	testPeerAddress   = "fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169" // inside testClusterID's prefix
)

var (
	strList      = types.ListType{ElemType: types.StringType}
	peerAttrType = map[string]attr.Type{"name": types.StringType, "public_key": types.StringType, "address": types.StringType, "endpoints": strList, "networks": strList, "relay_port": types.Int64Type}
	ruleAttrType = map[string]attr.Type{"name": types.StringType, "protocol": types.StringType, "port": types.StringType, "sources": strList, "action": types.StringType}
	fwAttrType   = map[string]attr.Type{"default_action": types.StringType, "rules": types.ListType{ElemType: types.ObjectType{AttrTypes: ruleAttrType}}}
	instAttrType = map[string]attr.Type{"url": types.StringType, "sha256": types.StringType, "preinstalled": types.BoolType}
	apprAttrType = map[string]attr.Type{"public_key": types.StringType, "networks": strList}
	filtAttrType = map[string]attr.Type{"exclude_advertised_networks": strList, "peer_endpoints": strList,
		"approved_routes": types.ListType{ElemType: types.ObjectType{AttrTypes: apprAttrType}}}
)

// mcFilters is a filters attribute approving networks for key.
func mcFilters(exclude, peerEndpoints types.List, key string, networks types.List) types.Object {
	return types.ObjectValueMust(filtAttrType, map[string]attr.Value{
		"exclude_advertised_networks": exclude, "peer_endpoints": peerEndpoints,
		"approved_routes": types.ListValueMust(types.ObjectType{AttrTypes: apprAttrType}, []attr.Value{
			types.ObjectValueMust(apprAttrType, map[string]attr.Value{"public_key": types.StringValue(key), "networks": networks}),
		}),
	})
}

func mcStrs(s ...string) types.List {
	var v []attr.Value
	for _, x := range s {
		v = append(v, types.StringValue(x))
	}
	return types.ListValueMust(types.StringType, v)
}

func mcPeer(name, key, addr string, endpoints, networks types.List) attr.Value {
	return types.ObjectValueMust(peerAttrType, map[string]attr.Value{
		"name": types.StringValue(name), "public_key": types.StringValue(key), "address": types.StringValue(addr),
		"endpoints": endpoints, "networks": networks, "relay_port": types.Int64Null(),
	})
}

// mcPeerRelay is a valid static peer that relays on port.
func mcPeerRelay(port int64) attr.Value {
	return types.ObjectValueMust(peerAttrType, map[string]attr.Value{
		"name": types.StringValue("relay"), "public_key": types.StringValue(testPeerKey), "address": types.StringValue(testPeerAddress),
		"endpoints": mcStrs("203.0.113.7:51820"), "networks": types.ListNull(types.StringType), "relay_port": types.Int64Value(port),
	})
}

func mcRule(name, proto, port string, sources types.List, action string) attr.Value {
	a := types.StringNull()
	if action != "" {
		a = types.StringValue(action)
	}
	p := types.StringNull()
	if port != "" {
		p = types.StringValue(port)
	}
	return types.ObjectValueMust(ruleAttrType, map[string]attr.Value{
		"name": types.StringValue(name), "protocol": types.StringValue(proto), "port": p, "sources": sources, "action": a,
	})
}

func mcFirewall(def string, rules ...attr.Value) types.Object {
	return types.ObjectValueMust(fwAttrType, map[string]attr.Value{
		"default_action": types.StringValue(def),
		"rules":          types.ListValueMust(types.ObjectType{AttrTypes: ruleAttrType}, rules),
	})
}

func mcInstall(url, sum string, pre bool) types.Object {
	s := func(v string) types.String {
		if v == "" {
			return types.StringNull()
		}
		return types.StringValue(v)
	}
	return types.ObjectValueMust(instAttrType, map[string]attr.Value{"url": s(url), "sha256": s(sum), "preinstalled": types.BoolValue(pre)})
}

// validModel is a full, valid input: a Hetzner node with the seed's
// control-plane firewall.
func mcValidModel() machineConfigModel {
	noList := types.ListNull(types.StringType)
	return machineConfigModel{
		ClusterID:              types.StringValue(testClusterID),
		ClusterSecret:          types.StringValue(testClusterSecret),
		NodeName:               types.StringValue("cp-1"),
		Labels:                 types.MapValueMust(types.StringType, map[string]attr.Value{"topology.kubernetes.io/region": types.StringValue("fsn1")}),
		DiscoveryEndpoints:     mcStrs("https://discovery.example.com/"),
		DiscoveryCACertificate: types.StringNull(),
		StaticPeers: types.ListValueMust(types.ObjectType{AttrTypes: peerAttrType}, []attr.Value{
			mcPeer("metal-1", testPeerKey, testPeerAddress, mcStrs("203.0.113.7:51820"), mcStrs("10.10.0.0/16")),
		}),
		ListenPort:          types.Int64Null(),
		MTU:                 types.Int64Null(),
		EndpointFilters:     mcStrs("0.0.0.0/0", "!10.0.0.0/8", "::/0"),
		ExtraEndpoints:      noList,
		AdvertisedNetworks:  mcStrs("10.244.1.0/24"),
		LANBypass:           noList,
		AllowDownPeerBypass: types.BoolNull(),
		Relay:               types.BoolNull(),
		RelayPort:           types.Int64Null(),
		Firewall: mcFirewall("block",
			mcRule("wireguard", "udp", "51820", noList, ""),
			mcRule("talos", "tcp", "50000", mcStrs("100.64.0.0/10"), ""),
			mcRule("k8s-api", "tcp", "6443", mcStrs("100.64.0.0/10"), "accept"),
		),
		AgentInstall: mcInstall("https://example.com/meshspan-agent", strings.Repeat("ab", 32), false),
		Platform:     types.StringValue("hcloud"),
	}
}

func mcValidate(m machineConfigModel) diag.Diagnostics {
	var d diag.Diagnostics
	newMCBuild(&m).validate(&d)
	return d
}

func TestValidModel(t *testing.T) {
	if d := mcValidate(mcValidModel()); d.HasError() || d.WarningsCount() > 0 {
		t.Fatalf("valid model reports %v", d)
	}
}

// TestMachineConfigValidation has one row per bad input: the attribute the
// error must be reported on and (part of) the message with the fix.
func TestMachineConfigValidation(t *testing.T) {
	noList := types.ListNull(types.StringType)
	peers := func(p ...attr.Value) types.List {
		return types.ListValueMust(types.ObjectType{AttrTypes: peerAttrType}, p)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*machineConfigModel)
		attr   path.Path
		msg    string
	}{
		{"empty node name", func(m *machineConfigModel) { m.NodeName = types.StringValue("") }, path.Root("node_name"), "is empty; set a node name"},
		{"bad node name", func(m *machineConfigModel) { m.NodeName = types.StringValue("CP_1") }, path.Root("node_name"), `"CP_1" is not a valid node name`},
		{"bad label value", func(m *machineConfigModel) {
			m.Labels = types.MapValueMust(types.StringType, map[string]attr.Value{"example.com/role": types.StringValue("a b")})
		}, path.Root("labels").AtMapKey("example.com/role"), `label value "a b" is invalid`},
		{"bad cluster id", func(m *machineConfigModel) { m.ClusterID = types.StringValue("abc") }, path.Root("cluster_id"), "must be 32 bytes in padded base64"},
		{"bad cluster secret", func(m *machineConfigModel) { m.ClusterSecret = types.StringValue("") }, path.Root("cluster_secret"), "is empty; take it from the meshspan_cluster_secrets resource"},
		{"cluster id with newline", func(m *machineConfigModel) { m.ClusterID = types.StringValue(m.ClusterID.ValueString() + "\n") }, path.Root("cluster_id"), "has whitespace"},
		{"cluster secret with crlf", func(m *machineConfigModel) {
			m.ClusterSecret = types.StringValue(m.ClusterSecret.ValueString() + "\r\n")
		}, path.Root("cluster_secret"), "has whitespace"},
		{"cluster secret with inner newline", func(m *machineConfigModel) {
			s := m.ClusterSecret.ValueString()
			m.ClusterSecret = types.StringValue(s[:20] + "\n" + s[20:])
		}, path.Root("cluster_secret"), "exactly 44 characters"},
		{"bad discovery url", func(m *machineConfigModel) {
			m.DiscoveryEndpoints = mcStrs("https://ok.example.com", "discovery.example.com")
		}, path.Root("discovery_endpoints").AtListIndex(1), "is not a discovery URL; write https://"},
		{"no way to find peers", func(m *machineConfigModel) { m.DiscoveryEndpoints = noList; m.StaticPeers = peers() }, path.Root("discovery_endpoints"), "set discovery_endpoints"},
		{"bad ca certificate", func(m *machineConfigModel) { m.DiscoveryCACertificate = types.StringValue("not pem") }, path.Root("discovery_ca_certificate"), "is not a PEM certificate bundle"},
		{"private key as ca", func(m *machineConfigModel) {
			m.DiscoveryCACertificate = types.StringValue("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, path.Root("discovery_ca_certificate"), `holds a "PRIVATE KEY" PEM block`},
		{"peer key", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeer("p", "key", testPeerAddress, noList, noList))
		}, path.Root("static_peers").AtListIndex(0).AtName("public_key"), "is not a WireGuard public key"},
		{"peer address", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeer("p", testPeerKey, "10.0.0.1", noList, noList))
		}, path.Root("static_peers").AtListIndex(0).AtName("address"), `"10.0.0.1" is not an IPv6 address`},
		{"peer address outside prefix", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeer("p", testPeerKey, "fd00::1", noList, noList))
		}, path.Root("static_peers").AtListIndex(0).AtName("address"), "is outside this cluster's mesh prefix fd7f:175a:b97c:5602::/64"},
		{"peer endpoint", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeer("p", testPeerKey, testPeerAddress, mcStrs("203.0.113.7:51820", "host:1"), noList))
		}, path.Root("static_peers").AtListIndex(0).AtName("endpoints").AtListIndex(1), `"host:1" is not ip:port`},
		{"peer network", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeer("p", testPeerKey, testPeerAddress, noList, mcStrs("10.1.2.3/8")))
		}, path.Root("static_peers").AtListIndex(0).AtName("networks").AtListIndex(0), "did you mean 10.0.0.0/8?"},
		{"peer relay port", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeerRelay(70000))
		}, path.Root("static_peers").AtListIndex(0).AtName("relay_port"), "70000 is not a port; use the peer's relay port"},
		{"peer relay port 0", func(m *machineConfigModel) {
			m.StaticPeers = peers(mcPeerRelay(0))
		}, path.Root("static_peers").AtListIndex(0).AtName("relay_port"), "0 is not allowed; set a value in range, or omit the attribute"},
		{"listen port 0", func(m *machineConfigModel) { m.ListenPort = types.Int64Value(0) }, path.Root("listen_port"), "0 is not allowed; set a value in range, or omit the attribute"},
		{"mtu 0", func(m *machineConfigModel) { m.MTU = types.Int64Value(0) }, path.Root("mtu"), "0 is not allowed"},
		{"listen port high", func(m *machineConfigModel) { m.ListenPort = types.Int64Value(70000) }, path.Root("listen_port"), "70000 is not a port; use 1..65535"},
		{"relay port high", func(m *machineConfigModel) {
			m.Relay, m.RelayPort = types.BoolValue(true), types.Int64Value(70000)
		}, path.Root("relay_port"), "70000 is not a port; use 1..65535, or 0 for the WireGuard listen port"},
		{"relay port without relay", func(m *machineConfigModel) { m.RelayPort = types.Int64Value(3478) }, path.Root("relay_port"), "3478 is set but relaying is off"},
		{"listen port huge", func(m *machineConfigModel) { m.ListenPort = types.Int64Value(1 << 40) }, path.Root("listen_port"), "is not a port"},
		{"listen port huge quoted", func(m *machineConfigModel) { m.ListenPort = types.Int64Value(1 << 40) }, path.Root("listen_port"), "1099511627776 is not a port"},
		{"mtu huge quoted", func(m *machineConfigModel) { m.MTU = types.Int64Value(-1 << 33) }, path.Root("mtu"), "-8589934592 is out of range"},
		{"mtu low", func(m *machineConfigModel) { m.MTU = types.Int64Value(1200) }, path.Root("mtu"), "1200 is out of range; use 1280..9000"},
		{"mtu high", func(m *machineConfigModel) { m.MTU = types.Int64Value(9216) }, path.Root("mtu"), "9216 is out of range"},
		{"endpoint filter", func(m *machineConfigModel) { m.EndpointFilters = mcStrs("!bogus") }, path.Root("endpoint_filters").AtListIndex(0), "is not a CIDR or IP"},
		{"extra endpoint", func(m *machineConfigModel) { m.ExtraEndpoints = mcStrs("203.0.113.9") }, path.Root("extra_endpoints").AtListIndex(0), "is not ip:port"},
		{"advertised network", func(m *machineConfigModel) { m.AdvertisedNetworks = mcStrs("10.244.1.0/33") }, path.Root("advertised_networks").AtListIndex(0), "is not a CIDR"},
		{"advertised default route", func(m *machineConfigModel) { m.AdvertisedNetworks = mcStrs("10.244.1.0/24", "::/0") }, path.Root("advertised_networks").AtListIndex(1), `"::/0" is a default route`},
		{"filters exclude", func(m *machineConfigModel) {
			m.Filters = mcFilters(mcStrs("10.0.0.1/8"), noList, testPeerKey, mcStrs("0.0.0.0/0"))
		}, path.Root("filters").AtName("exclude_advertised_networks").AtListIndex(0), "did you mean 10.0.0.0/8?"},
		{"filters peer endpoints", func(m *machineConfigModel) {
			m.Filters = mcFilters(noList, mcStrs("0.0.0.0/0", "!lan"), testPeerKey, mcStrs("0.0.0.0/0"))
		}, path.Root("filters").AtName("peer_endpoints").AtListIndex(1), `"!lan" is not a CIDR or IP`},
		{"filters approved key", func(m *machineConfigModel) {
			m.Filters = mcFilters(noList, noList, "exit-1", mcStrs("0.0.0.0/0"))
		}, path.Root("filters").AtName("approved_routes").AtListIndex(0).AtName("public_key"), "is not a WireGuard public key"},
		{"lan bypass", func(m *machineConfigModel) { m.LANBypass = mcStrs("192.168.1.7/24") }, path.Root("lan_bypass").AtListIndex(0), "did you mean 192.168.1.0/24?"},
		{"firewall default", func(m *machineConfigModel) { m.Firewall = mcFirewall("deny", mcRule("wg", "udp", "51820", noList, "")) }, path.Root("firewall").AtName("default_action"), `"deny" is not an action`},
		{"firewall protocol", func(m *machineConfigModel) { m.Firewall = mcFirewall("accept", mcRule("x", "sctp", "", noList, "")) }, path.Root("firewall").AtName("rules").AtListIndex(0).AtName("protocol"), `"sctp" is not supported`},
		{"firewall port", func(m *machineConfigModel) {
			m.Firewall = mcFirewall("accept", mcRule("x", "tcp", "80", noList, ""), mcRule("y", "tcp", "70000", noList, ""))
		}, path.Root("firewall").AtName("rules").AtListIndex(1).AtName("port"), `"70000" is not a port or range`},
		{"firewall source", func(m *machineConfigModel) {
			m.Firewall = mcFirewall("accept", mcRule("x", "tcp", "22", mcStrs("office"), ""))
		}, path.Root("firewall").AtName("rules").AtListIndex(0).AtName("sources").AtListIndex(0), `"office" is not a CIDR`},
		{"firewall action", func(m *machineConfigModel) {
			m.Firewall = mcFirewall("accept", mcRule("x", "tcp", "22", noList, "allow"))
		}, path.Root("firewall").AtName("rules").AtListIndex(0).AtName("action"), `"allow" is not an action`},
		{"install url", func(m *machineConfigModel) { m.AgentInstall = mcInstall("ftp://x/y", strings.Repeat("ab", 32), false) }, path.Root("agent_install").AtName("url"), "is not an http(s) URL"},
		{"install sha", func(m *machineConfigModel) { m.AgentInstall = mcInstall("https://x/y", "abc", false) }, path.Root("agent_install").AtName("sha256"), "64 hex digits"},
		{"install both", func(m *machineConfigModel) { m.AgentInstall = mcInstall("https://x/y", "", true) }, path.Root("agent_install"), "preinstalled = true excludes url and sha256"},
		{"install nothing", func(m *machineConfigModel) { m.AgentInstall = mcInstall("", "", false) }, path.Root("agent_install").AtName("url"), "is empty"},
		{"platform", func(m *machineConfigModel) { m.Platform = types.StringValue("aws") }, path.Root("platform"), `"aws" is not a platform; use one of digitalocean, generic, hcloud, metal`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mcValidModel()
			tc.mutate(&m)
			d := mcValidate(m)
			if d.ErrorsCount() != 1 {
				t.Fatalf("got %d errors, want 1: %v", d.ErrorsCount(), d)
			}
			e := d.Errors()[0]
			wp, ok := e.(diag.DiagnosticWithPath)
			if !ok || !wp.Path().Equal(tc.attr) {
				t.Fatalf("error %q is on %v, want %s", e.Detail(), wp, tc.attr)
			}
			if !strings.Contains(e.Detail(), tc.msg) || !strings.Contains(e.Summary(), tc.attr.String()) && e.Summary() != "Invalid "+tc.attr.String() && !strings.HasPrefix(e.Summary(), "Invalid") {
				t.Fatalf("error %q / %q, want detail containing %q", e.Summary(), e.Detail(), tc.msg)
			}
		})
	}
}

// The agent always admits the WireGuard listen port (internal/netpolicy), so
// a blocking firewall without a WireGuard rule is complete, not a mistake.
func TestMachineConfigBlockingFirewallNeedsNoWireGuardRule(t *testing.T) {
	m := mcValidModel()
	m.Firewall = mcFirewall("block", mcRule("ssh", "tcp", "22", types.ListNull(types.StringType), ""))
	if d := mcValidate(m); d.HasError() || d.WarningsCount() != 0 {
		t.Fatalf("want no diagnostics, got %v", d)
	}
}

// Unknown values (e.g. secrets created in the same apply) must not be
// reported as errors at plan time.
func TestMachineConfigUnknownsAreNotErrors(t *testing.T) {
	m := mcValidModel()
	m.ClusterID = types.StringUnknown()
	m.ClusterSecret = types.StringUnknown()
	m.DiscoveryEndpoints = types.ListNull(types.StringType)
	m.StaticPeers = types.ListUnknown(types.ObjectType{AttrTypes: peerAttrType})
	m.ListenPort = types.Int64Unknown()
	m.NodeName = types.StringUnknown()
	if d := mcValidate(m); d.HasError() {
		t.Fatalf("unknown inputs reported as errors: %v", d)
	}
}

func TestAttrPath(t *testing.T) {
	for field, want := range map[string]path.Path{
		"node.name":                             path.Root("node_name"),
		"node.labels.example.com/role":          path.Root("labels").AtMapKey("example.com/role"),
		"cluster.id":                            path.Root("cluster_id"),
		"discovery.endpoints[3]":                path.Root("discovery_endpoints").AtListIndex(3),
		"staticPeers[1].publicKey":              path.Root("static_peers").AtListIndex(1).AtName("public_key"),
		"staticPeers[0].endpoints[2]":           path.Root("static_peers").AtListIndex(0).AtName("endpoints").AtListIndex(2),
		"wireguard.listenPort":                  path.Root("listen_port"),
		"firewall.defaultAction":                path.Root("firewall").AtName("default_action"),
		"firewall.rules[2].sources[0]":          path.Root("firewall").AtName("rules").AtListIndex(2).AtName("sources").AtListIndex(0),
		"relay.port":                            path.Root("relay_port"),
		"relay.enabled":                         path.Root("relay"),
		"lanBypass[0]":                          path.Root("lan_bypass").AtListIndex(0),
		"filters.approvedRoutes[1].networks[0]": path.Root("filters").AtName("approved_routes").AtListIndex(1).AtName("networks").AtListIndex(0),
		"filters.excludeAdvertisedNetworks[2]":  path.Root("filters").AtName("exclude_advertised_networks").AtListIndex(2),
	} {
		got, ok := attrPath(field)
		if !ok || !got.Equal(want) {
			t.Errorf("attrPath(%q) = %s, %v; want %s", field, got, ok, want)
		}
	}
	for _, field := range []string{"routing.table", "health.downAfter", "wireguard.interface", "apiVersion"} {
		if _, ok := attrPath(field); ok {
			t.Errorf("attrPath(%q) maps to an attribute; the user cannot set it", field)
		}
	}
}

func TestMachineConfigRenderRoundTripAndLimits(t *testing.T) {
	m := mcValidModel()
	b := newMCBuild(&m)
	out, err := b.render()
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse([]byte(out.files.Config))
	if err != nil {
		t.Fatal(err)
	}
	if back.Node.Name != "cp-1" || back.WireGuard.ListenPort != 51820 || back.WireGuard.MTU != 1420 || len(back.Firewall.Rules) != 3 || back.Firewall.Rules[0].Action != "accept" {
		t.Fatalf("parsed config lost inputs: %+v", back)
	}
	relayM := mcValidModel()
	relayM.StaticPeers = types.ListValueMust(types.ObjectType{AttrTypes: peerAttrType}, []attr.Value{mcPeerRelay(3478)})
	if out, err := newMCBuild(&relayM).render(); err != nil {
		t.Fatal(err)
	} else if c, err := config.Parse([]byte(out.files.Config)); err != nil || c.StaticPeers[0].RelayPort != 3478 {
		t.Fatalf("a static peer's relay_port 3478 came back as %+v (%v)", c, err)
	}

	// An exit node: a default route, explicitly allowed; a member that
	// approves it and filters what it takes.
	exitM := mcValidModel()
	exitM.AdvertisedNetworks = mcStrs("0.0.0.0/0")
	exitM.AllowWideAdvertised = types.BoolValue(true)
	exitM.Filters = mcFilters(mcStrs("192.168.0.0/16"), mcStrs("0.0.0.0/0", "!10.0.0.0/8"), testPeerKey, mcStrs("0.0.0.0/0", "::/0"))
	if out, err := newMCBuild(&exitM).render(); err != nil {
		t.Fatal(err)
	} else if c, err := config.Parse([]byte(out.files.Config)); err != nil || !c.AllowWideAdvertisedNetworks ||
		!reflect.DeepEqual(c.Filters, config.Filters{
			ExcludeAdvertisedNetworks: []string{"192.168.0.0/16"}, PeerEndpoints: []string{"0.0.0.0/0", "!10.0.0.0/8"},
			ApprovedRoutes: []config.ApprovedRoute{{PublicKey: testPeerKey, Networks: []string{"0.0.0.0/0", "::/0"}}},
		}) {
		t.Fatalf("exit node and filters came back as %+v (%v)", c, err)
	}

	// 150 static peers make ~45 KiB of user data: over Hetzner's limit,
	// under DigitalOcean's.
	var ps []attr.Value
	for i := 0; i < 150; i++ {
		ps = append(ps, mcPeer("peer-"+strings.Repeat("x", 3), testPeerKey, testPeerAddress, mcStrs("203.0.113.7:51820", "[2001:db8::7]:51820"), mcStrs("10.10.0.0/16")))
	}
	m.StaticPeers = types.ListValueMust(types.ObjectType{AttrTypes: peerAttrType}, ps)
	b = newMCBuild(&m)
	_, err = b.render()
	if se, ok := err.(*mcSizeError); !ok || se.limit != 32768 || !strings.Contains(se.Error(), `platform = "metal"`) {
		t.Fatalf("hcloud render = %v, want a size error over 32768 bytes", err)
	}
	m.Platform = types.StringValue("digitalocean")
	if _, err := newMCBuild(&m).render(); err != nil {
		t.Fatalf("digitalocean render of the same config: %v", err)
	}
}

// --- acceptance tests (real terraform) ---

const hybridConfig = `
resource "meshspan_cluster_secrets" "this" {}

locals {
  discovery = ["https://discovery.example.com/"]
}

data "meshspan_machine_config" "metal" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "metal-1"
  platform            = "metal"
  discovery_endpoints = local.discovery
  labels              = { "topology.kubernetes.io/region" = "office" }
  lan_bypass          = ["192.168.10.0/24"]
  extra_endpoints     = ["198.51.100.20:51820"]
  relay               = true
  relay_port          = 3478
  agent_install       = { preinstalled = true }
}

data "meshspan_machine_config" "hcloud" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "hcloud-1"
  platform            = "hcloud"
  discovery_endpoints = local.discovery
  endpoint_filters    = ["0.0.0.0/0", "!10.0.0.0/8", "::/0"]
  agent_install = {
    url    = "https://example.com/meshspan-agent-linux-amd64"
    sha256 = "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"
  }
  firewall = {
    default_action = "block"
    rules = [
      { name = "wireguard", protocol = "udp", port = "51820" },
      { name = "talos", protocol = "tcp", port = "50000", sources = ["100.64.0.0/10"] },
      { name = "k8s-api", protocol = "tcp", port = "6443", sources = ["100.64.0.0/10"] },
    ]
  }
}

data "meshspan_machine_config" "do" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "do-1"
  platform            = "digitalocean"
  discovery_endpoints = local.discovery
  listen_port         = 51821
  mtu                 = 1380
  agent_install = {
    url    = "https://example.com/meshspan-agent-linux-amd64"
    sha256 = "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"
  }
}
`

func TestAccMachineConfigHybrid(t *testing.T) {
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: hybridConfig,
			Check: resource.ComposeTestCheckFunc(
				resource.TestCheckResourceAttr("data.meshspan_machine_config.hcloud", "listen_port", "51820"),
				resource.TestCheckResourceAttr("data.meshspan_machine_config.hcloud", "mtu", "1420"),
				resource.TestCheckResourceAttr("data.meshspan_machine_config.do", "listen_port", "51821"),
				resource.TestCheckResourceAttr("data.meshspan_machine_config.metal", "allow_down_peer_bypass", "false"),
				resource.TestCheckResourceAttrPair("data.meshspan_machine_config.metal", "mesh_prefix", "meshspan_cluster_secrets.this", "mesh_prefix"),
				checkHybridConfigs(t),
			),
		}},
	})
}

// checkHybrid parses what each node gets: the YAML config with the agent's
// parser, and the user data as YAML and with cloud-init's schema.
func checkHybridConfigs(t *testing.T) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		secrets := s.RootModule().Resources["meshspan_cluster_secrets.this"].Primary.Attributes
		want := map[string]struct {
			port, mtu int
			relay     bool
			relayPort int
			rules     int
		}{"metal": {51820, 1420, true, 3478, 0}, "hcloud": {51820, 1420, false, 0, 3}, "do": {51821, 1380, false, 0, 0}}
		for name, w := range want {
			a := s.RootModule().Resources["data.meshspan_machine_config."+name].Primary.Attributes
			c, err := config.Parse([]byte(a["machine_config"]))
			if err != nil {
				t.Errorf("%s: machine_config does not parse: %v", name, err)
				continue
			}
			if c.Cluster.ID != secrets["cluster_id"] || c.Cluster.Secret != secrets["cluster_secret"] {
				t.Errorf("%s: config does not carry the cluster secrets", name)
			}
			if c.WireGuard.ListenPort != w.port || c.WireGuard.MTU != w.mtu || c.Relay.Enabled != w.relay || c.Relay.Port != w.relayPort || len(c.Firewall.Rules) != w.rules {
				t.Errorf("%s: config %+v does not match the inputs %+v", name, c, w)
			}
			if c.Node.Name != a["node_name"] {
				t.Errorf("%s: node name %q", name, c.Node.Name)
			}
			var cc struct {
				WriteFiles []struct{ Path, Permissions, Content string } `yaml:"write_files"`
			}
			if err := yaml.Unmarshal([]byte(a["user_data"]), &cc); err != nil {
				t.Errorf("%s: user_data is not YAML: %v", name, err)
				continue
			}
			if len(cc.WriteFiles) == 0 || cc.WriteFiles[0].Path != userdata.ConfigPath || cc.WriteFiles[0].Permissions != "0600" || cc.WriteFiles[0].Content != a["machine_config"] {
				t.Errorf("%s: user_data does not write the config 0600 to %s", name, userdata.ConfigPath)
			}
			if a["bundle_files."+userdata.ConfigPath] != a["machine_config"] || !strings.HasPrefix(a["bundle_script"], "#!/bin/sh") {
				t.Errorf("%s: bundle does not carry the config", name)
			}
			checkCloudInitSchema(t, a["user_data"])
		}
		if !strings.Contains(s.RootModule().Resources["data.meshspan_machine_config.metal"].Primary.Attributes["user_data"], "preinstalled = true") {
			t.Error("metal: the install script does not check for a preinstalled agent")
		}
		return nil
	}
}

func checkCloudInitSchema(t *testing.T, ud string) {
	t.Helper()
	ci, err := exec.LookPath("cloud-init")
	if err != nil {
		t.Fatal("cloud-init is not installed; apt-get install -y cloud-init (CI does)")
	}
	f := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(f, []byte(ud), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ci, "schema", "--config-file", f).CombinedOutput(); err != nil {
		t.Errorf("cloud-init schema rejects the user data: %v\n%s", err, out)
	}
}

// TestAccMachineConfigPlanErrors: bad inputs fail at plan time, on the
// attribute, even when the secrets are not created yet.
func TestAccMachineConfigPlanErrors(t *testing.T) {
	cfg := func(extra string) string {
		return `
resource "meshspan_cluster_secrets" "this" {}
data "meshspan_machine_config" "n" {
  cluster_id          = meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = meshspan_cluster_secrets.this.cluster_secret
  node_name           = "n1"
  discovery_endpoints = ["https://discovery.example.com/"]
` + extra + `
}`
	}
	var bigPeers strings.Builder
	bigPeers.WriteString("static_peers = [\n")
	for i := 0; i < 250; i++ {
		bigPeers.WriteString(`{ public_key = "` + testPeerKey + `", address = "fd00::1", endpoints = ["203.0.113.7:51820", "[2001:db8::7]:51820"] },` + "\n")
	}
	bigPeers.WriteString("]\nplatform = \"hcloud\"\n")
	step := func(extra, re string) resource.TestStep {
		return resource.TestStep{Config: cfg(extra), PlanOnly: true, ExpectError: regexp.MustCompile(re)}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			step(`mtu = 100`, `(?s)Invalid mtu.*100 is out of range; use 1280\.\.9000`),
			step(`listen_port = 0`, `(?s)Invalid listen_port.*0 is not allowed`),
			step(`firewall = { default_action = "block", rules = [{ protocol = "tcp", port = "22-1" }] }`, `(?s)Invalid firewall\.rules\[0\]\.port.*"22-1" is not a port or range`),
			step(`platform = "aws"`, `(?s)Invalid platform.*"aws" is not a platform`),
			step(`advertised_networks = ["10.244.0.0/24", "0.0.0.0/0"]`, `(?s)Invalid advertised_networks\[1\].*"0\.0\.0\.0/0" is a default route.*allowWideAdvertisedNetworks`),
			step(`filters = { approved_routes = [{ public_key = "exit-1", networks = ["0.0.0.0/0"] }] }`, `(?s)Invalid filters\.approved_routes\[0\]\.public_key.*not a WireGuard public key`),
			step(`agent_install = { url = "https://example.com/a" }`, `(?s)agent_install\.sha256.*64 hex digits`),
			step(bigPeers.String(), `(?s)user_data too large for platform.*over the 32768 byte \(32 KiB\) limit of\s+platform\s+"hcloud"`),
		},
	})
}

func TestEphemeralMachineConfigSchemaMatches(t *testing.T) {
	ds := machineConfigSchema()
	eph := toEphemeralAttrs(ds.Attributes)
	if len(eph) != len(ds.Attributes) {
		t.Fatalf("ephemeral schema has %d attributes, data source %d", len(eph), len(ds.Attributes))
	}
	for name, a := range ds.Attributes {
		e, ok := eph[name]
		if !ok || e.IsRequired() != a.IsRequired() || e.IsOptional() != a.IsOptional() || e.IsSensitive() != a.IsSensitive() {
			t.Errorf("attribute %s differs between the data source and the ephemeral resource", name)
		}
	}
}

func TestAccMachineConfigEphemeral(t *testing.T) {
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: echoFactories(),
		Steps: []resource.TestStep{
			{
				Config: `
ephemeral "meshspan_machine_config" "bad" {
  cluster_id          = "` + testClusterID + `"
  cluster_secret      = "` + testClusterSecret + `"
  node_name           = "metal-1"
  discovery_endpoints = ["https://discovery.example.com/"]
  mtu                 = 100000
}`,
				ExpectError: regexp.MustCompile(`(?s)Invalid mtu.*100000 is out of range`),
			},
			{
				Config: `
ephemeral "meshspan_cluster_secrets" "this" {
  cluster_id     = "` + testClusterID + `"
  cluster_secret = "` + testClusterSecret + `"
}
ephemeral "meshspan_machine_config" "metal" {
  cluster_id          = ephemeral.meshspan_cluster_secrets.this.cluster_id
  cluster_secret      = ephemeral.meshspan_cluster_secrets.this.cluster_secret
  node_name           = "metal-1"
  platform            = "metal"
  discovery_endpoints = ["https://discovery.example.com/"]
  agent_install       = { preinstalled = true }
}
provider "echo" {
  data = ephemeral.meshspan_machine_config.metal
}
resource "echo" "metal" {}`,
				Check: func(s *terraform.State) error {
					a := s.RootModule().Resources["echo.metal"].Primary.Attributes
					c, err := config.Parse([]byte(a["data.machine_config"]))
					if err != nil {
						return err
					}
					if c.Node.Name != "metal-1" || c.Cluster.Secret != testClusterSecret {
						return fmt.Errorf("ephemeral machine_config carries %+v", c)
					}
					if !strings.HasPrefix(a["data.bundle_script"], "#!/bin/sh") || a["data.mesh_prefix"] != "fd7f:175a:b97c:5602::/64" {
						return fmt.Errorf("ephemeral bundle_script or mesh_prefix missing")
					}
					return nil
				},
			},
		},
	})
}
