package mesh

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var testHealth = Health{DownAfter: 9 * time.Second, EndpointProbe: 4 * time.Second}

// sim drives a Tracker for one peer through simulated seconds.
type sim struct {
	t       *testing.T
	tr      *Tracker
	peer    Peer
	start   time.Time
	obs     Observation
	current netip.AddrPort // what the device has
	last    Status
}

func newSim(t *testing.T, eps ...string) *sim {
	p := Peer{PublicKey: testKey(t)}
	for _, e := range eps {
		p.Endpoints = append(p.Endpoints, netip.MustParseAddrPort(e))
	}
	return &sim{t: t, tr: NewTracker(testHealth, testKey(t)), peer: p, start: time.Unix(1_700_000_000, 0)}
}

func (s *sim) at(sec float64) Status {
	now := s.start.Add(time.Duration(sec * float64(time.Second)))
	st := s.tr.Step(now, []Peer{s.peer}, map[wgtypes.Key]Observation{s.peer.PublicKey: s.obs})[s.peer.PublicKey]
	if st.SetEndpoint.IsValid() {
		s.current = st.SetEndpoint
	}
	s.last = st
	return st
}

// traffic makes the peer's rx counter grow.
func (s *sim) traffic() { s.obs.RxBytes += 92 }

func (s *sim) handshake(sec float64) {
	s.obs.LastHandshake = s.start.Add(time.Duration(sec * float64(time.Second)))
	s.traffic()
}

func TestTrackerFirstEndpointThenUp(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820", "198.51.100.1:51820")
	if st := s.at(0); st.State != StateUnknown || st.SetEndpoint != s.peer.Endpoints[0] {
		t.Fatalf("t=0: %+v; want unknown and the first candidate set", st)
	}
	s.handshake(0.2)
	if st := s.at(1); st.State != StateUp || st.SetEndpoint.IsValid() {
		t.Fatalf("t=1: %+v; want up, endpoint kept", st)
	}
}

func TestTrackerCyclesToWorkingEndpoint(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820", "198.51.100.1:51820", "203.0.113.1:51820")
	s.at(0)
	for sec := 1.0; sec < 4; sec++ {
		if st := s.at(sec); st.State != StateUnknown || st.SetEndpoint.IsValid() {
			t.Fatalf("t=%v: %+v; want unknown while probing the first endpoint", sec, st)
		}
	}
	st := s.at(4)
	if st.State != StateDown || st.SetEndpoint != s.peer.Endpoints[1] {
		t.Fatalf("t=4: %+v; want down and the second candidate", st)
	}
	// Second candidate is dead too; third works.
	s.at(6)
	if st := s.at(8); st.SetEndpoint != s.peer.Endpoints[2] {
		t.Fatalf("t=8: %+v; want the third candidate", st)
	}
	s.handshake(9.5)
	if st := s.at(10); st.State != StateUp || s.current != s.peer.Endpoints[2] {
		t.Fatalf("t=10: %+v on %v; want up on the third candidate", st, s.current)
	}
	if s.last.EndpointChanges != 3 {
		t.Errorf("EndpointChanges = %d, want 3", s.last.EndpointChanges)
	}
}

func TestTrackerDownAfterSilenceAndWraps(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820", "198.51.100.1:51820")
	s.at(0)
	s.handshake(0.1)
	// Keepalives every 5 s keep it up while they grow rx.
	for sec := 1.0; sec <= 30; sec++ {
		if int(sec)%5 == 0 {
			s.traffic()
		}
		if st := s.at(sec); st.State != StateUp {
			t.Fatalf("t=%v: %v; want up while keepalives arrive", sec, st.State)
		}
	}
	// The last rx grew between the passes at 29 and 30, so it counts from
	// 29; the peer dies. Still up at 37, down at 38 (downAfter 9 s).
	if st := s.at(37); st.State != StateUp {
		t.Fatalf("t=37: %v, want still up (8 s of silence)", st.State)
	}
	st := s.at(38)
	if st.State != StateDown || st.SetEndpoint != s.peer.Endpoints[1] {
		t.Fatalf("t=38: %+v; want down and rotation to the second candidate", st)
	}
	if st := s.at(40); st.State != StateDown || st.SetEndpoint.IsValid() {
		t.Fatalf("t=40: %+v; want down without rotation inside the probe window", st)
	}
	if st := s.at(42); st.SetEndpoint != s.peer.Endpoints[0] {
		t.Fatalf("t=42: %+v; want wrap-around to the first candidate", st)
	}
}

