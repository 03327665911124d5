// Package natpath chooses, for each peer, the path WireGuard should use:
// a direct endpoint when one handshakes, a relay member otherwise. It is pure
// logic: the caller feeds it what the device and the relay Bind observed and
// the current time, and sets the endpoint it returns.
//
// Direct comes first: every candidate (advertised, discovery-observed,
// peer-observed) gets a probe window. With no handshake within the direct
// budget the peer is relayed through the first usable relay. While relayed,
// the direct path is retried: at once when a direct probe (userspace Bind)
// is answered, or, without probes (kernel WireGuard), in windows aligned to
// wall-clock multiples of RetryDirect, so both ends switch at the same moment
// and open their NATs towards each other together.
//
// WireGuard alone cannot show an idle link alive at both ends: its
// persistent keepalive timer restarts on every packet received as well as
// sent, so once one end's keepalive arrives before the other's timer fires,
// that end sends all the keepalives and hears nothing back until data flows
// or the session is renewed (2 min). The longer the path (a relay hop, a
// loaded host), the more stable that one-sidedness. A relayed path therefore
// also counts the peer's answers to probes through the relay (Relay.Answered).
//
// A working path is abandoned only on sustained evidence: silence for
// DownAfter, confirmed on at least ConfirmSteps consecutive Steps spanning a
// further Probe window (see Confirmer). On a busy host a process may not run
// for seconds; when it runs again its first look at the device is stale
// (what arrived meanwhile is still queued), so one late look decides
// nothing. A relay that really died is failed over within
// DownAfter + Probe + one Step; one that is gone from the list (it stopped
// answering registrations) at once.
package natpath

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Mode is how a peer is reached.
type Mode string

// Modes.
const (
	ModeTrying  Mode = "trying-direct" // direct candidates are being probed
	ModeDirect  Mode = "direct"
	ModeRelayed Mode = "relayed"
	ModeNoPath  Mode = "no-path" // neither direct nor any relay worked; still trying
)

// Timing holds the thresholds. Zero fields take the defaults.
type Timing struct {
	// Probe is how long one endpoint gets to handshake (health.endpointProbe).
	Probe time.Duration
	// DirectBudget is how long direct candidates are tried before relaying.
	DirectBudget time.Duration
	// DownAfter is the silence after which a working path is dead (health.downAfter).
	DownAfter time.Duration
	// RetryDirect is the period of direct retries while relayed, when no
	// direct probe results are available.
	RetryDirect time.Duration
	// RelayHold is how long a relay that failed is skipped.
	RelayHold time.Duration
}

// Defaults.
const (
	DefaultProbe        = 4 * time.Second
	DefaultDirectBudget = 12 * time.Second
	DefaultDownAfter    = 9 * time.Second
	DefaultRetryDirect  = 2 * time.Minute
	DefaultRelayHold    = time.Minute
	// ConfirmSteps is how many consecutive Steps must see a path silent
	// before it is abandoned.
	ConfirmSteps = 3
	// HandshakeRetry is WireGuard's REKEY_TIMEOUT: a handshake that got no
	// answer is sent again only after this long, whatever the endpoint
	// became meanwhile.
	HandshakeRetry = 5 * time.Second
)

func (t Timing) withDefaults() Timing {
	if t.Probe <= 0 {
		t.Probe = DefaultProbe
	}
	if t.DirectBudget <= 0 {
		t.DirectBudget = DefaultDirectBudget
	}
	if t.DownAfter <= 0 {
		t.DownAfter = DefaultDownAfter
	}
	if t.RetryDirect <= 0 {
		t.RetryDirect = DefaultRetryDirect
	}
	if t.RelayHold <= 0 {
		t.RelayHold = DefaultRelayHold
	}
	return t
}

// Relay is a member that relays (its config has relay.enabled) and is
// usable from here.
type Relay struct {
	Name string         // node name, for status
	Addr netip.AddrPort // its underlay address
	// Endpoint is what to set on the WireGuard peer to go through this relay:
	// the Bind's virtual address (userspace) or the local proxy (kernel).
	Endpoint netip.AddrPort
	// Answered is when the peer last answered a probe sent through this
	// relay (relay.Bind.PingVia; zero without). An idle WireGuard link can
	// be silent at one end for good (see Path), so on the relay in use it
	// counts as hearing the peer.
	Answered time.Time
}

