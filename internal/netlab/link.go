package netlab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bridgeName is the bridge inside every switch namespace.
const bridgeName = "br0"

// Switch is a learning bridge living in its own namespace; hosts join it
// with Attach.
type Switch struct {
	ns *NS
}

// NS is the namespace holding the switch's bridge.
func (s *Switch) NS() *NS { return s.ns }

// Switch makes a namespace holding a bridge that is up.
func (l *Lab) Switch(name string) (*Switch, error) {
	ns, err := l.newNS(name)
	if err != nil {
		return nil, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := ns.nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("netlab: switch %q: add bridge: %w", name, err)
	}
	if err := ns.nl.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("netlab: switch %q: set bridge up: %w", name, err)
	}
	return &Switch{ns: ns}, nil
}

// Attach plugs ns into the switch with a veth pair: the end in ns is called
// ifname and gets addrs; both ends are brought up.
func (s *Switch) Attach(ns *NS, ifname string, addrs ...netip.Prefix) error {
	if err := checkIfname(ifname); err != nil {
		return fmt.Errorf("netlab: attach %s to switch %s: %w", ns.name, s.ns.name, err)
	}
	s.ns.mu.Lock()
	s.ns.ports++
	port := fmt.Sprintf("p%d", s.ns.ports)
	s.ns.mu.Unlock()

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      ifname,
		PeerNamespace: netlink.NsFd(int(ns.handle)),
	}
	if err := s.ns.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("netlab: attach %s/%s to switch %s: add veth: %w", ns.name, ifname, s.ns.name, err)
	}
	br, err := s.ns.nl.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("netlab: switch %s: find bridge: %w", s.ns.name, err)
	}
	p, err := s.ns.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("netlab: switch %s: find port %q: %w", s.ns.name, port, err)
	}
	if err := s.ns.nl.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("netlab: switch %s: enslave port %q: %w", s.ns.name, port, err)
	}
	if err := s.ns.nl.LinkSetUp(p); err != nil {
		return fmt.Errorf("netlab: switch %s: set port %q up: %w", s.ns.name, port, err)
	}
	return ns.setUp(ifname, addrs)
}

// LinkEnd is one end of a direct link made by Lab.Link.
type LinkEnd struct {
	NS    *NS
	Name  string // interface name inside NS, at most 15 characters
	Addrs []netip.Prefix
}

// Link joins two namespaces directly with a veth pair, gives each end its
// addresses and brings both up.
func (l *Lab) Link(a, b LinkEnd) error {
	for _, e := range []LinkEnd{a, b} {
		if e.NS == nil {
			return fmt.Errorf("netlab: link %q: namespace is nil", e.Name)
		}
		if err := checkIfname(e.Name); err != nil {
			return fmt.Errorf("netlab: link %s: %w", e.NS.name, err)
		}
	}
	// Created inside a's namespace so the names never meet the host's.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a.Name},
		PeerName:      b.Name,
		PeerNamespace: netlink.NsFd(int(b.NS.handle)),
	}
	if a.NS == b.NS {
		veth.PeerNamespace = nil
	}
	if err := a.NS.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("netlab: link %s/%s <-> %s/%s: add veth: %w", a.NS.name, a.Name, b.NS.name, b.Name, err)
	}
	if err := a.NS.setUp(a.Name, a.Addrs); err != nil {
		return err
	}
	return b.NS.setUp(b.Name, b.Addrs)
}

func (n *NS) setUp(ifname string, addrs []netip.Prefix) error {
	link, err := n.addAddrs(ifname, addrs)
	if err != nil {
		return err
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("netlab: %s: set %q up: %w", n.name, ifname, err)
	}
	return nil
}

// AddAddr adds addresses to an existing interface of the namespace.
func (n *NS) AddAddr(ifname string, addrs ...netip.Prefix) error {
	_, err := n.addAddrs(ifname, addrs)
	return err
}

// addAddrs finds ifname and adds addrs to it.
func (n *NS) addAddrs(ifname string, addrs []netip.Prefix) (netlink.Link, error) {
	link, err := n.nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: find %q: %w", n.name, ifname, err)
	}
	for _, p := range addrs {
		if err := n.addAddr(link, p); err != nil {
			return nil, err
		}
	}
	return link, nil
}

func (n *NS) addAddr(link netlink.Link, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("netlab: %s: address on %q is not a valid prefix", n.name, link.Attrs().Name)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		// Skip duplicate address detection: a tentative address would make
		// the first second of every test fail to bind or route.
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(link, a); err != nil {
		return fmt.Errorf("netlab: %s: add %s to %q: %w", n.name, p, link.Attrs().Name, err)
	}
	return nil
}

// SetMTU sets the MTU of an interface in the namespace.
func (n *NS) SetMTU(ifname string, mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("netlab: %s: MTU %d for %q out of range 68-65535", n.name, mtu, ifname)
	}
	link, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netlab: %s: find %q: %w", n.name, ifname, err)
	}
	if err := n.nl.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("netlab: %s: set MTU %d on %q: %w", n.name, mtu, ifname, err)
	}
	return nil
}

// SetMTU sets the MTU of the switch's bridge and of every port on it, so
// a switch can model a path with a small MTU.
func (s *Switch) SetMTU(mtu int) error {
	links, err := s.ns.nl.LinkList()
	if err != nil {
		return fmt.Errorf("netlab: switch %s: list links: %w", s.ns.name, err)
	}
	for _, l := range links {
		if l.Attrs().Name == "lo" {
			continue
		}
		if err := s.ns.SetMTU(l.Attrs().Name, mtu); err != nil {
			return err
		}
	}
	return nil
}

// DefaultRoute sets (or replaces) the namespace's default route via gw, for
// gw's address family.
func (n *NS) DefaultRoute(gw netip.Addr) error {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if gw.Is6() {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return n.Route(dst, gw)
}

// Route sets (or replaces) a route to dst via gw.
func (n *NS) Route(dst netip.Prefix, gw netip.Addr) error {
	if !dst.IsValid() || !gw.IsValid() || dst.Addr().Is4() != gw.Unmap().Is4() {
		return fmt.Errorf("netlab: %s: route %s via %s: need a valid destination and gateway of one family", n.name, dst, gw)
	}
	r := &netlink.Route{
		Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:  gw.Unmap().AsSlice(),
	}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("netlab: %s: route %s via %s: %w", n.name, dst, gw, err)
	}
	return nil
}

func checkIfname(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("interface name %q must be 1-15 characters", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("interface name %q has character %q; use letters, digits, '-', '_' or '.'", name, r)
		}
	}
	return nil
}
