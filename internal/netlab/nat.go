package netlab

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// NATMode picks how a NAT router chooses source ports on its WAN side.
type NATMode int

const (
	// NATPreservePorts is plain masquerade: the kernel keeps the source
	// port when it is free (an "easy", endpoint-independent-looking NAT).
	NATPreservePorts NATMode = iota
	// NATRandomPorts is `masquerade random`: source ports are hashed.
	NATRandomPorts
	// NATFullyRandomPorts is `masquerade fully-random`: source ports come
	// from a PRNG for every new flow.
	NATFullyRandomPorts
)

func (m NATMode) String() string {
	switch m {
	case NATPreservePorts:
		return "port-preserving"
	case NATRandomPorts:
		return "random"
	case NATFullyRandomPorts:
		return "fully-random"
	}
	return fmt.Sprintf("NATMode(%d)", int(m))
}

// Interface names the NAT router uses on its two sides.
const (
	NATLanIf = "lan0"
	NATWanIf = "wan0"
)

// NATRouter makes a router namespace joined to lan (interface lan0, lanAddr)
// and wan (interface wan0, wanAddr) that forwards and masquerades traffic
// leaving through wan0. Hosts on lan use lanAddr's address as their default
// gateway; hosts on wan see wanAddr's address as the source.
func (l *Lab) NATRouter(name string, lan, wan *Switch, lanAddr, wanAddr netip.Prefix, mode NATMode) (*NS, error) {
	if mode < NATPreservePorts || mode > NATFullyRandomPorts {
		return nil, fmt.Errorf("netlab: NAT router %q: unknown mode %d; use NATPreservePorts, NATRandomPorts or NATFullyRandomPorts", name, int(mode))
	}
	r, err := l.newNS(name)
	if err != nil {
		return nil, err
	}
	if err := lan.Attach(r, NATLanIf, lanAddr); err != nil {
		return nil, err
	}
	if err := wan.Attach(r, NATWanIf, wanAddr); err != nil {
		return nil, err
	}
	if err := r.Do(enableForwarding); err != nil {
		return nil, fmt.Errorf("netlab: NAT router %q: %w", name, err)
	}
	if err := masquerade(r, NATWanIf, mode); err != nil {
		return nil, fmt.Errorf("netlab: NAT router %q: %w", name, err)
	}
	return r, nil
}

// enableForwarding runs inside the namespace: /proc/sys/net belongs to the
// network namespace of the thread that opens it.
func enableForwarding() error {
	for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding %s: %w", p, err)
		}
	}
	return nil
}

// masquerade installs, in ns:
//
//	table inet netlab-nat { chain postrouting { type nat hook postrouting priority srcnat;
//	    oifname "<wan>" masquerade [random|fully-random] } }
func masquerade(ns *NS, wanIf string, mode NATMode) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.handle)))
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "netlab-nat"})
	ch := c.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	name := make([]byte, 16) // IFNAMSIZ, NUL padded
	copy(name, wanIf)
	c.AddRule(&nftables.Rule{
		Table: t,
		Chain: ch,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
			&expr.Masq{Random: mode == NATRandomPorts, FullyRandom: mode == NATFullyRandomPorts},
		},
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install masquerade (%s) on %q: %w", mode, wanIf, err)
	}
	return nil
}
