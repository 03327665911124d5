package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// FirstPhysicalMAC returns the MAC the mesh address is derived from: that of
// the first physical link by name (a veth counts, for network namespaces).
func FirstPhysicalMAC() (net.HardwareAddr, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("agent: identity: list links: %w", err)
	}
	var links []link
	for _, l := range ls {
		a := l.Attrs()
		links = append(links, link{Name: a.Name, Kind: l.Type(), MAC: a.HardwareAddr, Loopback: a.Flags&net.FlagLoopback != 0})
	}
	return firstPhysicalMAC(links)
}

// hostPrefixes lists the addresses, with their subnets, of links that are
// up and carry traffic, except skip's. Tunnels (other WireGuard or TUN
// links) are left out: their addresses are not reachable underlay
// endpoints, and a bridge without carrier (an empty docker0) is not
// either. The subnets let a peer's endpoint at a broadcast address be
// refused.
func hostPrefixes(skip string) ([]netip.Prefix, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("agent: list links: %w", err)
	}
	var out []netip.Prefix
	for _, l := range ls {
		a := l.Attrs()
		if a.Name == skip || a.Flags&net.FlagUp == 0 || (a.OperState != netlink.OperUp && a.OperState != netlink.OperUnknown) {
			continue
		}
		if kind := l.Type(); kind == "wireguard" || kind == "tuntap" || kind == "tun" {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue // the link went away meanwhile
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok {
				bits, _ := ad.Mask.Size()
				if ip.Unmap().Is4() && bits > 32 {
					bits -= 96
				}
				out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
			}
		}
	}
	return out, nil
}

// underlayMTU is the smallest MTU on the paths WireGuard's packets take:
// those of the routes to dests (the peers' endpoints), or of the default
// routes when there are none; a route's own mtu counts when lower than its
// link's. 0 when nothing is known.
func underlayMTU(dests []netip.Addr) int {
	var routes []netlink.Route
	for _, d := range dests {
		rs, err := netlink.RouteGet(d.AsSlice())
		if err == nil {
			routes = append(routes, rs...)
		}
	}
	if len(dests) == 0 {
		all, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return 0
		}
		for _, r := range all {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				routes = append(routes, r)
			}
		}
	}
	mtu := 0
	for _, r := range routes {
		m := r.MTU
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && (m == 0 || l.Attrs().MTU < m) {
			m = l.Attrs().MTU
		}
		if m > 0 && (mtu == 0 || m < mtu) {
			mtu = m
		}
	}
	return mtu
}
