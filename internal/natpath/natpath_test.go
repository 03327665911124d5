package natpath

import (
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	t0 = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	c0 = netip.MustParseAddrPort("192.0.2.10:51820")
	c1 = netip.MustParseAddrPort("203.0.113.10:51820")
	r1 = Relay{Name: "relay-1", Addr: netip.MustParseAddrPort("198.51.100.1:51820"), Endpoint: netip.MustParseAddrPort("[100::1]:1")}
	r2 = Relay{Name: "relay-2", Addr: netip.MustParseAddrPort("198.51.100.2:51820"), Endpoint: netip.MustParseAddrPort("[100::1]:2")}
)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// peer simulates the device side: it remembers the endpoint set and when
// the peer was last heard.
type peer struct {
	t    *testing.T
	p    *Path
	in   Input
	last Status
}

func newPeer(t *testing.T, in Input) *peer { return &peer{t: t, p: New(Timing{}), in: in} }

func (s *peer) step(sec float64) Status {
	s.t.Helper()
	st := s.p.Step(at(sec), s.in)
	if st.SetEndpoint.IsValid() {
		s.in.Live = st.SetEndpoint
	}
	s.last = st
	return st
}

// hear records traffic from the peer at sec, arriving from live.
func (s *peer) hear(sec float64, live netip.AddrPort) {
	s.in.LastActivity = at(sec)
	s.in.Live = live
}

func want(t *testing.T, st Status, mode Mode, set netip.AddrPort, reason string) {
	t.Helper()
	if st.Mode != mode || st.SetEndpoint != set || !strings.Contains(st.Reason, reason) {
		t.Fatalf("status = %+v\nwant mode %s, set %v, reason containing %q", st, mode, set, reason)
	}
}

func TestDirectFirstCandidate(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1}})
	want(t, s.step(0), ModeTrying, c0, "new peer")
	want(t, s.step(1), ModeTrying, netip.AddrPort{}, "new peer")
	s.hear(1.5, c0)
	st := s.step(2)
	want(t, st, ModeDirect, netip.AddrPort{}, "handshake with "+c0.String())
	if st.Endpoint != c0 || st.Via != "" || !st.Since.Equal(at(2)) {
		t.Errorf("status %+v", st)
	}
}

func TestFallsBackToRelayAfterBudget(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1, r2}})
	want(t, s.step(0), ModeTrying, c0, "")
	want(t, s.step(4), ModeTrying, c1, "")
	want(t, s.step(8), ModeTrying, c0, "") // every candidate tried, budget not spent
	st := s.step(12)
	want(t, st, ModeRelayed, r1.Endpoint, "no direct handshake within 12s on 2 candidate(s); relayed via relay-1")
	if st.Via != "relay-1" {
		t.Errorf("via %q", st.Via)
	}
	// The relay carries the handshake: stays relayed.
	s.hear(12.5, r1.Endpoint)
	want(t, s.step(13), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	for sec := 14.0; sec < 60; sec++ {
		s.hear(sec-0.5, r1.Endpoint)
		want(t, s.step(sec), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	}
}

func relayed(t *testing.T, in Input) *peer {
	t.Helper()
	s := newPeer(t, in)
	for _, sec := range []float64{0, 4, 8, 12} {
		s.step(sec)
	}
	if s.last.Mode != ModeRelayed {
		t.Fatalf("setup: not relayed: %+v", s.last)
	}
	s.hear(12.5, s.last.Endpoint)
	s.step(13)
	return s
}

// tick is how often the agent steps natpath (agent.DefaultTick).
const tick = 1.0

// firstSet steps s every tick from `from` up to `to` and returns the time
// and status of the first Step that sets an endpoint; it fails the test if
// none does. keep is called before each Step (to feed traffic).
func (s *peer) firstSet(from, to float64, keep func(sec float64)) (float64, Status) {
	s.t.Helper()
	for sec := from; sec <= to; sec += tick {
		if keep != nil {
			keep(sec)
		}
		if st := s.step(sec); st.SetEndpoint.IsValid() {
			return sec, st
		}
	}
	s.t.Fatalf("no endpoint set between +%vs and +%vs: %+v", from, to, s.last)
	return 0, Status{}
}

// failoverBound is how long after the last packet a dead path is given up:
// silence for DownAfter, confirmed for one more Probe window, plus a tick.
var failoverBound = (DefaultDownAfter + DefaultProbe).Seconds() + tick

func TestRelayFailover(t *testing.T) {
	// The relay dies after the peer's last packet at 12.5: nothing heard for
	// DownAfter, confirmed over a further Probe window -> next relay, within
	// the documented bound and not before the evidence is in.
	s := relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	want(t, s.step(20), ModeRelayed, netip.AddrPort{}, "relay-1")
	sec, st := s.firstSet(21, 60, nil)
	want(t, st, ModeRelayed, r2.Endpoint, "relay relay-1 carried no handshake for 14s; relayed via relay-2")
	if min := 12.5 + (DefaultDownAfter + DefaultProbe).Seconds(); sec < min || sec > 12.5+failoverBound {
		t.Errorf("failed over at +%vs, want within [%v, %v]", sec, min, 12.5+failoverBound)
	}

	// The relay leaves the cluster (removed from the list): switch at once.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	s.in.Relays = []Relay{r2}
	want(t, s.step(14), ModeRelayed, r2.Endpoint, "relay relay-1 is gone; relayed via relay-2")
}

// TestQuietEndAnsweringThroughTheRelayIsKept: on an idle relayed link the
// peer's WireGuard sends nothing (our keepalives keep restarting its
// keepalive timer), but the peer answers probes through the relay: the
// relay is kept. When the answers stop too, it is failed over within the
// documented bound, counted from the last answer.
func TestQuietEndAnsweringThroughTheRelayIsKept(t *testing.T) {
	// Probing (userspace), so no periodic direct retry interrupts.
	s := relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}, CanProbe: true})
	answer := func(sec float64) {
		s.in.Relays = []Relay{r1, r2}
		s.in.Relays[0].Answered = at(sec)
	}
	for sec := 14.0; sec <= 120; sec += tick {
		if int(sec)%4 == 0 { // a probe every health.endpointProbe
			answer(sec - 0.3)
		}
		want(t, s.step(sec), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	}
	// An answer through another relay than the one in use proves nothing
	// about ours.
	s.in.Relays[1].Answered = at(150)
	sec, st := s.firstSet(121, 200, nil)
	want(t, st, ModeRelayed, r2.Endpoint, "relay relay-1 carried no handshake for 13s; relayed via relay-2")
	if lo := 119.7 + (DefaultDownAfter + DefaultProbe).Seconds(); sec < lo || sec > 119.7+failoverBound {
		t.Errorf("failed over at +%vs, want within [%v, %v] of the last answer at +119.7s", sec, lo, 119.7+failoverBound)
	}
}

