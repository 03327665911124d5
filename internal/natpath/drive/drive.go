// Package drive connects natpath's decisions to the live parts: the relay
// Bind (registrations, virtual endpoints, direct probes) and what the
// WireGuard device reports. Each Step reads them, asks natpath which path
// every peer should take, and returns the endpoints to set.
package drive

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
)

// Bind is what the driver needs of a relay.Bind (or a relay.Proxy for
// kernel WireGuard, which has no probes).
type Bind interface {
	SetRelays(relays []relay.Target)
	Relays() []relay.RelayState
	RelayEndpoint(relay netip.AddrPort, peer [32]byte) (netip.AddrPort, error)
}

// Prober is implemented by binds that probe direct paths (userspace).
type Prober interface {
	SetCandidates(peer [32]byte, candidates []netip.AddrPort)
	Direct(peer [32]byte) (relay.DirectState, bool)
}

// Peer is one peer as the mesh knows it.
type Peer struct {
	Key    wgtypes.Key
	Name   string
	Direct []netip.AddrPort // candidates in order
}

// RelayPinger is implemented by binds that probe relayed paths end to end
// (userspace): an idle WireGuard link can be silent at one end for good, and
// the peer's answer through the relay shows the path works.
type RelayPinger interface {
	PingVia(relay netip.AddrPort, peer [32]byte)
	Answered(relay netip.AddrPort, peer [32]byte) time.Time
}

// RelayMember is a member that offers relaying at Addr.
type RelayMember struct {
	Key  wgtypes.Key
	Name string
	Addr netip.AddrPort
}

// Observation is the device's report for one peer.
type Observation struct {
	Endpoint      netip.AddrPort
	LastHandshake time.Time
	RxBytes       int64
}

// Driver runs natpath for every peer. Not safe for concurrent use.
type Driver struct {
	bind  Bind
	t     natpath.Timing
	table *natpath.Table
	fresh time.Duration // a registration older than this does not count
	rx    map[wgtypes.Key]rxSeen
	// up are the relays that answered a registration within fresh, or did
	// and have not yet been stale on sustained evidence (natpath.Confirmer):
	// on a busy host the registration answer may be read late.
	up       map[netip.AddrPort]*natpath.Confirmer
	lastStep time.Time
	// pinged is when a relayed peer was last probed through its relay.
	pinged map[wgtypes.Key]time.Time
	// relays and registered are the last full step's: a partial step
	// (stepSome) uses them as they are.
	relays     []RelayMember
	registered map[netip.AddrPort]bool

	relaying bool
	// gen counts steps, full or partial: an rx entry holds the last that
	// stepped it, and one the last full step did not is gone
	gen uint64
}

type rxSeen struct {
	bytes int64
	at    time.Time
	gen   uint64
}

// New returns a driver for bind. fresh is how recent a relay registration
// must be for the relay to be used (3x the register interval is right).
func New(bind Bind, t natpath.Timing, fresh time.Duration) *Driver {
	return &Driver{bind: bind, t: t, table: natpath.NewTable(t), fresh: fresh, rx: map[wgtypes.Key]rxSeen{},
		up: map[netip.AddrPort]*natpath.Confirmer{}, pinged: map[wgtypes.Key]time.Time{}}
}

// Relaying reports whether any relay answered recently (as of the last Step).
func (d *Driver) Relaying() bool { return d.relaying }

// Step decides every peer's path at now.
func (d *Driver) Step(now time.Time, peers []Peer, relays []RelayMember, obs map[wgtypes.Key]Observation) map[wgtypes.Key]natpath.Status {
	return d.stepInto(make(map[wgtypes.Key]natpath.Status, len(peers)), now, peers, relays, func(k wgtypes.Key) Observation { return obs[k] })
}

// stepInto is Step writing into out (cleared first), reading each peer's
// observation from obsOf: the Chooser reuses one map across passes and
// reads the agent's observations without copying them into another.
func (d *Driver) stepInto(out map[wgtypes.Key]natpath.Status, now time.Time, peers []Peer, relays []RelayMember, obsOf func(wgtypes.Key) Observation) map[wgtypes.Key]natpath.Status {
	targets := make([]relay.Target, 0, len(relays))
	for _, r := range relays {
		targets = append(targets, relay.Target{Addr: r.Addr, Key: r.Key})
	}
	d.bind.SetRelays(targets)
	d.relays = append(d.relays[:0], relays...) // the caller may reuse its slice
	registered := map[netip.AddrPort]bool{}
	window := d.window()
	listed := map[netip.AddrPort]bool{}
	for _, st := range d.bind.Relays() {
		listed[st.Addr] = true
		fresh := !st.Registered.IsZero() && now.Sub(st.Registered) < d.fresh
		c, wasUp := d.up[st.Addr]
		switch {
		case fresh && !wasUp:
			d.up[st.Addr] = &natpath.Confirmer{}
		case wasUp && c.Observe(now, d.lastStep, window, !fresh):
			delete(d.up, st.Addr) // stale on sustained evidence: gone
		}
		registered[st.Addr] = d.up[st.Addr] != nil
	}
	for a := range d.up {
		if !listed[a] {
			delete(d.up, a)
		}
	}
	d.lastStep, d.registered = now, registered
	if on := len(registered) > 0; on != d.relaying {
		d.relaying = on
		if on {
			// natpath takes over from the agent's rotation: start from what
			// the device shows, not from what natpath thought it had set.
			d.table = natpath.NewTable(d.t)
		}
	}
	// out is overwritten, not cleared: a Status is stored boxed (it is
	// larger than a map keeps inline), and overwriting an entry reuses
	// its box where clearing would allocate a thousand new ones a pass.
	d.rx = reserve.Map(d.rx, len(peers)-len(d.rx))
	d.stepSome(out, now, peers, obsOf)
	prober, canProbe := d.bind.(Prober)
	if len(d.rx) != len(out) || len(out) != len(peers) { // some peers are gone, or out held others
		for k := range out {
			if d.rx[k].gen != d.gen {
				delete(out, k)
			}
		}
		for k, rx := range d.rx {
			if rx.gen != d.gen {
				delete(d.rx, k)
				delete(d.pinged, k)
				if canProbe {
					prober.SetCandidates(k, nil)
				}
			}
		}
	}
	if d.table.Len() != len(out) {
		d.table.Forget(func(k wgtypes.Key) bool { _, ok := out[k]; return !ok })
	}
	return out
}

