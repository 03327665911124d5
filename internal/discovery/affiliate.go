// Package discovery is meshspan's side of the KubeSpan discovery protocol: the
// self-hostable server (memory+snapshot and Redis stores) and the client the
// agent uses to publish its sealed affiliate and watch its peers'.
package discovery

import "net/netip"

// Affiliate is one cluster member as its (decrypted) discovery data describes
// it. The same type describes the local node when publishing.
type Affiliate struct {
	// ID is the affiliate ID (Talos: the node ID, 32 random bytes in base62).
	ID       string
	NodeName string
	Hostname string
	// MachineType is controlplane, worker, init or unknown (Talos); meshspan
	// publishes "unknown" unless labels say otherwise.
	MachineType     string
	OperatingSystem string
	// PublicKey is the WireGuard public key, base64. Empty: not a mesh member.
	PublicKey string
	// Address is the node's mesh (KubeSpan) address.
	Address netip.Addr
	// Addresses are the node's routed underlay addresses.
	Addresses []netip.Addr
	// Networks are additional networks routed to this node (KubeSpan
	// additional_addresses).
	Networks []netip.Prefix
	// ExcludeNetworks are subtracted from this node's AllowedIPs by peers.
	ExcludeNetworks []netip.Prefix
	// Endpoints are WireGuard endpoints to try, in order: what the node
	// advertises, then what others observed for it.
	Endpoints []netip.AddrPort
	// Traversal is meshspan's NAT-traversal data (relaying, rendezvous);
	// zero for Talos nodes.
	Traversal Traversal
}