// TestLateButAliveRelayIsKept: a relay that carries the peer's traffic is
// kept even when single looks see it silent: the peer (or this process) is
// late on a busy host, the path is not dead.
func TestLateButAliveRelayIsKept(t *testing.T) {
	noSet := netip.AddrPort{}
	// This process is not scheduled for 17 s: its first look afterwards is
	// stale (the peer's packets are still queued); the next one sees them.
	s := relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	want(t, s.step(30), ModeRelayed, noSet, "relay-1")
	s.hear(30.1, r1.Endpoint)
	want(t, s.step(30.2), ModeRelayed, noSet, "relay-1")

	// The peer is late by a second or two, again and again: every 10 s its
	// traffic arrives, so looks at DownAfter (9 s) see silence, once each.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	for sec := 14.0; sec < 120; sec += tick {
		if int(sec)%10 == 2 {
			s.hear(sec-0.2, r1.Endpoint)
		}
		want(t, s.step(sec), ModeRelayed, noSet, "relay-1")
	}

	// Silence seen on two looks, then the process stalls for 12 s: the look
	// after the stall does not complete the evidence, the one after it sees
	// the traffic that queued.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	for _, sec := range []float64{14, 16, 18, 20, 22, 23, 35} {
		want(t, s.step(sec), ModeRelayed, noSet, "relay-1")
	}
	s.hear(35.05, r1.Endpoint)
	want(t, s.step(35.2), ModeRelayed, noSet, "relay-1")
	if s.last.Via != "relay-1" || !s.last.Since.Equal(at(12)) {
		t.Errorf("status %+v, want relayed via relay-1 since +12s", s.last)
	}
}