func TestTrackerRoamedPeerNeverOverwritten(t *testing.T) {
	// No candidates (e.g. the peer is behind NAT); it reaches us.
	s := newSim(t)
	if st := s.at(0); st.State != StateUnknown || st.SetEndpoint.IsValid() {
		t.Fatalf("t=0: %+v; want unknown with nothing to set", st)
	}
	if st := s.at(20); st.State != StateUnknown {
		t.Fatalf("t=20: %v; want unknown (never had an endpoint)", st.State)
	}
	s.handshake(21)
	s.obs.Endpoint = netip.MustParseAddrPort("203.0.113.50:41000")
	if st := s.at(22); st.State != StateUp || st.SetEndpoint.IsValid() {
		t.Fatalf("t=22: %+v; want up, nothing set", st)
	}
	if st := s.at(31); st.State != StateDown {
		t.Fatalf("t=31: %v; want down once it has been heard of and went quiet", st.State)
	}
}

// A peer that answered once and then went silent, with one candidate, is
// not re-set every pass.
func TestTrackerSingleCandidateNotReset(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820")
	s.at(0)
	s.handshake(0.5)
	s.at(1)
	for sec := 2.0; sec <= 30; sec++ {
		if st := s.at(sec); st.SetEndpoint.IsValid() {
			t.Fatalf("t=%v: re-set the only candidate %v", sec, st.SetEndpoint)
		}
	}
	if s.last.State != StateDown || s.last.EndpointChanges != 1 || s.last.Quiet || !s.last.Keepalive {
		t.Fatalf("%+v; want down after one change, keepalive on, not quiet", s.last)
	}
}

func TestBackoff(t *testing.T) {
	probe := 4 * time.Second
	want := map[int]time.Duration{1: 0, 2: 0, FreeAttempts: probe, 4: 2 * probe, 5: 4 * probe, 6: 8 * probe, 7: BackoffMax, 100: BackoffMax}
	for attempt, w := range want {
		if got := Backoff(probe, attempt); got != w {
			t.Errorf("Backoff(%s, %d) = %s; want %s", probe, attempt, got, w)
		}
	}
}

// A peer that never answers is tried FreeAttempts times back to back, then
// with a quiet time doubling up to BackoffMax, during which it is off
// WireGuard's handshake loop (quiet, no keepalive).
func TestTrackerNeverAnsweredBacksOff(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820", "198.51.100.1:51820")
	var sets []float64
	for sec := 0.0; sec <= 300; sec++ {
		st := s.at(sec)
		if st.SetEndpoint.IsValid() {
			sets = append(sets, sec)
		}
		probing := len(sets) > 0 && sec-sets[len(sets)-1] < 4
		if st.Quiet == probing || (st.Quiet && st.Keepalive) || (sec >= 1 && !st.Quiet && !st.Keepalive) {
			t.Fatalf("t=%v: %+v; want quiet (and keepalive off) exactly between attempts (attempts at %v)", sec, st, sets)
		}
		if sec >= 4 && st.State != StateDown {
			t.Fatalf("t=%v: %+v; want down", sec, st)
		}
	}
	want := []float64{0, 4, 8, 16, 28, 48, 84, 148, 212, 276}
	if !slices.Equal(sets, want) {
		t.Fatalf("attempts at %v s; want %v", sets, want)
	}
	if s.current != s.peer.Endpoints[1] {
		t.Fatalf("the tenth attempt went to %v; want the candidates in turn", s.current)
	}
}