// Input is what is known about one peer at one step.
type Input struct {
	// Direct are the peer's direct candidates in order: advertised, then
	// observed by discovery, then observed by other peers.
	Direct []netip.AddrPort
	// Relays usable for this peer, in order of preference (neither this node
	// nor the peer itself).
	Relays []Relay
	// Live is the device's current endpoint for the peer (WireGuard roams it
	// to wherever authenticated packets come from).
	Live netip.AddrPort
	// LastActivity is the later of the last handshake and the last receive.
	LastActivity time.Time
	// Probed is the direct address that last answered a probe, at ProbedAt
	// (userspace Bind); zero when probes are not available.
	Probed   netip.AddrPort
	ProbedAt time.Time
	// CanProbe says whether direct probes run (userspace); without them the
	// direct path is retried in wall-clock windows.
	CanProbe bool
}

// Status is the verdict for one peer after a step.
type Status struct {
	Mode     Mode
	Endpoint netip.AddrPort // in use or being tried
	Via      string         // relay node name, when relayed
	ViaAddr  netip.AddrPort // the relay's underlay address, when relayed
	Reason   string
	Since    time.Time // when Mode last changed
	// SetEndpoint, when valid, must be set on the device now.
	SetEndpoint netip.AddrPort
}

// Path follows one peer. It is not safe for concurrent use.
type Path struct {
	t Timing

	mode     Mode
	since    time.Time
	reason   string
	endpoint netip.AddrPort
	setAt    time.Time
	via      Relay

	// direct trial
	trialStart time.Time
	candidates []netip.AddrPort
	next       int
	tried      int
	retry      bool // a trial started from relayed: failure goes back quickly
	probed     bool // the trial's candidate answered a probe: give it longer

	failed     map[netip.AddrPort]time.Time // relays that carried nothing
	retryEpoch time.Time
	lastProbe  time.Time
	relaySeen  time.Time // direct, but WireGuard roamed to a relay since
	otherSince time.Time // relayed, but the peer sends through another relay since

	lastStep time.Time
	silence  Confirmer // the path in use is silent (relayed or direct)
}

// Confirmer turns a condition seen at single looks into sustained evidence:
// it holds once it was true on ConfirmSteps consecutive looks and for at
// least window since first seen. A gap between looks longer than twice the
// window (the caller was not scheduled: a busy host) restarts the count,
// because the look after such a gap is stale until the packets that queued
// meanwhile are read. Callers look far more often than that (the agent
// every second; the window, health.endpointProbe, is at least a second).
// The zero value is ready to use.
type Confirmer struct {
	since time.Time
	steps int
}

// Observe records one look at now (the previous look was at last) and
// reports whether cond is now confirmed.
func (c *Confirmer) Observe(now, last time.Time, window time.Duration, cond bool) bool {
	if !cond {
		*c = Confirmer{}
		return false
	}
	if c.since.IsZero() {
		c.since = now
	}
	if !last.IsZero() && now.Sub(last) > 2*window {
		c.steps = 0
	}
	c.steps++
	return c.steps >= ConfirmSteps && now.Sub(c.since) >= window
}

// New returns a Path with timing t.
func New(t Timing) *Path { return &Path{t: t.withDefaults(), failed: map[netip.AddrPort]time.Time{}} }

