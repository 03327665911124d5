// Package netpolicy makes the host's routing and nftables match what the mesh
// needs: traffic to members goes through the mesh interface (firewall mark,
// dedicated table, policy rules), WireGuard's own UDP is exempt, traffic to a
// member whose peer is down is dropped unless bypass is allowed, LAN-bypass
// CIDRs stay off the mesh, and the host input firewall from the config.
package netpolicy

import (
	"net/netip"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// State is everything the host policy is computed from. The agent builds a
// new one on every reconcile; Apply makes the kernel match it (level-triggered).
type State struct {
	// Interface is the mesh (WireGuard) link name; MTU its MTU.
	Interface string
	MTU       int
	// ListenPort is WireGuard's UDP port, always admitted by the host firewall.
	ListenPort int
	Routing    config.Routing
	// Routed are destinations to send through the mesh: the AllowedIPs of
	// members (their underlay addresses and advertised networks), minus mesh
	// ULA addresses (routed by the link itself) and minus LANBypass.
	Routed []netip.Prefix
	// Unreachable are destinations of members whose peer is down. With
	// AllowDownPeerBypass false they are still routed into the mesh (where
	// WireGuard drops them: fail closed); with true they are left to the
	// underlay.
	Unreachable         []netip.Prefix
	AllowDownPeerBypass bool
	// LANBypass CIDRs never go through the mesh.
	LANBypass []netip.Prefix
	// Firewall is the host input firewall; empty DefaultAction leaves input alone.
	Firewall config.Firewall
}
