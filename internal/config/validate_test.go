package config

import (
	"strings"
	"testing"
	"time"
)

const (
	testID     = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
	testSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	testPubKey = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

// validConfig returns a config that passes Validate, with every optional
// section filled so that each mutation below breaks exactly one thing.
func validConfig() *Config {
	c := &Config{
		Node:    Node{Name: "worker-1", Labels: map[string]string{"topology.kubernetes.io/zone": "fsn1", "role": "worker"}},
		Cluster: Cluster{ID: testID, Secret: testSecret},
		Discovery: Discovery{
			Endpoints: []string{"https://discovery.example.com/", "http://192.0.2.10:3000"},
		},
		StaticPeers: []StaticPeer{{
			Name: "metal-1", PublicKey: testPubKey, Address: "fd7f:175a:b97c:5602::1",
			Endpoints: []string{"203.0.113.7:51820", "[2001:db8::7]:51820"}, Networks: []string{"10.10.0.0/16"},
		}},
		EndpointFilters:    []string{"0.0.0.0/0", "!192.168.0.0/16", "::/0"},
		ExtraEndpoints:     []string{"198.51.100.1:40000"},
		AdvertisedNetworks: []string{"10.244.0.0/24"},
		LANBypass:          []string{"192.168.1.0/24"},
		Filters: Filters{
			ExcludeAdvertisedNetworks: []string{"10.0.0.0/8"},
			PeerEndpoints:             []string{"0.0.0.0/0", "!10.0.0.0/8"},
			ApprovedRoutes:            []ApprovedRoute{{PublicKey: testPubKey, Networks: []string{"0.0.0.0/0"}}},
		},
		Firewall: Firewall{DefaultAction: "block", Rules: []FirewallRule{
			{Name: "wireguard", Protocol: "udp", Port: "51820"},
			{Name: "k8s-api", Protocol: "tcp", Port: "6443", Sources: []string{"100.64.0.0/10"}},
			{Protocol: "tcp", Port: "30000-32767", Action: "block"},
			{Protocol: "icmp"},
		}},
		Relay: Relay{Enabled: true, Port: 51821},
	}
	c.ApplyDefaults()
	return c
}

func TestValidConfig(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("validConfig() is invalid: %v", err)
	}
}