// Step advances the path to now.
func (p *Path) Step(now time.Time, in Input) Status {
	last := p.lastStep
	p.lastStep = now
	var set netip.AddrPort
	heard := !in.LastActivity.IsZero() && in.LastActivity.After(p.setAt) && now.Sub(in.LastActivity) < p.t.DownAfter
	liveRelay, liveIsRelay := relayOf(in.Relays, in.Live)
	// The path in use has carried nothing for DownAfter, sustained.
	lastHeard := p.lastHeard(in)
	heardPath := lastHeard.After(p.setAt) && now.Sub(lastHeard) < p.t.DownAfter
	silent := p.silence.Observe(now, last, p.t.Probe,
		(p.mode == ModeDirect || p.mode == ModeRelayed) && !heardPath && now.Sub(lastHeard) >= p.t.DownAfter)

	switch p.mode {
	case "":
		switch {
		case heard && in.Live.IsValid() && liveIsRelay:
			// Already working through a relay (natpath took over a live mesh).
			p.via, p.endpoint, p.setAt = liveRelay, in.Live, now
			p.retryEpoch = now.Truncate(p.t.RetryDirect)
			p.become(now, ModeRelayed, "already relayed via "+liveRelay.Name)
			return p.status(set)
		case heard && in.Live.IsValid():
			p.endpoint, p.setAt = in.Live, now
			p.become(now, ModeDirect, "already up at "+in.Live.String())
			return p.status(set)
		}
		set = p.startDirect(now, in.Direct, false, "new peer")
		if !set.IsValid() {
			set = p.relay(now, in, "the peer advertises no endpoint")
		}

	case ModeTrying:
		switch {
		case heard && in.Live.IsValid() && !liveIsRelay:
			p.become(now, ModeDirect, "handshake with "+in.Live.String())
			p.endpoint = in.Live
		case p.newProbe(now, in) && in.Probed != p.endpoint:
			// A rendezvous confirmed a candidate other than the one on
			// trial: try that one, as the peer does.
			set = p.tryProbed(now, in, p.retry)
		case heard && liveIsRelay && p.retry && p.probed && now.Sub(p.setAt) < p.window():
			// The peer still sends through the relay until our direct
			// packets reach it (it then roams to them, and so answers
			// directly); WireGuard roamed us back meanwhile. Insist.
			set = p.endpoint
		case heard && liveIsRelay:
			// The peer kept using (or chose) a relay and WireGuard roamed to it.
			p.via, p.endpoint, p.setAt = liveRelay, in.Live, now
			p.retryEpoch = now.Truncate(p.t.RetryDirect) // next retry at the next boundary
			why := "the peer reached us through a relay"
			if p.retry {
				why = "direct retry got no answer"
			}
			p.become(now, ModeRelayed, fmt.Sprintf("%s; relayed via %s", why, liveRelay.Name))
		case now.Sub(p.setAt) >= p.window():
			exhausted := p.tried >= len(p.candidates)
			if exhausted && (p.retry || now.Sub(p.trialStart) >= p.t.DirectBudget) {
				set = p.relay(now, in, fmt.Sprintf("no direct handshake within %s on %d candidate(s)", round(now.Sub(p.trialStart)), len(p.candidates)))
			} else {
				p.candidates = mergeCandidates(p.candidates, in.Direct)
				set = p.tryNext(now)
			}
		}

	case ModeDirect:
		if !liveIsRelay {
			p.relaySeen = time.Time{}
		}
		switch {
		case in.Live.IsValid() && !liveIsRelay && in.Live != p.endpoint && heard:
			p.endpoint = in.Live // WireGuard roamed: follow it
		case heard && liveIsRelay && p.relaySeen.IsZero():
			p.relaySeen = now // a stray relayed packet, or the peer gave up on direct
		case heard && liveIsRelay && now.Sub(p.relaySeen) >= p.t.Probe:
			// The peer kept sending through a relay for a probe window: our
			// direct packets do not reach it. WireGuard follows it already.
			p.via, p.endpoint, p.setAt = liveRelay, in.Live, now
			p.retryEpoch = now.Truncate(p.t.RetryDirect)
			p.become(now, ModeRelayed, "the peer reaches us only through a relay; relayed via "+liveRelay.Name)
		case silent && now.Sub(p.setAt) >= p.t.Probe:
			set = p.startDirect(now, in.Direct, false, fmt.Sprintf("direct path %s silent for %s", p.endpoint, p.silentFor(now, in)))
		}

	case ModeRelayed:
		cur, present := relayOf(in.Relays, p.via.Endpoint)
		if in.Live == p.via.Endpoint {
			p.otherSince = time.Time{}
		}
		switch {
		case !present:
			set = p.relay(now, in, fmt.Sprintf("relay %s is gone", p.via.Name))
		case heard && in.Live.IsValid() && !liveIsRelay:
			// The peer reached us directly and WireGuard roamed to it.
			p.endpoint = in.Live
			p.become(now, ModeDirect, "peer reached us directly from "+in.Live.String())
		case heard && liveIsRelay && liveRelay.Endpoint != cur.Endpoint && !p.held(liveRelay, now):
			// The peer sends through another relay and WireGuard roamed to
			// it: both ends chose at once, or the peer lost ours. Both
			// settle on the lower relay address (an order both ends share,
			// IPv4 first): ours is insisted on for a probe window, which is
			// when the peer, hearing us through it, follows; otherwise, or
			// if the peer does not, we follow.
			if p.otherSince.IsZero() {
				p.otherSince = now
			}
			if cur.Addr.Compare(liveRelay.Addr) < 0 && now.Sub(p.otherSince) < p.t.Probe {
				set = cur.Endpoint
				break
			}
			p.via, p.endpoint, p.otherSince = liveRelay, in.Live, time.Time{}
			p.become(now, ModeRelayed, "the peer uses relay "+liveRelay.Name+"; relayed via "+liveRelay.Name)
		case silent && now.Sub(p.setAt) >= p.relayGrace():
			p.failed[cur.Addr] = now
			set = p.relay(now, in, fmt.Sprintf("relay %s carried no handshake for %s", cur.Name, p.silentFor(now, in)))
		case p.newProbe(now, in):
			set = p.tryProbed(now, in, true)
		case !in.CanProbe && len(in.Direct) > 0 && now.Truncate(p.t.RetryDirect) != p.retryEpoch && now.Sub(p.since) >= p.t.Probe:
			p.retryEpoch = now.Truncate(p.t.RetryDirect)
			set = p.startDirect(now, in.Direct, true, "periodic direct retry")
		}

	case ModeNoPath:
		switch {
		case heard && in.Live.IsValid() && !liveIsRelay:
			p.endpoint = in.Live
			p.become(now, ModeDirect, "handshake with "+in.Live.String())
		case p.newProbe(now, in):
			// A rendezvous or a periodic probe got through the NATs.
			set = p.tryProbed(now, in, true)
		case usable(in.Relays, p.failed, now, p.t.RelayHold) >= 0:
			set = p.relay(now, in, "a relay became usable")
		case now.Sub(p.setAt) >= p.t.Probe:
			p.candidates = mergeCandidates(p.candidates, in.Direct)
			set = p.tryNext(now)
		}
	}
	return p.status(set)
}

