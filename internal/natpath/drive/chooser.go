package drive

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
)

// Puncher is implemented by binds that can take part in a rendezvous.
type Puncher interface {
	Punch(peer [32]byte, at time.Time)
}

// Chooser plugs the driver into the agent (agent.Options.Paths) and
// exchanges NAT-traversal data through the sealed discovery data
// (agent.Traverser): members that relay say so, and members that reach a
// peer only through a relay, or not at all, ask it to meet (Rendezvous).
// Until a relay answers, the agent's own rotation picks endpoints, exactly
// as without NAT traversal, and Choose only reports natpath's view for
// status (advisory: direct, or no path and why); from then on natpath
// picks them.
type Chooser struct {
	Driver *Driver
	// RelayPort is published when this node relays (relay.enabled): peers
	// reach its relay at its endpoints' addresses on this port.
	RelayPort uint16
	// Rendezvous plans meetings; nil: none (kernel WireGuard, no probes).
	Rendezvous *natpath.Rendezvous
	// MTU is the mesh interface's (wireguard.mtu): status warns when
	// relayed frames of full-size packets exceed a 1500-byte IPv6 underlay.
	MTU int

	remote map[wgtypes.Key]discovery.Traversal
	last   map[wgtypes.Key]natpath.Status
	// dpeers are the last Choose's peers (last is their status), reused
	// by every Choose (a pass at a thousand peers otherwise allocates
	// anew)
	dpeers []Peer
	some   []Peer // ChooseSome's peers, during the call
	// status and choices are the maps Choose fills; the agent reads the
	// choices only until its next pass, and Traverse reads last (status)
	// before the next Choose refills it.
	status  map[wgtypes.Key]natpath.Status
	choices map[wgtypes.Key]natpath.Choice
}

// Traverse reads what peers publish and returns what this node publishes;
// it joins the meetings peers ask for and asks those it needs.
func (c *Chooser) Traverse(now time.Time, remote map[wgtypes.Key]discovery.Traversal) discovery.Traversal {
	c.remote = remote
	out := discovery.Traversal{RelayPort: c.RelayPort}
	p, ok := c.Driver.bind.(Puncher)
	if c.Rendezvous == nil || !ok {
		return out
	}
	need := map[[32]byte]bool{}
	for _, p := range c.dpeers {
		if st, ok := c.last[p.Key]; ok && st.Mode != natpath.ModeDirect && hasDirect(p.Direct) {
			need[p.Key] = true
		}
	}
	requests := map[[32]byte][]natpath.Meeting{}
	for k, t := range remote {
		for _, r := range t.Rendezvous {
			requests[k] = append(requests[k], natpath.Meeting{Peer: r.Peer, At: r.At})
		}
	}
	publish, start := c.Rendezvous.Step(now, need, requests)
	for _, m := range start {
		p.Punch(m.Peer, m.At)
	}
	for _, m := range publish[:min(len(publish), discovery.MaxRendezvous)] {
		out.Rendezvous = append(out.Rendezvous, discovery.Rendezvous{Peer: m.Peer, At: m.At})
	}
	return out
}

// Choose runs one natpath pass over the agent's peers. The map returned is
// valid until the next Choose, which reuses it.
func (c *Chooser) Choose(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]natpath.Choice {
	dpeers := drivePeers(c.dpeers[:0], peers)
	c.dpeers = dpeers
	c.status = reserve.Map(c.status, len(peers)-len(c.status))
	c.choices = reserve.Map(c.choices, len(peers)-len(c.choices))
	st := c.Driver.stepInto(c.status, now, dpeers, Relays(dpeers, c.remote), observations(obs))
	c.last = st
	advisory := !c.Driver.Relaying()
	out := c.choices
	fill := func() {
		for k, s := range st {
			out[k] = c.choice(s, advisory)
		}
	}
	// Every key of st is written; only when peers left does out hold
	// more, and then it is refilled from empty.
	if fill(); len(out) != len(st) {
		clear(out)
		fill()
	}
	return out
}

