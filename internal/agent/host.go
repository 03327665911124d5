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

// hostAddrs lists the addresses of links that are up and carry traffic,
// except skip's. Tunnels (other WireGuard or TUN links) are left out: their
// addresses are not reachable underlay endpoints, and a bridge without
// carrier (an empty docker0) is not either.
func hostAddrs(skip string) ([]netip.Addr, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("agent: list links: %w", err)
	}
	var out []netip.Addr
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
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}