// newProbe reports whether a direct probe answered since the last one acted
// on, recently enough that the path it found is still open.
func (p *Path) newProbe(now time.Time, in Input) bool {
	return in.CanProbe && in.Probed.IsValid() && in.ProbedAt.After(p.lastProbe) && now.Sub(in.ProbedAt) < p.t.DownAfter
}

// tryProbed starts a direct trial of the candidate that answered a probe.
// A probed path is known to work, so it gets the longer window.
func (p *Path) tryProbed(now time.Time, in Input, retry bool) netip.AddrPort {
	p.lastProbe = in.ProbedAt
	set := p.startDirect(now, []netip.AddrPort{in.Probed}, retry, "direct probe answered from "+in.Probed.String())
	p.probed = true
	return set
}

func (p *Path) status(set netip.AddrPort) Status {
	st := Status{Mode: p.mode, Endpoint: p.endpoint, Via: p.viaName(), Reason: p.reason, Since: p.since, SetEndpoint: set}
	if p.mode == ModeRelayed {
		st.ViaAddr = p.via.Addr
	}
	return st
}

func (p *Path) viaName() string {
	if p.mode == ModeRelayed {
		return p.via.Name
	}
	return ""
}

func (p *Path) become(now time.Time, m Mode, reason string) {
	if p.mode != m {
		p.since = now
	}
	p.mode, p.reason = m, reason
}

// window is how long the current direct endpoint gets. A probed path is
// known to work, so it gets until the next keepalive is surely through
// (DownAfter) rather than one probe window: a session already exists and
// nothing but a keepalive may cross it before then.
func (p *Path) window() time.Duration {
	if p.probed {
		return max(p.t.Probe, p.t.DownAfter)
	}
	return p.t.Probe
}

