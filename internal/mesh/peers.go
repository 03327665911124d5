// Package mesh is the agent's pure logic: from the config, the discovered
// affiliates and what the WireGuard device reports, it computes the peers
// (AllowedIPs, candidate endpoints), the endpoints to publish, and each
// peer's state (unknown, up, down) and endpoint rotation. It does no I/O and
// reads no clock: callers pass the time in.
//
// # Down detection
//
// WireGuard only re-handshakes every two minutes, so a handshake age alone
// cannot tell a dead peer within seconds. Instead every peer gets a
// persistent keepalive of half wireguard.keepalive (see WireGuardKeepalive):
// WireGuard restarts that timer on every packet sent or received, so on an
// idle link the two ends take turns and each hears from the other at least
// every 2 × half = wireguard.keepalive (default 5 s). A peer is up while its
// last activity — the later of its last handshake and the last time its rx
// byte counter was seen to grow — is younger than health.downAfter (default
// 8 s), and down otherwise: a dead peer is noticed within downAfter plus one
// reconcile tick. A freshly chosen endpoint gets health.endpointProbe
// (default 4 s) to show activity before the next candidate is tried.
package mesh

import (
	"fmt"
	"net/netip"
	"sort"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// Affiliate is a cluster member as discovery describes it; the agent fills
// it from discovery.Affiliate (kept separate so this package stays a leaf).
type Affiliate struct {
	ID        string
	NodeName  string
	PublicKey string
	Address   netip.Addr
	// Addresses are the member's routed underlay addresses.
	Addresses []netip.Addr
	// Networks are routed to the member; ExcludeNetworks are cut from them.
	Networks        []netip.Prefix
	ExcludeNetworks []netip.Prefix
	// Endpoints are advertised and observed endpoints, in preference order.
	Endpoints []netip.AddrPort
}

// Peer is one remote node as the WireGuard device should know it.
type Peer struct {
	PublicKey wgtypes.Key
	// Name is the node name (static peer name or affiliate node name).
	Name string
	// AffiliateID is set for peers found through discovery; it is the key
	// under which endpoints observed for this peer are published.
	AffiliateID string
	// Address is the peer's mesh address.
	Address netip.Addr
	// AllowedIPs: the peer's /128 plus what it advertises, minus what it
	// excludes and minus what an earlier peer already claimed.
	AllowedIPs []netip.Prefix
	// Endpoints are the candidates to try, in order.
	Endpoints []netip.AddrPort
}

// Input is everything the peer set is computed from.
type Input struct {
	// Self is this node's public key; an affiliate carrying it is skipped.
	Self wgtypes.Key
	// Prefix is the cluster's mesh /64: a peer address outside it is refused.
	Prefix     netip.Prefix
	Static     []config.StaticPeer
	Affiliates []Affiliate
	// Filter restricts candidate endpoints to usable underlay addresses.
	Filter Filter
	// Observed holds endpoints seen live for a peer (by WireGuard, by
	// other nodes); they are tried after the advertised ones.
	Observed map[wgtypes.Key][]netip.AddrPort
}

// Peers computes the desired peer set. Static peers come first in config
// order, then affiliates ordered by ID; a peer known both ways is merged
// (static endpoints first). Where AllowedIPs of two peers overlap, the
// overlap stays with the peer processed first, as in KubeSpan. Bad entries
// are skipped, each with one warning, so one broken affiliate cannot stop
// the mesh.
func Peers(in Input) (peers []Peer, warnings []string) {
	index := map[wgtypes.Key]int{}
	add := func(p Peer, networks []netip.Prefix) {
		if i, ok := index[p.PublicKey]; ok {
			q := &peers[i]
			if q.Name == "" {
				q.Name = p.Name
			}
			if q.AffiliateID == "" {
				q.AffiliateID = p.AffiliateID
			}
			q.AllowedIPs = append(q.AllowedIPs, networks...)
			q.Endpoints = appendNew(q.Endpoints, p.Endpoints...)
			return
		}
		index[p.PublicKey] = len(peers)
		p.AllowedIPs = append([]netip.Prefix{netip.PrefixFrom(p.Address, 128)}, networks...)
		peers = append(peers, p)
	}

	for i, s := range in.Static {
		key, err := wgtypes.ParseKey(s.PublicKey)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("staticPeers[%d] (%s): public key %q does not parse; skipped", i, s.Name, s.PublicKey))
			continue
		}
		if key == in.Self {
			continue
		}
		addr, err := netip.ParseAddr(s.Address)
		if err != nil || !in.Prefix.Contains(addr) {
			warnings = append(warnings, fmt.Sprintf("staticPeers[%d] (%s): address %q is not inside the cluster prefix %s; skipped", i, s.Name, s.Address, in.Prefix))
			continue
		}
		var eps []netip.AddrPort
		for _, e := range s.Endpoints {
			if ap, err := netip.ParseAddrPort(e); err == nil {
				eps = append(eps, ap)
			}
		}
		var nets []netip.Prefix
		for _, n := range s.Networks {
			if p, err := config.ParsePrefix(n); err == nil {
				nets = append(nets, p)
			}
		}
		add(Peer{PublicKey: key, Name: s.Name, Address: addr, Endpoints: eps}, nets)
	}

	affs := append([]Affiliate(nil), in.Affiliates...)
	sort.Slice(affs, func(i, j int) bool { return affs[i].ID < affs[j].ID })
	for _, a := range affs {
		if a.PublicKey == "" {
			continue // a cluster member that is not on the mesh
		}
		key, err := wgtypes.ParseKey(a.PublicKey)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("affiliate %s (%s): public key %q does not parse; skipped", a.ID, a.NodeName, a.PublicKey))
			continue
		}
		if key == in.Self {
			continue
		}
		if !in.Prefix.Contains(a.Address) {
			warnings = append(warnings, fmt.Sprintf("affiliate %s (%s): mesh address %s is not inside the cluster prefix %s; skipped", a.ID, a.NodeName, a.Address, in.Prefix))
			continue
		}
		var nets []netip.Prefix
		for _, n := range a.Networks {
			nets = append(nets, n.Masked())
		}
		for _, ip := range a.Addresses {
			nets = append(nets, netip.PrefixFrom(ip, ip.BitLen()))
		}
		var kept []netip.Prefix
		for _, n := range nets {
			kept = append(kept, subtractPrefixes(n, a.ExcludeNetworks)...)
		}
		add(Peer{PublicKey: key, Name: a.NodeName, AffiliateID: a.ID, Address: a.Address, Endpoints: a.Endpoints}, kept)
	}

	// Candidates: advertised, then observed; filtered; no duplicates.
	for i := range peers {
		p := &peers[i]
		p.Endpoints = in.Filter.AddrPorts(appendNew(p.Endpoints, in.Observed[p.PublicKey]...))
	}

	// Overlap removal in processing order.
	claimed := newPrefixIndex()
	for i := range peers {
		p := &peers[i]
		var own []netip.Prefix
		for _, n := range p.AllowedIPs {
			parts := subtractPrefixes(n, claimed.overlapping(n))
			if len(parts) != 1 || parts[0] != n {
				warnings = append(warnings, fmt.Sprintf("peer %s: %s overlaps an earlier peer's AllowedIPs; the overlap stays with the earlier peer", p.label(), n))
			}
			for _, part := range parts {
				// The same peer may list a range twice (address inside a network).
				own = append(own, subtractPrefixes(part, own)...)
			}
		}
		sortPrefixes(own)
		p.AllowedIPs = own
		claimed.add(own...)
	}
	return peers, warnings
}

func (p *Peer) label() string {
	if p.Name != "" {
		return p.Name
	}
	return p.PublicKey.String()
}

func appendNew(list []netip.AddrPort, more ...netip.AddrPort) []netip.AddrPort {
	out := append([]netip.AddrPort(nil), list...)
	for _, ap := range more {
		if ap.IsValid() && !containsAddrPort(out, ap) {
			out = append(out, ap)
		}
	}
	return out
}