// An answer while quiet (the peer initiated) makes it up at once, and from
// then on it is a peer like any other.
func TestTrackerBackoffEndsOnAnswer(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820")
	for sec := 0.0; sec <= 100; sec++ {
		s.at(sec)
	}
	if !s.last.Quiet {
		t.Fatalf("t=100: %+v; want quiet", s.last)
	}
	s.handshake(100.5)
	if st := s.at(101); st.State != StateUp || st.Quiet || !st.Keepalive {
		t.Fatalf("t=101: %+v; want up, keepalive on", st)
	}
	// Silent again: rotation without backoff (one candidate: kept, not quiet).
	for sec := 102.0; sec <= 130; sec++ {
		if st := s.at(sec); st.Quiet || !st.Keepalive {
			t.Fatalf("t=%v: %+v; want no backoff for a peer that answered", sec, st)
		}
	}
}

// New candidates (the peer published new data) are tried at once.
func TestTrackerBackoffEndsOnNewCandidates(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820")
	for sec := 0.0; sec <= 100; sec++ {
		s.at(sec)
	}
	s.peer.Endpoints = append(s.peer.Endpoints, netip.MustParseAddrPort("198.51.100.7:51820"))
	if st := s.at(101); st.Quiet || st.SetEndpoint != s.peer.Endpoints[1] {
		t.Fatalf("t=101: %+v; want an attempt at once, at the next candidate", st)
	}
	if st := s.at(105); st.SetEndpoint != s.peer.Endpoints[0] {
		t.Fatalf("t=105: %+v; want the next candidate back to back", st)
	}
}

// A peer with no candidate that never answered waits for its handshake:
// keepalive would only make WireGuard compute initiations it cannot send.
func TestTrackerNoCandidateIsQuiet(t *testing.T) {
	s := newSim(t)
	for sec := 0.0; sec <= 10; sec++ {
		if st := s.at(sec); !st.Quiet || st.Keepalive || st.State != StateUnknown {
			t.Fatalf("t=%v: %+v; want quiet, unknown", sec, st)
		}
	}
	s.handshake(10.5)
	if st := s.at(11); st.State != StateUp || st.Quiet || !st.Keepalive {
		t.Fatalf("t=11: %+v; want up, keepalive on", st)
	}
}

func TestTrackerForgetsRemovedPeers(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820")
	s.at(0)
	s.tr.Step(s.start.Add(time.Second), nil, nil)
	if len(s.tr.peers) != 0 {
		t.Fatalf("tracker kept %d removed peers", len(s.tr.peers))
	}
	// Re-added: starts over with the first candidate.
	if st := s.at(2); st.SetEndpoint != s.peer.Endpoints[0] || st.EndpointChanges != 1 {
		t.Fatalf("%+v; want a fresh start", st)
	}
}