// relayGrace is how long a relay just set gets before its silence counts:
// two probe windows, and at least until WireGuard has retried a handshake
// through it (without a session, the last initiation went to the path
// before, and the next one waits HandshakeRetry) and a probe window more.
func (p *Path) relayGrace() time.Duration {
	return max(2*p.t.Probe, HandshakeRetry+p.t.Probe)
}

func round(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(10 * time.Millisecond)
}

func (p *Path) startDirect(now time.Time, cands []netip.AddrPort, retry bool, reason string) netip.AddrPort {
	p.candidates = slices.Clone(cands)
	p.next, p.tried, p.retry, p.probed, p.trialStart = 0, 0, retry, false, now
	if len(p.candidates) == 0 {
		return netip.AddrPort{}
	}
	p.become(now, ModeTrying, reason)
	return p.tryNext(now)
}

func (p *Path) tryNext(now time.Time) netip.AddrPort {
	if len(p.candidates) == 0 {
		return netip.AddrPort{}
	}
	ep := p.candidates[p.next%len(p.candidates)]
	p.next = (p.next + 1) % len(p.candidates)
	p.tried++
	p.endpoint, p.setAt = ep, now
	return ep
}

// relay moves the peer to the first usable relay, or to no-path.
func (p *Path) relay(now time.Time, in Input, why string) netip.AddrPort {
	if i := usable(in.Relays, p.failed, now, p.t.RelayHold); i >= 0 {
		p.via = in.Relays[i]
		p.endpoint, p.setAt = p.via.Endpoint, now
		p.retryEpoch = now.Truncate(p.t.RetryDirect) // next retry at the next boundary
		p.become(now, ModeRelayed, fmt.Sprintf("%s; relayed via %s", why, p.via.Name))
		return p.endpoint
	}
	reason := why + " and no relay member is available (enable relay on a node both can reach)"
	if len(in.Relays) > 0 {
		names := make([]string, len(in.Relays))
		for i, r := range in.Relays {
			names[i] = r.Name
		}
		reason = fmt.Sprintf("%s and relays %s carried no handshake", why, strings.Join(names, ", "))
	}
	p.become(now, ModeNoPath, reason)
	// Keep knocking on direct candidates: a NAT may open later.
	if len(p.candidates) == 0 {
		p.candidates = slices.Clone(in.Direct)
	}
	if ep := p.tryNext(now); ep.IsValid() {
		return ep
	}
	p.setAt = now
	return netip.AddrPort{}
}

// lastHeard is when the peer was last heard on the path in use: the
// device's last activity or, relayed, the peer's last answer through the
// relay, whichever is later.
func (p *Path) lastHeard(in Input) time.Time {
	t := in.LastActivity
	if p.mode == ModeRelayed {
		if r, ok := relayOf(in.Relays, p.via.Endpoint); ok && r.Answered.After(t) {
			t = r.Answered
		}
	}
	return t
}

// silentFor is how long the path in use has carried nothing: since the
// peer was last heard on it, or since it was set if never.
func (p *Path) silentFor(now time.Time, in Input) time.Duration {
	if t := p.lastHeard(in); t.After(p.setAt) {
		return round(now.Sub(t))
	}
	return round(now.Sub(p.setAt))
}

// held reports whether r failed within RelayHold.
func (p *Path) held(r Relay, now time.Time) bool {
	t, ok := p.failed[r.Addr]
	return ok && now.Sub(t) < p.t.RelayHold
}

func usable(relays []Relay, failed map[netip.AddrPort]time.Time, now time.Time, hold time.Duration) int {
	for i, r := range relays {
		if t, ok := failed[r.Addr]; !ok || now.Sub(t) >= hold {
			return i
		}
	}
	return -1
}

func relayOf(relays []Relay, ep netip.AddrPort) (Relay, bool) {
	for _, r := range relays {
		if r.Endpoint == ep && ep.IsValid() {
			return r, true
		}
	}
	return Relay{}, false
}

// mergeCandidates keeps the order of cur and appends what is new in latest,
// so candidates learnt during a trial (a peer-observed endpoint) join it.
func mergeCandidates(cur, latest []netip.AddrPort) []netip.AddrPort {
	for _, c := range latest {
		if !slices.Contains(cur, c) {
			cur = append(cur, c)
		}
	}
	return cur
}