// TestValidateErrors has one row per bad input: the field it must name and
// (part of) the message, which says what to do.
func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
		msg    string
	}{
		{"apiVersion", func(c *Config) { c.APIVersion = "meshspan/v2" }, "apiVersion", `is "meshspan/v2"; set it to "meshspan/v1"`},
		{"discovery url fragment", func(c *Config) { c.Discovery.Endpoints = []string{"https://discovery.example.com/#x"} }, "discovery.endpoints[0]", `#fragment`},
		{"endpoint filter host bits", func(c *Config) { c.EndpointFilters = []string{"10.0.0.1/8"} }, "endpointFilters[0]", `did you mean 10.0.0.0/8?`},
		{"rule name of blank lines", func(c *Config) { c.Firewall.Rules[0].Name = "\n\n" }, "firewall.rules[0].name", `printable characters`},
		{"rule name too long", func(c *Config) { c.Firewall.Rules[0].Name = strings.Repeat("n", 129) }, "firewall.rules[0].name", `at most 128`},
		{"rule port with plus", func(c *Config) { c.Firewall.Rules[1].Port = "+6443" }, "firewall.rules[1].port", `"+6443" is not a port`},
		{"too many rules", func(c *Config) {
			c.Firewall.Rules = make([]FirewallRule, 10000)
			for i := range c.Firewall.Rules {
				c.Firewall.Rules[i] = FirewallRule{Protocol: "tcp", Port: "22", Action: "accept"}
			}
		}, "firewall.rules", `has 10000 rules; at most 1000`},
		{"kind", func(c *Config) { c.Kind = "Node" }, "kind", `is "Node"; set it to "MachineConfig"`},
		{"empty node name", func(c *Config) { c.Node.Name = "" }, "node.name", `is empty; set a node name`},
		{"upper case node name", func(c *Config) { c.Node.Name = "Worker" }, "node.name", `"Worker" is not a valid node name`},
		{"node name ends with dash", func(c *Config) { c.Node.Name = "w-" }, "node.name", `"w-" is not a valid node name`},
		{"node name too long", func(c *Config) { c.Node.Name = strings.Repeat("a", 254) }, "node.name", `is not a valid node name; use at most 253`},
		{"label key", func(c *Config) { c.Node.Labels = map[string]string{"-bad": "x"} }, "node.labels.-bad", `label key "-bad" is invalid`},
		{"label prefix", func(c *Config) { c.Node.Labels = map[string]string{"Ex_ample/role": "x"} }, "node.labels.Ex_ample/role", `has an invalid prefix`},
		{"label empty prefix", func(c *Config) { c.Node.Labels = map[string]string{"/role": "x"} }, "node.labels./role", `has an invalid prefix`},
		{"label name too long", func(c *Config) { c.Node.Labels = map[string]string{strings.Repeat("a", 64): "x"} }, "node.labels." + strings.Repeat("a", 64), `is invalid; use at most 63`},
		{"label value", func(c *Config) { c.Node.Labels = map[string]string{"role": "a b"} }, "node.labels.role", `label value "a b" is invalid`},
		{"empty cluster id", func(c *Config) { c.Cluster.ID = "" }, "cluster.id", `is empty; take it from the meshspan_cluster_secrets resource`},
		{"short cluster id", func(c *Config) { c.Cluster.ID = "YWJj" }, "cluster.id", `must be 32 bytes in padded base64`},
		{"unpadded cluster id", func(c *Config) { c.Cluster.ID = strings.TrimSuffix(testID, "=") }, "cluster.id", `must be 32 bytes in padded base64`},
		{"empty secret", func(c *Config) { c.Cluster.Secret = "" }, "cluster.secret", `is empty; take it from the meshspan_cluster_secrets resource`},
		{"cluster id with newline", func(c *Config) { c.Cluster.ID = testID + "\n" }, "cluster.id", `has whitespace`},
		{"secret with crlf", func(c *Config) { c.Cluster.Secret = testSecret + "\r\n" }, "cluster.secret", `has whitespace`},
		{"url-safe secret", func(c *Config) { c.Cluster.Secret = "_-" + testSecret[2:] }, "cluster.secret", `must be 32 bytes in standard padded base64`},
		{"no peers at all", func(c *Config) { c.Discovery.Endpoints = nil; c.StaticPeers = nil }, "discovery.endpoints", `set at least one discovery endpoint URL or one static peer`},
		{"discovery scheme", func(c *Config) { c.Discovery.Endpoints = []string{"grpc://d.example.com"} }, "discovery.endpoints[0]", `is not a discovery URL; write https://`},
		{"discovery no host", func(c *Config) { c.Discovery.Endpoints = []string{"https://"} }, "discovery.endpoints[0]", `is not a discovery URL`},
		{"discovery path", func(c *Config) { c.Discovery.Endpoints = []string{"https://d.example.com/v1"} }, "discovery.endpoints[0]", `has a path, query or credentials`},
		{"discovery credentials", func(c *Config) { c.Discovery.Endpoints = []string{"https://u:p@d.example.com"} }, "discovery.endpoints[0]", `has a path, query or credentials`},
		{"discovery port", func(c *Config) { c.Discovery.Endpoints = []string{"https://d.example.com:70000"} }, "discovery.endpoints[0]", `has an invalid port; use 1..65535`},
		{"discovery duplicate", func(c *Config) { c.Discovery.Endpoints = []string{"https://d.example.com", "https://d.example.com"} }, "discovery.endpoints[1]", `is listed twice; remove the duplicate`},
		{"discovery ttl short", func(c *Config) { c.Discovery.TTL = Duration(time.Second) }, "discovery.ttl", `1s is out of range; use 1m..30m`},
		{"discovery ttl long", func(c *Config) { c.Discovery.TTL = Duration(time.Hour) }, "discovery.ttl", `out of range; use 1m..30m`},
		{"peer name", func(c *Config) { c.StaticPeers[0].Name = "Metal_1" }, "staticPeers[0].name", `"Metal_1" is not a valid node name`},
		{"peer key", func(c *Config) { c.StaticPeers[0].PublicKey = "nope" }, "staticPeers[0].publicKey", `is not a WireGuard public key`},
		{"peer address v4", func(c *Config) { c.StaticPeers[0].Address = "10.0.0.1" }, "staticPeers[0].address", `"10.0.0.1" is not an IPv6 address`},
		{"peer address mapped", func(c *Config) { c.StaticPeers[0].Address = "::ffff:10.0.0.1" }, "staticPeers[0].address", `is not an IPv6 address`},
		{"peer endpoint", func(c *Config) { c.StaticPeers[0].Endpoints = []string{"203.0.113.7"} }, "staticPeers[0].endpoints[0]", `"203.0.113.7" is not ip:port`},
		{"peer network", func(c *Config) { c.StaticPeers[0].Networks = []string{"10.10.0.1/16"} }, "staticPeers[0].networks[0]", `has host bits set; did you mean 10.10.0.0/16?`},
		{"interface", func(c *Config) { c.WireGuard.Interface = "a-very-long-interface" }, "wireguard.interface", `is not an interface name; use 1..15`},
		{"listen port 0", func(c *Config) { c.WireGuard.ListenPort = -1 }, "wireguard.listenPort", `-1 is not a port; use 1..65535`},
		{"listen port high", func(c *Config) { c.WireGuard.ListenPort = 65536 }, "wireguard.listenPort", `65536 is not a port`},
		{"mtu low", func(c *Config) { c.WireGuard.MTU = 1279 }, "wireguard.mtu", `1279 is out of range; use 1280..9000 (default 1420)`},
		{"mtu high", func(c *Config) { c.WireGuard.MTU = 9001 }, "wireguard.mtu", `9001 is out of range; use 1280..9000`},
		{"keepalive", func(c *Config) { c.WireGuard.Keepalive = Duration(time.Millisecond) }, "wireguard.keepalive", `out of range; use 1s..18h`},
		{"endpoint filter", func(c *Config) { c.EndpointFilters = []string{"0.0.0.0/0", "!nope"} }, "endpointFilters[1]", `"!nope" is not a CIDR or IP (optionally prefixed with !)`},
		{"extra endpoint", func(c *Config) { c.ExtraEndpoints = []string{"198.51.100.1"} }, "extraEndpoints[0]", `is not ip:port`},
		{"advertised network", func(c *Config) { c.AdvertisedNetworks = []string{"10.244.0.0/33"} }, "advertisedNetworks[0]", `"10.244.0.0/33" is not a CIDR`},
		{"advertised default route", func(c *Config) { c.AdvertisedNetworks = []string{"10.244.0.0/24", "0.0.0.0/0"} }, "advertisedNetworks[1]", `"0.0.0.0/0" is a default route: every member that took it would send all such traffic to this node; remove it, or if this node is an exit node set allowWideAdvertisedNetworks: true`},
		{"advertised ::/0", func(c *Config) { c.AdvertisedNetworks = []string{"::/0"} }, "advertisedNetworks[0]", `"::/0" is a default route`},
		{"advertised half the internet", func(c *Config) { c.AdvertisedNetworks = []string{"128.0.0.0/1"} }, "advertisedNetworks[0]", `"128.0.0.0/1" is a wide route`},
		{"advertised 2000::/3", func(c *Config) { c.AdvertisedNetworks = []string{"2000::/3"} }, "advertisedNetworks[0]", `is a wide route`},
		{"exclude advertised", func(c *Config) { c.Filters.ExcludeAdvertisedNetworks = []string{"10.0.0.1/8"} }, "filters.excludeAdvertisedNetworks[0]", `did you mean 10.0.0.0/8?`},
		{"peer endpoints", func(c *Config) { c.Filters.PeerEndpoints = []string{"!x"} }, "filters.peerEndpoints[0]", `"!x" is not a CIDR or IP`},
		{"approved key", func(c *Config) { c.Filters.ApprovedRoutes[0].PublicKey = "exit-1" }, "filters.approvedRoutes[0].publicKey", `is not a WireGuard public key`},
		{"approved no networks", func(c *Config) { c.Filters.ApprovedRoutes[0].Networks = nil }, "filters.approvedRoutes[0].networks", `is empty; list the networks this peer may route`},
		{"approved network", func(c *Config) { c.Filters.ApprovedRoutes[0].Networks = []string{"0/0"} }, "filters.approvedRoutes[0].networks[0]", `"0/0" is not a CIDR`},
		{"lan bypass host bits", func(c *Config) { c.LANBypass = []string{"192.168.1.1/24"} }, "lanBypass[0]", `did you mean 192.168.1.0/24?`},
		{"lan bypass garbage", func(c *Config) { c.LANBypass = []string{"lan"} }, "lanBypass[0]", `"lan" is not a CIDR`},
		{"routing table", func(c *Config) { c.Routing.Table = 253 }, "routing.table", `253 is not a usable routing table; use 1..252`},
		{"routing marks", func(c *Config) { c.Routing.ForceMark = c.Routing.FirewallMark }, "routing", `marks must be distinct and inside markMask`},
		{"routing priority", func(c *Config) { c.Routing.RulePriority = 40000 }, "routing.rulePriority", `40000 is out of range; use 1..32765`},
		{"down after", func(c *Config) { c.Health.DownAfter = c.WireGuard.Keepalive }, "health.downAfter", `must be longer than wireguard.keepalive`},
		{"endpoint probe", func(c *Config) { c.Health.EndpointProbe = Duration(time.Hour) }, "health.endpointProbe", `1h0m0s is out of range; use 1s..5m`},
		{"firewall action", func(c *Config) { c.Firewall.DefaultAction = "drop" }, "firewall.defaultAction", `"drop" is not an action; use "accept" or "block"`},
		{"firewall rules without default", func(c *Config) { c.Firewall.DefaultAction = "" }, "firewall.defaultAction", `is empty but rules are set`},
		{"rule protocol", func(c *Config) { c.Firewall.Rules[0].Protocol = "sctp" }, "firewall.rules[0].protocol", `"sctp" is not supported; use tcp, udp, icmp or icmpv6`},
		{"rule port", func(c *Config) { c.Firewall.Rules[1].Port = "0" }, "firewall.rules[1].port", `"0" is not a port or range`},
		{"rule range reversed", func(c *Config) { c.Firewall.Rules[2].Port = "32767-30000" }, "firewall.rules[2].port", `is not a port or range; write "6443" or "30000-32767"`},
		{"rule icmp port", func(c *Config) { c.Firewall.Rules[3].Port = "8" }, "firewall.rules[3].port", `is "8" but icmp has no ports; remove it`},
		{"rule source", func(c *Config) { c.Firewall.Rules[1].Sources = []string{"100.64.0.0/10", "tailscale"} }, "firewall.rules[1].sources[1]", `"tailscale" is not a CIDR`},
		{"rule action", func(c *Config) { c.Firewall.Rules[0].Action = "allow" }, "firewall.rules[0].action", `"allow" is not an action`},
		{"relay port", func(c *Config) { c.Relay.Port = 70000 }, "relay.port", `70000 is not a port; use 1..65535, or 0`},
		{"static peer relay port", func(c *Config) { c.StaticPeers[0].RelayPort = 65536 }, "staticPeers[0].relayPort", `65536 is not a port; use the peer's relay port`},
		{"relay port without relay", func(c *Config) { c.Relay = Relay{Port: 3478} }, "relay.port", `3478 is set but relaying is off; set relay.enabled: true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(c)
			errs := FieldErrors(c.Validate())
			if len(errs) != 1 {
				t.Fatalf("got %d errors %v; want exactly one on %s", len(errs), errs, tc.field)
			}
			if errs[0].Field != tc.field || !strings.Contains(errs[0].Msg, tc.msg) {
				t.Fatalf("got %s: %s\nwant %s: ...%s...", errs[0].Field, errs[0].Msg, tc.field, tc.msg)
			}
		})
	}
}

// TestWideAdvertisedNetworksOptIn: an exit node says so explicitly.
func TestWideAdvertisedNetworksOptIn(t *testing.T) {
	c := validConfig()
	c.AdvertisedNetworks = []string{"0.0.0.0/0", "::/0", "10.0.0.0/8", "2001:db8::/32"}
	if errs := FieldErrors(c.Validate()); len(errs) != 2 {
		t.Fatalf("got %v; want the two default routes refused, /8 and /32 accepted", errs)
	}
	c.AllowWideAdvertisedNetworks = true
	if err := c.Validate(); err != nil {
		t.Fatalf("with allowWideAdvertisedNetworks: %v", err)
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	c := validConfig()
	c.Node.Name = ""
	c.WireGuard.MTU = 100
	c.Firewall.Rules[0].Protocol = "gre"
	got := map[string]bool{}
	for _, fe := range FieldErrors(c.Validate()) {
		got[fe.Field] = true
	}
	for _, f := range []string{"node.name", "wireguard.mtu", "firewall.rules[0].protocol"} {
		if !got[f] {
			t.Errorf("error on %s missing; got %v", f, got)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string][2]int{"6443": {6443, 6443}, "30000-32767": {30000, 32767}, "1": {1, 1}, "65535": {65535, 65535}} {
		lo, hi, err := ParsePortRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v; want %v", in, lo, hi, err, want)
		}
	}
	for _, in := range []string{"", "0", "65536", "a", "10-", "-10", "5-4", "1-2-3", "+80", "+1-+65535", "1-+2", " 80", "0x50", "080000"} {
		if _, _, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) accepted a bad port", in)
		}
	}
}

func TestParseEndpointFilter(t *testing.T) {
	for in, want := range map[string]struct {
		p   string
		neg bool
	}{
		"0.0.0.0/0": {"0.0.0.0/0", false}, "!192.168.0.0/16": {"192.168.0.0/16", true},
		"203.0.113.7": {"203.0.113.7/32", false}, "!2001:db8::/32": {"2001:db8::/32", true},
	} {
		p, neg, err := ParseEndpointFilter(in)
		if err != nil || p.String() != want.p || neg != want.neg {
			t.Errorf("ParseEndpointFilter(%q) = %s, %v, %v; want %s, %v", in, p, neg, err, want.p, want.neg)
		}
	}
	// Host bits are refused as everywhere else, not masked silently.
	for in, hint := range map[string]string{"10.0.0.1/8": "10.0.0.0/8", "!2001:db8::1/32": "!2001:db8::/32"} {
		if _, _, err := ParseEndpointFilter(in); err == nil || !strings.Contains(err.Error(), "did you mean "+hint) {
			t.Errorf("ParseEndpointFilter(%q) = %v; want an error suggesting %s", in, err, hint)
		}
	}
}