func TestTrackerKeepaliveTieBreak(t *testing.T) {
	lo, hi := testKey(t), testKey(t)
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	start := time.Unix(1_700_000_000, 0)
	step := func(tr *Tracker, peer wgtypes.Key, sec float64) Status {
		now := start.Add(time.Duration(sec * float64(time.Second)))
		return tr.Step(now, []Peer{{PublicKey: peer, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51820")}}}, nil)[peer]
	}
	low, high := NewTracker(testHealth, lo), NewTracker(testHealth, hi)
	if !step(low, hi, 0).Keepalive {
		t.Error("lower key: keepalive off at first sight; want on (it initiates)")
	}
	if step(high, lo, 0).Keepalive || step(high, lo, 0.4).Keepalive {
		t.Error("higher key: keepalive on before AnswerDelay; want it to wait for the other side")
	}
	if !step(high, lo, 0.5).Keepalive {
		t.Error("higher key: keepalive still off after AnswerDelay")
	}
}

func TestWireGuardKeepalive(t *testing.T) {
	for silence, want := range map[time.Duration]time.Duration{
		5 * time.Second:  2 * time.Second,
		6 * time.Second:  3 * time.Second,
		time.Second:      time.Second,
		25 * time.Second: 12 * time.Second,
	} {
		if got := WireGuardKeepalive(silence); got != want {
			t.Errorf("WireGuardKeepalive(%s) = %s, want %s", silence, got, want)
		}
	}
}

// A peer that only sends handshake initiations (a wrong pre-shared key, so
// none completes) grows the rx counter but is never up.
func TestTrackerRxWithoutHandshakeIsNotUp(t *testing.T) {
	s := newSim(t, "192.0.2.1:51820")
	for sec := 0.0; sec <= 20; sec++ {
		s.traffic()
		if st := s.at(sec); st.State == StateUp {
			t.Fatalf("t=%v: %+v; want not up without a completed handshake", sec, st)
		}
	}
	// A completed handshake makes it up; rx growth then keeps it up past
	// the handshake's own age.
	s.handshake(20.5)
	for sec := 21.0; sec <= 40; sec++ {
		s.traffic()
		if st := s.at(sec); st.State != StateUp {
			t.Fatalf("t=%v: %+v; want up while traffic flows in a session", sec, st)
		}
	}
	// Past WireGuard's RejectAfterTime with no new handshake, traffic alone
	// no longer counts.
	for sec := 41.0; sec <= 20.5+180+10; sec++ {
		s.traffic()
		s.at(sec)
	}
	if s.last.State == StateUp {
		t.Fatalf("%+v; want not up once the session expired", s.last)
	}
}

// wgEnd models one end of an idle WireGuard link the way both back ends
// run the persistent keepalive: the timer restarts on every authenticated
// packet sent or received, and fires Interval later, rounded up to the
// end's timer granularity (the kernel's timer wheel: 8 jiffies, 32 ms at
// HZ=250 for a 2 s timeout; wireguard-go's Go timers: none).
type wgEnd struct {
	gran     time.Duration
	deadline time.Duration
	rx, tx   int64
	sentAt   []time.Duration
}

func (e *wgEnd) arm(now, interval time.Duration) {
	e.deadline = now + interval
	if e.gran > 0 {
		e.deadline = (e.deadline + e.gran - 1) / e.gran * e.gran
	}
}

// TestTrackerIdleLinkBothEndsSend: an idle link between a userspace end and
// a kernel end, the same persistent keepalive on both, each end's tracker
// stepping once a second. Without Health.Keepalive the kernel end, whose
// timer fires later, is restarted by every keepalive that arrives and never
// sends one: the userspace end sees it down downAfter after the handshake
// (the tests/vm flap). With it, the silent end is asked for a keepalive
// (SendKeepalive) and both ends see each other up throughout.
func TestTrackerIdleLinkBothEndsSend(t *testing.T) {
	const (
		interval = 2 * time.Second
		delay    = 300 * time.Microsecond
		tick     = time.Millisecond
		run      = 60 * time.Second
	)
	for _, nudge := range []bool{false, true} {
		h := testHealth
		h.DownAfter = 8 * time.Second
		if nudge {
			h.Keepalive = interval
		}
		start := time.Unix(1_700_000_000, 0)
		keys := [2]wgtypes.Key{testKey(t), testKey(t)}
		ends := [2]*wgEnd{{}, {gran: 32 * time.Millisecond}} // userspace, kernel
		trackers := [2]*Tracker{NewTracker(h, keys[0]), NewTracker(h, keys[1])}
		type flight struct {
			to int
			at time.Duration
		}
		var inFlight []flight
		send := func(i int, now time.Duration) {
			ends[i].tx += 32
			ends[i].sentAt = append(ends[i].sentAt, now)
			ends[i].arm(now, interval)
			inFlight = append(inFlight, flight{1 - i, now + delay})
		}
		// The handshake at 0 arms both timers.
		ends[0].arm(0, interval)
		ends[1].arm(delay, interval)
		firstDown := [2]time.Duration{-1, -1}
		for now := time.Duration(0); now < run; now += tick {
			rest := inFlight[:0]
			for _, f := range inFlight {
				if f.at <= now {
					ends[f.to].rx += 32
					ends[f.to].arm(now, interval)
				} else {
					rest = append(rest, f)
				}
			}
			inFlight = rest
			for i, e := range ends {
				if now >= e.deadline {
					send(i, now)
				}
			}
			// Each end's agent steps once a second, the kernel end's half a
			// second after the other's.
			for i := range ends {
				if (now-time.Duration(i)*500*time.Millisecond)%time.Second != 0 || now < time.Second {
					continue
				}
				peer := keys[1-i]
				obs := map[wgtypes.Key]Observation{peer: {LastHandshake: start, RxBytes: ends[i].rx, TxBytes: ends[i].tx}}
				st := trackers[i].Step(start.Add(now), []Peer{{PublicKey: peer}}, obs)[peer]
				if st.SendKeepalive {
					send(i, now)
				}
				if st.State != StateUp && firstDown[i] < 0 {
					firstDown[i] = now
				}
			}
		}
		if !nudge {
			// The model reproduces the flap: the kernel end never sends.
			if len(ends[1].sentAt) != 0 || firstDown[0] < 0 {
				t.Fatalf("without keepalive requests: kernel end sent %d keepalives, userspace end first saw it down at %v; want none sent and down (the model lost the race it is about)",
					len(ends[1].sentAt), firstDown[0])
			}
			continue
		}
		for i, name := range []string{"userspace", "kernel"} {
			if firstDown[i] >= 0 {
				t.Errorf("%s end saw its peer not up at %v (peer sent %d keepalives in %v)", name, firstDown[i], len(ends[1-i].sentAt), run)
			}
		}
		// The end that was silent now sends at least every interval plus
		// one step of its tracker.
		sent := ends[1].sentAt
		if len(sent) == 0 {
			t.Fatal("kernel end sent no keepalive")
		}
		var gap time.Duration
		for i := 1; i < len(sent); i++ {
			gap = max(gap, sent[i]-sent[i-1])
		}
		if gap > interval+time.Second+10*time.Millisecond {
			t.Errorf("kernel end sent %d keepalives in %v, up to %v apart; want at most %v apart", len(sent), run, gap, interval+time.Second)
		}
	}
}

// A peer that keeps sending to this node restarts its keepalive timer, so
// the tracker asks for a keepalive once this node has sent nothing for the
// interval, and only inside a session.
func TestTrackerSendKeepaliveOnlyWhenSilentInSession(t *testing.T) {
	h := testHealth
	h.Keepalive = 2 * time.Second
	k := testKey(t)
	tr := NewTracker(h, testKey(t))
	start := time.Unix(1_700_000_000, 0)
	obs := Observation{}
	step := func(sec float64) Status {
		return tr.Step(start.Add(time.Duration(sec*float64(time.Second))), []Peer{{PublicKey: k}}, map[wgtypes.Key]Observation{k: obs})[k]
	}
	// No session: WireGuard handshakes by itself; nothing asked.
	for sec := 0.0; sec <= 5; sec++ {
		obs.RxBytes += 32
		if step(sec).SendKeepalive {
			t.Fatalf("t=%v: keepalive asked for without a session", sec)
		}
	}
	obs.LastHandshake = start.Add(5500 * time.Millisecond)
	asked := 0
	for sec := 6.0; sec <= 20; sec++ {
		obs.RxBytes += 32 // the peer keeps sending; our tx stays put
		if st := step(sec); st.SendKeepalive {
			asked++
			obs.TxBytes += 32
		}
	}
	if asked < 4 || asked > 8 {
		t.Errorf("asked for %d keepalives in 15 s of silence towards a live peer; want one every 2-3 s", asked)
	}
	// This node sends by itself (its timer fires): nothing asked.
	for sec := 21.0; sec <= 30; sec++ {
		obs.TxBytes += 32
		if step(sec).SendKeepalive {
			t.Fatalf("t=%v: keepalive asked for while tx grows", sec)
		}
	}
}