// TestBothEndsSettleOnOneRelay: the peer sends through another relay than
// ours (both ends relayed at once, picking differently, or it lost ours)
// and WireGuard roamed to it. Both ends settle on the lower relay address:
// the end on it insists for a probe window, the other follows at once; if
// the peer does not follow, we do. Nothing changes the mode.
func TestBothEndsSettleOnOneRelay(t *testing.T) {
	// Ours (relay-1) is the lower: insist, and the peer follows.
	s := relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	s.hear(14, r2.Endpoint)
	want(t, s.step(14.2), ModeRelayed, r1.Endpoint, "relayed via relay-1")
	s.hear(14.5, r1.Endpoint)
	want(t, s.step(15), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	// ...but if the peer keeps using relay-2 (it cannot use relay-1), we
	// follow it after a probe window.
	for sec := 16.0; sec < 20; sec++ {
		s.hear(sec-0.5, r2.Endpoint)
		want(t, s.step(sec), ModeRelayed, r1.Endpoint, "relayed via relay-1")
	}
	s.hear(19.5, r2.Endpoint)
	st := s.step(20)
	want(t, st, ModeRelayed, netip.AddrPort{}, "the peer uses relay relay-2; relayed via relay-2")
	if st.Via != "relay-2" || st.ViaAddr != r2.Addr || !st.Since.Equal(at(12)) {
		t.Errorf("status %+v, want via relay-2 since +12s", st)
	}
	// Theirs is the lower: follow at once.
	s.hear(21, r1.Endpoint)
	want(t, s.step(21.2), ModeRelayed, netip.AddrPort{}, "the peer uses relay relay-1; relayed via relay-1")

	// A relay that just failed is not followed back on a stray packet.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1, r2}})
	sec, st := s.firstSet(14, 60, nil)
	want(t, st, ModeRelayed, r2.Endpoint, "relayed via relay-2")
	s.hear(sec+0.1, r1.Endpoint)
	st = s.step(sec + 0.2)
	if st.Via != "relay-2" || st.SetEndpoint.IsValid() {
		t.Errorf("followed a stray packet back to the failed relay: %+v", st)
	}
}

func TestNoPath(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0}})
	s.step(0)
	s.step(4)
	s.step(8)
	st := s.step(12)
	want(t, st, ModeNoPath, c0, "no direct handshake within 12s on 1 candidate(s) and no relay member is available")
	// Still knocking on the direct candidate.
	want(t, s.step(16), ModeNoPath, c0, "no relay member")

	// The only relay fails too: no path, naming it.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}})
	sec, st := s.firstSet(14, 60, nil)
	want(t, st, ModeNoPath, c0, "relays relay-1 carried no handshake")
	// A relay that comes back after its hold is used again.
	s.in.Relays = []Relay{r1, r2}
	want(t, s.step(sec+0.4), ModeRelayed, r2.Endpoint, "a relay became usable; relayed via relay-2")
}

// TestProbeEndsNoPath: with no relay at all, a probe that gets through
// (a rendezvous opened both NATs) starts a direct trial at once.
func TestProbeEndsNoPath(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, CanProbe: true})
	for _, sec := range []float64{0, 4, 8} {
		s.step(sec)
	}
	want(t, s.step(12), ModeNoPath, c1, "no relay member")
	s.in.Probed, s.in.ProbedAt = c0, at(13)
	want(t, s.step(13.2), ModeTrying, c0, "direct probe answered from "+c0.String())
	s.hear(13.4, c0)
	want(t, s.step(14), ModeDirect, netip.AddrPort{}, "handshake with "+c0.String())
}