// stepSome steps peers with the relays and registrations of the last full
// step, writing their status into out: stepInto's per-peer part, and on
// its own the partial step (Chooser.ChooseSome), which leaves the relays
// as they are and keeps the peers not listed (the next full step drops
// those gone).
func (d *Driver) stepSome(out map[wgtypes.Key]natpath.Status, now time.Time, peers []Peer, obsOf func(wgtypes.Key) Observation) {
	prober, canProbe := d.bind.(Prober)
	pinger, canPing := d.bind.(RelayPinger)
	window := d.window()
	d.gen++
	for _, p := range peers {
		o := obsOf(p.Key)
		rx, ok := d.rx[p.Key]
		if ok && rx.gen == d.gen {
			continue // listed twice: the first entry counts
		}
		switch {
		case o.RxBytes > rx.bytes:
			rx = rxSeen{bytes: o.RxBytes, at: now}
		case o.RxBytes < rx.bytes: // the peer was re-created on the device
			rx = rxSeen{bytes: o.RxBytes}
		}
		rx.gen = d.gen
		d.rx[p.Key] = rx
		activity := o.LastHandshake
		if rx.at.After(activity) {
			activity = rx.at
		}
		direct := slices.Clip(p.Direct)
		if slices.ContainsFunc(direct, relay.IsVirtual) {
			direct = slices.DeleteFunc(slices.Clone(direct), relay.IsVirtual) // relayed: not a direct path
		}
		pin := natpath.Input{Direct: direct, Live: o.Endpoint, LastActivity: activity, CanProbe: canProbe}
		named := map[netip.AddrPort]bool{}
		for _, r := range d.relays {
			if r.Key == p.Key || !d.registered[r.Addr] || named[r.Addr] {
				continue // a peer is never its own relay
			}
			named[r.Addr] = true
			ep, err := d.bind.RelayEndpoint(r.Addr, p.Key)
			if err != nil {
				continue
			}
			nr := natpath.Relay{Name: r.Name, Addr: r.Addr, Endpoint: ep}
			if canPing {
				nr.Answered = pinger.Answered(r.Addr, p.Key)
			}
			pin.Relays = append(pin.Relays, nr)
		}
		if canProbe {
			prober.SetCandidates(p.Key, direct)
			if ds, ok := prober.Direct(p.Key); ok {
				pin.Probed, pin.ProbedAt = ds.Addr, ds.Confirmed
			}
		}
		// Each peer's path is stepped as it is read (paths are
		// independent): no map of inputs per pass.
		st := d.table.StepPeer(now, p.Key, pin)
		out[p.Key] = st
		// A relayed peer not heard for a probe window is probed through
		// its relay, once a window: the answer keeps a working relay.
		if canPing && st.Mode == natpath.ModeRelayed && st.ViaAddr.IsValid() &&
			now.Sub(activity) >= window && now.Sub(d.pinged[p.Key]) >= window {
			d.pinged[p.Key] = now
			pinger.PingVia(st.ViaAddr, p.Key)
		}
	}
}

func (d *Driver) window() time.Duration { return cmp.Or(d.t.Probe, natpath.DefaultProbe) }

// forget drops the peers keys (they left the set) before the next full
// step would.
func (d *Driver) forget(keys []wgtypes.Key) {
	prober, canProbe := d.bind.(Prober)
	for _, k := range keys {
		if _, ok := d.rx[k]; ok {
			delete(d.rx, k)
			if canProbe {
				prober.SetCandidates(k, nil)
			}
		}
		delete(d.pinged, k)
	}
	// Every path has an rx entry (both are made together); a reset
	// table has fewer.
	if d.table.Len() > len(d.rx) {
		d.table.Forget(func(k wgtypes.Key) bool { _, ok := d.rx[k]; return !ok })
	}
}
