// Package member holds what a cluster member publishes through discovery,
// the type the discovery client fills and the mesh logic reads: one type,
// so that the agent hands the client's view to the peer computation as it
// is, without a copy per change.
package member

import (
	"net/netip"
	"time"
)

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

// Traversal is meshspan's NAT-traversal data (relaying, rendezvous), sealed
// inside the affiliate blob (see discovery.TraversalField).
type Traversal struct {
	// RelayPort is the UDP port on which this member relays WireGuard
	// packets for other members (relay.enabled); 0: it does not relay.
	// Peers reach the relay at this member's endpoints with this port.
	RelayPort uint16
	// Rendezvous are direct attempts this member asks peers to join: both
	// sides send probes to each other's candidates from At, so that each
	// NAT sees outbound traffic to the other before the other's arrives.
	Rendezvous []Rendezvous
}

// Rendezvous asks Peer to start a direct attempt at At.
type Rendezvous struct {
	Peer [32]byte // the WireGuard public key of the member asked
	At   time.Time
}

// IsZero reports whether t carries nothing.
func (t Traversal) IsZero() bool { return t.RelayPort == 0 && len(t.Rendezvous) == 0 }
