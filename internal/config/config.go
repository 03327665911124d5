// Package config holds the meshspan machine config (apiVersion meshspan/v1):
// its schema, defaults, parser, validator and renderer. The Terraform provider
// renders it and the agent parses it with this same code, so the provider can
// never emit a config the agent rejects.
package config

import (
	"cmp"
	"net/netip"
	"time"
)

// APIVersion is the only config version this package reads and writes.
const APIVersion = "meshspan/v1"

// Kind names the document type inside APIVersion.
const Kind = "MachineConfig"

// Defaults, most of them from Talos KubeSpan so that mixed meshes behave alike.
const (
	DefaultListenPort    = 51820
	DefaultMTU           = 1420
	MinMTU               = 1280
	MaxMTU               = 9000
	DefaultInterface     = "meshspan0"
	DefaultRouteTable    = 180
	DefaultFirewallMark  = 0x20
	DefaultForceMark     = 0x40
	DefaultMarkMask      = 0x60
	DefaultRulePriority  = 32500
	DefaultKeepalive     = 5 * time.Second
	DefaultDownAfter     = 8 * time.Second
	DefaultEndpointProbe = 4 * time.Second
	DefaultDiscoveryTTL  = 30 * time.Minute
)

// Config is the agent's whole configuration, one YAML document.
type Config struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`

	Node      Node      `yaml:"node"`
	Cluster   Cluster   `yaml:"cluster"`
	Discovery Discovery `yaml:"discovery,omitempty"`
	// StaticPeers are peers known ahead of time, in addition to (or instead of)
	// those found through discovery.
	StaticPeers []StaticPeer `yaml:"staticPeers,omitempty"`
	WireGuard   WireGuard    `yaml:"wireguard"`
	// EndpointFilters is an ordered list of CIDRs or bare IPs; a leading "!"
	// removes what earlier entries admitted (same syntax as KubeSpan's
	// filters.endpoints). Empty means no filtering.
	EndpointFilters []string `yaml:"endpointFilters,omitempty"`
	// ExtraEndpoints are additional ip:port endpoints to advertise, unfiltered.
	ExtraEndpoints []string `yaml:"extraEndpoints,omitempty"`
	// AdvertisedNetworks are extra CIDRs this node routes for the mesh (pod CIDRs, LANs).
	AdvertisedNetworks []string `yaml:"advertisedNetworks,omitempty"`
	// AllowWideAdvertisedNetworks lets advertisedNetworks hold default or
	// other wide routes (see IsWide): an exit node. Peers still refuse them
	// unless they approve them (filters.approvedRoutes).
	AllowWideAdvertisedNetworks bool `yaml:"allowWideAdvertisedNetworks,omitempty"`
	// Filters restrict what this node announces and what it takes from peers.
	Filters Filters `yaml:"filters,omitempty"`
	// LANBypass CIDRs stay off the mesh: members there are reached directly.
	LANBypass []string `yaml:"lanBypass,omitempty"`
	// AllowDownPeerBypass lets traffic to a member whose peer is down fall back
	// to the underlay in plaintext. Off by default: fail closed.
	AllowDownPeerBypass bool     `yaml:"allowDownPeerBypass"`
	Routing             Routing  `yaml:"routing"`
	Health              Health   `yaml:"health"`
	Firewall            Firewall `yaml:"firewall,omitempty"`
	Relay               Relay    `yaml:"relay,omitempty"`
}

// Filters are KubeSpan's filters (Talos v1.15) plus route approvals.
type Filters struct {
	// ExcludeAdvertisedNetworks are cut from the addresses and networks this
	// node announces (and announced as excluded, so peers cut them too).
	ExcludeAdvertisedNetworks []string `yaml:"excludeAdvertisedNetworks,omitempty"`
	// PeerEndpoints filters the endpoints taken from peers, with the syntax
	// of endpointFilters. Empty: endpointFilters applies to peers as well.
	PeerEndpoints []string `yaml:"peerEndpoints,omitempty"`
	// ApprovedRoutes let named peers route wide networks through this node's
	// mesh (exit nodes); without an approval a peer's default or wide route
	// is refused.
	ApprovedRoutes []ApprovedRoute `yaml:"approvedRoutes,omitempty"`
}

// ApprovedRoute approves networks for one peer, named by its WireGuard
// public key: node names and affiliate IDs are chosen by the peer itself.
// A peer's advert inside one of Networks is accepted.
type ApprovedRoute struct {
	PublicKey string   `yaml:"publicKey"`
	Networks  []string `yaml:"networks"`
}

func (f *Filters) normalize() {
	nilIfEmpty(&f.ExcludeAdvertisedNetworks)
	nilIfEmpty(&f.PeerEndpoints)
	if len(f.ApprovedRoutes) == 0 {
		f.ApprovedRoutes = nil
	}
}

// Routes wider than these need an explicit opt-in: an IPv4 prefix shorter
// than /8 or an IPv6 one shorter than /32. 0.0.0.0/1 and 128.0.0.0/1
// together are a default route, so the line is drawn well below /1.
const (
	WideIPv4Bits = 8
	WideIPv6Bits = 32
)

// IsWide reports whether p is a default or other wide route, which a node
// only announces with allowWideAdvertisedNetworks and only takes from a
// peer with filters.approvedRoutes.
func IsWide(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() < WideIPv4Bits
	}
	return p.Bits() < WideIPv6Bits
}

// Node identifies this machine inside the cluster.
type Node struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels,omitempty"`
}