// ChooseSome steps only peers (see mesh.Tracker.StepSome) with the relays
// the last Choose found, and returns the map Choose returns, updated for
// them (valid until the next Choose or ChooseSome). Relays are registered
// and given up only by Choose.
func (c *Chooser) ChooseSome(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]natpath.Choice {
	c.some = drivePeers(c.some[:0], peers)
	// A change pass's peers are mostly new ones.
	c.status = reserve.Map(c.status, len(peers))
	c.choices = reserve.Map(c.choices, len(peers))
	c.Driver.rx = reserve.Map(c.Driver.rx, len(peers))
	c.Driver.stepSome(c.status, now, c.some, observations(obs))
	advisory := !c.Driver.Relaying() // as of the last Choose
	for _, p := range c.some {
		c.choices[p.Key] = c.choice(c.status[p.Key], advisory)
	}
	clear(c.some) // keep no candidates past the call
	return c.choices
}

// Forget drops peers that left the set. Traverse skips them until the
// next Choose (they have no status), though the last Choose listed them.
func (c *Chooser) Forget(keys []wgtypes.Key) {
	c.Driver.forget(keys)
	for _, k := range keys {
		delete(c.status, k)
		delete(c.choices, k)
	}
}

// choice is what the agent is told of a path.
func (c *Chooser) choice(s natpath.Status, advisory bool) natpath.Choice {
	reason := s.Reason
	if s.Mode == natpath.ModeRelayed && s.ViaAddr.Addr().Is6() && c.MTU > MaxRelayedMTU6 {
		reason += fmt.Sprintf("; full-size packets relayed over IPv6 exceed 1500 bytes and fragment: set wireguard.mtu to %d, or give the relay an IPv4 endpoint", MaxRelayedMTU6)
	}
	return natpath.Choice{SetEndpoint: s.SetEndpoint, Path: string(s.Mode), Via: s.Via, Reason: reason, Advisory: advisory}
}

// drivePeers appends peers, as the driver takes them, to dst.
func drivePeers(dst []Peer, peers []mesh.Peer) []Peer {
	for _, p := range peers {
		dst = append(dst, Peer{Key: p.PublicKey, Name: p.Name, Direct: p.Endpoints})
	}
	return dst
}

// observations reads the agent's observations as the driver takes them,
// without copying them into another map.
func observations(obs map[wgtypes.Key]mesh.Observation) func(wgtypes.Key) Observation {
	return func(k wgtypes.Key) Observation {
		o := obs[k]
		return Observation{Endpoint: o.Endpoint, LastHandshake: o.LastHandshake, RxBytes: o.RxBytes}
	}
}

// hasDirect reports whether candidates hold a direct (not relayed) one.
func hasDirect(candidates []netip.AddrPort) bool {
	return slices.ContainsFunc(candidates, func(ep netip.AddrPort) bool { return !relay.IsVirtual(ep) })
}

// MaxRelayedMTU6 is the largest mesh MTU whose relayed packets fit a
// 1500-byte IPv6 underlay: IPv6 and UDP headers (48), WireGuard's data
// overhead (32) and the relay header. Over IPv4 (20 bytes less) the default
// 1420 fits, which is why IPv4 relay addresses are preferred.
const MaxRelayedMTU6 = 1500 - 48 - 32 - relay.DataOverhead

// Relays lists the relays peers offer: a peer that publishes a relay port
// relays at each of its direct candidates' addresses on that port, IPv4
// addresses first.
func Relays(peers []Peer, remote map[wgtypes.Key]discovery.Traversal) []RelayMember {
	var out []RelayMember
	seen := map[netip.AddrPort]bool{}
	for _, p := range peers {
		port := remote[p.Key].RelayPort
		if port == 0 {
			continue
		}
		for _, c := range p.Direct {
			if !c.IsValid() || relay.IsVirtual(c) || c.Addr().IsLoopback() {
				continue
			}
			a := netip.AddrPortFrom(c.Addr(), port)
			if !seen[a] {
				seen[a] = true
				out = append(out, RelayMember{Key: p.Key, Name: p.Name, Addr: a})
			}
		}
	}
	// IPv4 first: a relayed full-size packet fits 1500 bytes there.
	slices.SortStableFunc(out, func(x, y RelayMember) int { return cmp.Compare(x.Addr.Addr().BitLen(), y.Addr.Addr().BitLen()) })
	return out
}
