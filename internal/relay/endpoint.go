package relay

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"
)

// virtualPrefix holds the addresses of relayed endpoints. 100::/64 is the
// IPv6 discard-only prefix (RFC 6666): nothing is ever routed there, so a
// virtual endpoint can never be mistaken for, or leak to, a real one. The
// low 64 bits are the peer's relay ID and the port is the relay's slot, so
// the address survives a round trip through UAPI text, wgctrl and `wg show`.
var virtualPrefix = netip.MustParsePrefix("100::/64")

// IsVirtual reports whether a is a relayed endpoint's address.
func IsVirtual(a netip.AddrPort) bool { return virtualPrefix.Contains(a.Addr()) }

func virtualAddr(slot uint16, peer ID) netip.AddrPort {
	b := virtualPrefix.Addr().As16()
	copy(b[8:], peer[:])
	return netip.AddrPortFrom(netip.AddrFrom16(b), slot)
}

func parseVirtual(a netip.AddrPort) (slot uint16, peer ID, err error) {
	if !IsVirtual(a) || a.Port() == 0 {
		return 0, peer, fmt.Errorf("relay: %q is not a relayed endpoint (want [100::ID]:slot)", a)
	}
	b := a.Addr().As16()
	copy(peer[:], b[8:])
	return a.Port(), peer, nil
}

// Endpoint is "peer P, reached through relay R". wireguard-go treats it as
// any other endpoint; the Bind wraps what is sent to it in a relay header.
type Endpoint struct {
	Relay netip.AddrPort // the relay's underlay address
	Peer  ID             // the peer's relay ID
	virt  netip.AddrPort
	inner conn.Endpoint // the relay's endpoint on the inner bind
}

var _ conn.Endpoint = (*Endpoint)(nil)

// ClearSrc does nothing: the source is that of the inner endpoint.
func (e *Endpoint) ClearSrc() {}

// SrcToString returns "".
func (e *Endpoint) SrcToString() string { return "" }

// DstToString returns the virtual address, e.g. "[100::aabb:ccdd:eeff:11]:1".
func (e *Endpoint) DstToString() string { return e.virt.String() }

// DstToBytes returns the virtual address, used by WireGuard's cookie MACs.
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.virt.MarshalBinary()
	return b
}

// DstIP returns the virtual IP.
func (e *Endpoint) DstIP() netip.Addr { return e.virt.Addr() }

// SrcIP returns the zero address.
func (e *Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// String describes the endpoint for status output.
func (e *Endpoint) String() string { return fmt.Sprintf("relayed via %s to %s", e.Relay, e.Peer) }

// Target is a relay to register with: its underlay address and its
// WireGuard public key, which registrations are bound to (Key.Pair).
type Target struct {
	Addr netip.AddrPort
	Key  [32]byte
}