// Cluster holds the shared secrets, encoded as Talos encodes them.
type Cluster struct {
	// ID is 32 random bytes, base64 (std or URL-safe, padded). Opaque string.
	ID string `yaml:"id"`
	// Secret is 32 random bytes, base64 std: the AES-256 discovery key and the
	// WireGuard pre-shared key.
	Secret string `yaml:"secret"`
}

// Discovery configures the discovery service clients.
type Discovery struct {
	// Endpoints are discovery service URLs: https://host[:port] or
	// http://host[:port] for plaintext.
	Endpoints []string `yaml:"endpoints,omitempty"`
	// CACertificate is an optional PEM bundle trusted in addition to the
	// system roots, for self-hosted services with a private CA.
	CACertificate string `yaml:"caCertificate,omitempty"`
	// TTL of the published affiliate; re-published every TTL/2.
	TTL Duration `yaml:"ttl,omitempty"`
}

// StaticPeer is a peer configured by hand.
type StaticPeer struct {
	Name      string `yaml:"name"`
	PublicKey string `yaml:"publicKey"`
	// Address is the peer's mesh address (IPv6, inside the cluster's /64).
	Address   string   `yaml:"address"`
	Endpoints []string `yaml:"endpoints,omitempty"`
	Networks  []string `yaml:"networks,omitempty"`
	// RelayPort, when set, says the peer relays for members on this UDP
	// port at its endpoints' addresses (its relay.enabled, for clusters
	// without discovery, where members announce it themselves).
	RelayPort int `yaml:"relayPort,omitempty"`
}

// WireGuard configures the mesh interface.
type WireGuard struct {
	Interface  string `yaml:"interface"`
	ListenPort int    `yaml:"listenPort"`
	MTU        int    `yaml:"mtu"`
	// Keepalive is the longest silence from a live peer on an idle link:
	// the agent programs WireGuard's persistent keepalive at half of it,
	// because both ends restart that timer on every packet and so take
	// turns. health.downAfter must exceed it.
	Keepalive Duration `yaml:"keepalive"`
}

// Routing holds the policy routing and firewall-mark values (KubeSpan's by default).
type Routing struct {
	Table        int    `yaml:"table"`
	FirewallMark uint32 `yaml:"firewallMark"`
	ForceMark    uint32 `yaml:"forceMark"`
	MarkMask     uint32 `yaml:"markMask"`
	RulePriority int    `yaml:"rulePriority"`
}

// Health sets how fast peers are declared down and endpoints rotated.
type Health struct {
	// DownAfter: a peer with no traffic from it for this long is down.
	DownAfter Duration `yaml:"downAfter"`
	// EndpointProbe: how long a freshly chosen endpoint gets to handshake
	// before the next candidate is tried.
	EndpointProbe Duration `yaml:"endpointProbe"`
}

// Firewall is the host input firewall.
type Firewall struct {
	// DefaultAction for inbound traffic no rule matches: "accept" or "block".
	// Empty means the agent leaves the host's input policy alone.
	DefaultAction string         `yaml:"defaultAction,omitempty"`
	Rules         []FirewallRule `yaml:"rules,omitempty"`
}

// FirewallRule admits (or blocks) inbound traffic. Rules apply in order.
type FirewallRule struct {
	Name     string `yaml:"name,omitempty"`
	Protocol string `yaml:"protocol"`
	// Port is a single port "6443" or a range "30000-32767"; empty for icmp
	// or for all ports.
	Port    string   `yaml:"port,omitempty"`
	Sources []string `yaml:"sources,omitempty"`
	// Action is "accept" (default) or "block".
	Action string `yaml:"action,omitempty"`
}

// Relay lets this node forward WireGuard packets between members that
// cannot reach each other directly.
type Relay struct {
	Enabled bool `yaml:"enabled"`
	// Port to listen on; 0 means the WireGuard listen port.
	Port int `yaml:"port,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("5s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ApplyDefaults fills every unset field with its default. It is idempotent.
func (c *Config) ApplyDefaults() {
	c.APIVersion = cmp.Or(c.APIVersion, APIVersion)
	c.Kind = cmp.Or(c.Kind, Kind)
	c.WireGuard.Interface = cmp.Or(c.WireGuard.Interface, DefaultInterface)
	c.WireGuard.ListenPort = cmp.Or(c.WireGuard.ListenPort, DefaultListenPort)
	c.WireGuard.MTU = cmp.Or(c.WireGuard.MTU, DefaultMTU)
	c.WireGuard.Keepalive = cmp.Or(c.WireGuard.Keepalive, Duration(DefaultKeepalive))
	c.Discovery.TTL = cmp.Or(c.Discovery.TTL, Duration(DefaultDiscoveryTTL))
	c.Routing.Table = cmp.Or(c.Routing.Table, DefaultRouteTable)
	c.Routing.FirewallMark = cmp.Or(c.Routing.FirewallMark, DefaultFirewallMark)
	c.Routing.ForceMark = cmp.Or(c.Routing.ForceMark, DefaultForceMark)
	c.Routing.MarkMask = cmp.Or(c.Routing.MarkMask, DefaultMarkMask)
	c.Routing.RulePriority = cmp.Or(c.Routing.RulePriority, DefaultRulePriority)
	c.Health.DownAfter = cmp.Or(c.Health.DownAfter, Duration(DefaultDownAfter))
	c.Health.EndpointProbe = cmp.Or(c.Health.EndpointProbe, Duration(DefaultEndpointProbe))
	for i := range c.Firewall.Rules {
		c.Firewall.Rules[i].Action = cmp.Or(c.Firewall.Rules[i].Action, "accept")
	}
}