func TestNoEndpointsGoesStraightToRelay(t *testing.T) {
	s := newPeer(t, Input{Relays: []Relay{r1}})
	want(t, s.step(0), ModeRelayed, r1.Endpoint, "the peer advertises no endpoint; relayed via relay-1")
	// Nothing ever comes through it: it gets until WireGuard has retried
	// its handshake (HandshakeRetry) and a probe window more, and the
	// silence is counted from when it was set.
	for sec := 1.0; sec < 9; sec += tick {
		want(t, s.step(sec), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	}
	want(t, s.step(9), ModeNoPath, netip.AddrPort{}, "relay relay-1 carried no handshake for 9s and relays relay-1 carried no handshake")

	// With short probe windows (1 s), too: a relay is not judged before
	// WireGuard has sent a handshake through it.
	s = &peer{t: t, p: New(Timing{Probe: time.Second, DownAfter: 3 * time.Second}), in: Input{Relays: []Relay{r1}}}
	want(t, s.step(0), ModeRelayed, r1.Endpoint, "relayed via relay-1")
	for sec := 0.2; sec < 6; sec += 0.2 {
		want(t, s.step(sec), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	}
	s.hear(5.5, r1.Endpoint) // WireGuard's retried handshake came through
	for sec := 6.0; sec < 8; sec += 0.2 {
		want(t, s.step(sec), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	}
}

func TestProbeBringsDirectBack(t *testing.T) {
	s := relayed(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1}, CanProbe: true})
	s.hear(29, r1.Endpoint)
	s.in.Probed, s.in.ProbedAt = c1, at(29.5)
	want(t, s.step(30), ModeTrying, c1, "direct probe answered from "+c1.String())
	s.hear(30.2, c1)
	st := s.step(31)
	want(t, st, ModeDirect, netip.AddrPort{}, "handshake with "+c1.String())

	// The peer keeps sending through the relay until our direct packets
	// reach it, and WireGuard roams us back meanwhile: the direct endpoint
	// is set again, until the peer answers directly.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}, CanProbe: true})
	s.in.Probed, s.in.ProbedAt = c0, at(13.5)
	want(t, s.step(14), ModeTrying, c0, "direct probe")
	s.hear(14.5, r1.Endpoint)
	want(t, s.step(15), ModeTrying, c0, "direct probe answered")
	s.hear(15.5, c0)
	want(t, s.step(16), ModeDirect, netip.AddrPort{}, "handshake with "+c0.String())

	// A probe that answered but whose path WireGuard cannot use: the peer
	// only ever answers through the relay. After the probed window
	// (DownAfter), back to the relay.
	s = relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}, CanProbe: true})
	s.in.Probed, s.in.ProbedAt = c0, at(13.5)
	want(t, s.step(14), ModeTrying, c0, "direct probe")
	for sec := 14.5; sec < 22.9; sec++ {
		s.hear(sec, r1.Endpoint)
		want(t, s.step(sec+0.2), ModeTrying, c0, "direct probe answered")
	}
	s.hear(23.1, r1.Endpoint)
	want(t, s.step(23.2), ModeRelayed, netip.AddrPort{}, "direct retry got no answer; relayed via relay-1")
	// The same probe result is not acted on twice.
	s.hear(23.5, r1.Endpoint)
	want(t, s.step(24), ModeRelayed, netip.AddrPort{}, "")
	// A probed retry that hears nothing at all gets DownAfter (a keepalive
	// surely crosses by then), then goes back to the relay.
	s.in.Probed, s.in.ProbedAt = c0, at(24.5)
	want(t, s.step(25), ModeTrying, c0, "")
	want(t, s.step(33.9), ModeTrying, netip.AddrPort{}, "")
	want(t, s.step(34), ModeRelayed, r1.Endpoint, "no direct handshake within 9s on 1 candidate(s); relayed via relay-1")
}

// TestProbeRedirectsTrial: while candidates are tried in turn, a probe
// answered by another one (a rendezvous) moves the trial there at once.
func TestProbeRedirectsTrial(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1}, CanProbe: true})
	want(t, s.step(0), ModeTrying, c0, "new peer")
	s.in.Probed, s.in.ProbedAt = c1, at(1.5)
	want(t, s.step(2), ModeTrying, c1, "direct probe answered from "+c1.String())
	// The probed candidate gets DownAfter, not one probe window.
	want(t, s.step(7), ModeTrying, netip.AddrPort{}, "")
	s.hear(8, c1)
	want(t, s.step(8.5), ModeDirect, netip.AddrPort{}, "handshake with "+c1.String())
}

func TestPeriodicRetryWithoutProbes(t *testing.T) {
	// Kernel WireGuard: no probes; retry in wall-clock windows, so both ends
	// (whose clocks agree) switch together.
	s := relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}})
	var retryAt float64 = -1
	for sec := 14.0; sec <= 200; sec++ {
		s.hear(sec-0.5, r1.Endpoint)
		st := s.step(sec)
		if st.Mode == ModeTrying {
			retryAt = sec
			want(t, st, ModeTrying, c0, "periodic direct retry")
			break
		}
	}
	if retryAt != 120 { // t0 is 02:00:00; the first 2-minute boundary after relaying
		t.Fatalf("direct retry at +%vs, want at the 2-minute boundary (+120s)", retryAt)
	}
	s.hear(120.3, c0)
	want(t, s.step(121), ModeDirect, netip.AddrPort{}, "handshake with")
}

func TestDirectPathDiesAndRecovers(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1}})
	s.step(0)
	s.hear(0.5, c0)
	want(t, s.step(1), ModeDirect, netip.AddrPort{}, "")
	// WireGuard roamed to another address of the peer: follow, no set.
	s.hear(2, c1)
	st := s.step(3)
	if st.Mode != ModeDirect || st.Endpoint != c1 || st.SetEndpoint.IsValid() {
		t.Fatalf("after roam: %+v", st)
	}
	// Silence: back to trying direct candidates from the start, once it
	// lasted DownAfter and a further Probe window.
	sec, st := s.firstSet(4, 60, nil)
	want(t, st, ModeTrying, c0, "direct path "+c1.String()+" silent for 13s")
	if sec != 2+(DefaultDownAfter+DefaultProbe).Seconds() {
		t.Errorf("gave up the direct path at +%vs, want +%vs", sec, 2+(DefaultDownAfter+DefaultProbe).Seconds())
	}
	// A direct path whose traffic is late, not gone, is kept.
	s = newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1}})
	s.step(0)
	s.hear(0.5, c0)
	for sec := 1.0; sec < 120; sec += tick {
		if int(sec)%11 == 0 { // 11 s apart: past DownAfter for two looks
			s.hear(sec-0.1, c0)
		}
		want(t, s.step(sec), ModeDirect, netip.AddrPort{}, "handshake with "+c0.String())
	}
}

// TestDirectButPeerUsesRelay: a path that works one way only. Our direct
// packets do not reach the peer, which keeps sending through a relay;
// WireGuard roams to it. A stray relayed packet changes nothing, a relay
// that stays for a probe window does.
func TestDirectButPeerUsesRelay(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}, CanProbe: true})
	s.step(0)
	s.hear(0.5, c0)
	want(t, s.step(1), ModeDirect, netip.AddrPort{}, "handshake")
	s.hear(1.5, r1.Endpoint) // stray: the peer's last relayed packet
	want(t, s.step(2), ModeDirect, netip.AddrPort{}, "handshake")
	s.hear(2.5, c0)
	want(t, s.step(3), ModeDirect, netip.AddrPort{}, "handshake")
	for _, sec := range []float64{4, 5, 6, 7} {
		s.hear(sec-0.5, r1.Endpoint)
		want(t, s.step(sec), ModeDirect, netip.AddrPort{}, "handshake")
	}
	s.hear(7.5, r1.Endpoint)
	st := s.step(8)
	want(t, st, ModeRelayed, netip.AddrPort{}, "the peer reaches us only through a relay; relayed via relay-1")
	if st.Via != "relay-1" || st.ViaAddr != r1.Addr {
		t.Fatalf("status %+v, want via relay-1 at %s", st, r1.Addr)
	}
}

func TestPeerReachesUsDirectlyWhileRelayed(t *testing.T) {
	s := relayed(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}})
	s.hear(14, c1) // WireGuard roamed to a direct source
	st := s.step(15)
	want(t, st, ModeDirect, netip.AddrPort{}, "peer reached us directly from "+c1.String())
}

func TestPeerChoseRelayDuringTrial(t *testing.T) {
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}})
	s.step(0)
	s.hear(1, r1.Endpoint)
	want(t, s.step(2), ModeRelayed, netip.AddrPort{}, "the peer reached us through a relay; relayed via relay-1")
	// Without probes, the direct path is retried at the next wall-clock
	// boundary, as the peer does, not at once.
	for sec := 3.0; sec < 120; sec += tick {
		s.hear(sec-0.5, r1.Endpoint)
		want(t, s.step(sec), ModeRelayed, netip.AddrPort{}, "relayed via relay-1")
	}
	want(t, s.step(120), ModeTrying, c0, "periodic direct retry")
}

func TestTableForgetsPeers(t *testing.T) {
	var a, b wgtypes.Key
	a[0], b[0] = 1, 2
	tb := NewTable(Timing{})
	out := tb.Step(at(0), map[wgtypes.Key]Input{a: {Direct: []netip.AddrPort{c0}}, b: {Direct: []netip.AddrPort{c1}}})
	if out[a].SetEndpoint != c0 || out[b].SetEndpoint != c1 {
		t.Fatalf("%+v", out)
	}
	tb.Step(at(1), map[wgtypes.Key]Input{a: {Direct: []netip.AddrPort{c0}}})
	if len(tb.paths) != 1 {
		t.Fatalf("table kept %d paths, want 1", len(tb.paths))
	}
	// A peer that comes back starts over.
	out = tb.Step(at(2), map[wgtypes.Key]Input{a: {Direct: []netip.AddrPort{c0}}, b: {Direct: []netip.AddrPort{c1}}})
	if out[b].SetEndpoint != c1 || out[b].Reason != "new peer" {
		t.Fatalf("%+v", out[b])
	}
}

func TestAdoptsAWorkingPath(t *testing.T) {
	// natpath takes over a mesh whose peers are already up: it keeps what
	// works instead of starting over.
	s := newPeer(t, Input{Direct: []netip.AddrPort{c0, c1}, Relays: []Relay{r1}})
	s.hear(-1, c1)
	st := s.step(0)
	want(t, st, ModeDirect, netip.AddrPort{}, "already up at "+c1.String())
	s = newPeer(t, Input{Direct: []netip.AddrPort{c0}, Relays: []Relay{r1}})
	s.hear(-1, r1.Endpoint)
	want(t, s.step(0), ModeRelayed, netip.AddrPort{}, "already relayed via relay-1")
}
