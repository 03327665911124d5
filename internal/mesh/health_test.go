package mesh

import (
	"bytes"
	"hash/maphash"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
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

// someHealth has keepalive requests on, so that they are compared too.
var someHealth = Health{DownAfter: 9 * time.Second, EndpointProbe: 4 * time.Second, Keepalive: 2 * time.Second}

func randKey(rng *rand.Rand) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = byte(rng.Uint32())
	}
	return k
}

// TestTrackerStepSomeInterleavings: random timelines of a peer set (peers
// joining, leaving, rejoining, their candidates changing, the device's
// counters and handshakes moving) with a full Step every second and, in
// between, the change pass: StepSome of the peers that joined or whose
// candidates changed and Forget of those that left; some changes go
// unannounced and only the next Step sees them.
//
// With a few peers the endpoint budget never binds (checked), so a
// peer's verdicts depend on its own history only, and each of them is
// compared exactly against
//   - a tracker of its own, stepped whenever (and with what) the tracker
//     under test stepped it, and dropped when that one forgot it: StepSome
//     must step a peer as Step does;
//   - at every Step, a tracker with the same seed that only ever ran the
//     full Steps, for each peer whose history there is the same one (the
//     same step times since it was created): a change pass must leave the
//     peers it does not concern as they would be without it. A peer it
//     did step has a history the full Steps alone cannot have (stepped
//     earlier: its endpoint set and its probe window started earlier, its
//     first sight earlier), so no exact comparison is possible for it;
//     likewise for a peer forgotten and back before the next Step.
//
// With many peers the budget binds and couples them, so only what must
// hold whatever the budget is checked: the shortcut's order (resorts), the
// set of tracks and verdicts, and StepSome leaving other entries alone.
func TestTrackerStepSomeInterleavings(t *testing.T) {
	t.Run("few", func(t *testing.T) { testStepSomeTimeline(t, 1, 12, true) })
	t.Run("many", func(t *testing.T) { testStepSomeTimeline(t, 2, 400, false) })
}

func testStepSomeTimeline(t *testing.T, seed uint64, maxPeers int, exact bool) {
	rng := rand.New(rand.NewPCG(seed, 42))
	self := randKey(rng)
	tr, full := NewTracker(someHealth, self), NewTracker(someHealth, self)
	full.seed = tr.seed
	own := map[wgtypes.Key]*Tracker{} // each peer's tracker of its own
	// step times of each peer's current track, in tr and in full
	hist, fullHist := map[wgtypes.Key][]time.Time{}, map[wgtypes.Key][]time.Time{}
	pool := []netip.AddrPort{}
	for i := range 8 {
		pool = append(pool, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 51820))
	}
	candidates := func() []netip.AddrPort {
		var eps []netip.AddrPort
		for _, i := range rng.Perm(len(pool))[:rng.IntN(4)] {
			eps = append(eps, pool[i])
		}
		return eps
	}
	newPeer := func(k wgtypes.Key) Peer {
		p := Peer{PublicKey: k, Endpoints: candidates()}
		if rng.IntN(3) > 0 {
			p.AffiliateID = "a"
		}
		return p
	}
	// Half of the first peers are bystanders no change concerns: the
	// full-Step comparison is about them.
	var peers, gone []Peer
	bystander := map[wgtypes.Key]bool{}
	for i := range maxPeers / 2 {
		peers = append(peers, newPeer(randKey(rng)))
		bystander[peers[i].PublicKey] = i%2 == 0
	}
	changeable := func() (int, bool) {
		var is []int
		for i, p := range peers {
			if !bystander[p.PublicKey] {
				is = append(is, i)
			}
		}
		if len(is) == 0 {
			return 0, false
		}
		return is[rng.IntN(len(is))], true
	}
	obs := map[wgtypes.Key]Observation{}
	// The device: handshakes, traffic both ways, a peer re-created. With
	// many peers, handshakes and traffic are rare: peers that answered once
	// and went quiet rotate their candidates every probe window, more than
	// the budget allows.
	handshakes, rx := 8, 22
	if !exact {
		handshakes, rx = 1, 2
	}
	device := func(now time.Time) {
		for _, p := range peers {
			o := obs[p.PublicKey]
			switch r := rng.IntN(100); {
			case r < handshakes:
				o.LastHandshake = now.Add(-time.Duration(rng.IntN(500)) * time.Millisecond)
				o.RxBytes += 148
				o.TxBytes += 92
			case r < handshakes+rx:
				o.RxBytes += 32
			case r < handshakes+rx+10:
				o.TxBytes += 32
			case r < handshakes+rx+11:
				o.RxBytes, o.TxBytes = 0, 0
			}
			obs[p.PublicKey] = o
		}
	}
	bound := 0 // passes that left less than a token
	checkBudget := func(what string) {
		if tr.tokens < 1 {
			bound++
		}
		if exact && (tr.tokens < 1 || full.tokens < 1) {
			t.Fatalf("%s: the endpoint budget bound (%.2f, %.2f tokens left); the exact comparisons assume it never does", what, tr.tokens, full.tokens)
		}
	}
	ownStep := func(now time.Time, p Peer) Status {
		o := own[p.PublicKey]
		if o == nil {
			o = NewTracker(someHealth, self)
			own[p.PublicKey] = o
		}
		return o.Step(now, []Peer{p}, obs)[p.PublicKey]
	}
	drop := func(k wgtypes.Key) { delete(own, k); delete(hist, k) }

	var (
		out, fullOut                        = map[wgtypes.Key]Status{}, map[wgtypes.Key]Status{}
		someSteps, someSets, forgets, owned int
		same, differ                        int // full-Step comparisons made; peers a change pass moved off the full Steps' verdict
	)
	start := time.Unix(1_700_000_000, 0)
	for tick := range 600 {
		base := start.Add(time.Duration(tick) * time.Second)
		// The change passes within this second, up to the Step's instant.
		offs := make([]int, rng.IntN(3))
		for i := range offs {
			offs[i] = 1 + rng.IntN(1000)
		}
		slices.Sort(offs)
		for _, off := range offs {
			now := base.Add(time.Duration(off) * time.Millisecond)
			device(now)
			var changed []Peer
			var left []wgtypes.Key
			announced := rng.IntN(4) > 0
			for range 1 + rng.IntN(2) {
				i, ok := changeable()
				switch r := rng.IntN(3); {
				case r == 0 && len(peers) < maxPeers: // joins (some come back)
					p := newPeer(randKey(rng))
					if len(gone) > 0 && rng.IntN(2) == 0 {
						i := rng.IntN(len(gone))
						p.PublicKey = gone[i].PublicKey
						gone = slices.Delete(gone, i, i+1)
					}
					peers = slices.Insert(peers, rng.IntN(len(peers)+1), p)
					changed = append(changed, p)
				case r == 1 && ok: // leaves
					left, gone = append(left, peers[i].PublicKey), append(gone, peers[i])
					changed = slices.DeleteFunc(changed, func(c Peer) bool { return c.PublicKey == peers[i].PublicKey })
					peers = slices.Delete(peers, i, i+1)
				case ok: // new candidates
					peers[i].Endpoints = candidates()
					changed = slices.DeleteFunc(changed, func(c Peer) bool { return c.PublicKey == peers[i].PublicKey })
					changed = append(changed, peers[i])
				}
			}
			if !announced {
				continue // the next Step finds these changes by itself
			}
			tr.Forget(left)
			for _, k := range left {
				if _, ok := tr.peers[k]; ok {
					t.Fatalf("tick %d: Forget kept %v", tick, k)
				}
				drop(k)
				forgets++
			}
			before := maps.Clone(out)
			tr.StepSome(out, now, changed, obs)
			someSteps++
			checkBudget("StepSome")
			for _, p := range changed {
				k := p.PublicKey
				got := out[k]
				if got.SetEndpoint.IsValid() {
					someSets++
				}
				if exact {
					if want := ownStep(now, p); got != want {
						t.Fatalf("tick %d +%dms: StepSome gave %+v; stepped alone %+v", tick, off, got, want)
					}
					owned++
				}
				hist[k] = append(hist[k], now)
				delete(before, k)
			}
			for k, st := range before {
				if got, ok := out[k]; !ok || got != st {
					t.Fatalf("tick %d +%dms: StepSome changed the verdict of %v, not stepped, from %+v to %+v", tick, off, k, st, got)
				}
			}
			if len(out) != len(before)+len(changed) {
				t.Fatalf("tick %d: StepSome of %d left %d verdicts from %d", tick, len(changed), len(out), len(before))
			}
		}

		now := base.Add(time.Second)
		device(now)
		tr.StepInto(out, now, peers, obs)
		full.StepInto(fullOut, now, peers, obs)
		checkBudget("Step")
		if tr.resorts != 0 || full.resorts != 0 {
			t.Fatalf("tick %d: the shortcut's order was wrong %d times (%d in full Steps only)", tick, tr.resorts, full.resorts)
		}
		if len(out) != len(peers) || len(tr.peers) != len(peers) || len(tr.keys) != len(peers) {
			t.Fatalf("tick %d: %d peers, %d verdicts, %d tracks, %d served", tick, len(peers), len(out), len(tr.peers), len(tr.keys))
		}
		listed := map[wgtypes.Key]bool{}
		for _, p := range peers {
			listed[p.PublicKey] = true
		}
		for k := range hist {
			if !listed[k] {
				drop(k) // Step forgets it
			}
		}
		for k := range fullHist {
			if !listed[k] {
				delete(fullHist, k)
			}
		}
		for _, p := range peers {
			k := p.PublicKey
			got := out[k]
			hist[k], fullHist[k] = append(hist[k], now), append(fullHist[k], now)
			if !exact {
				continue
			}
			if want := ownStep(now, p); got != want {
				t.Fatalf("tick %d: Step gave %+v; stepped alone %+v", tick, got, want)
			}
			owned++
			if slices.Equal(hist[k], fullHist[k]) {
				if want := fullOut[k]; got != want {
					t.Fatalf("tick %d: a peer no change pass stepped is %+v; with full Steps only %+v", tick, got, want)
				}
				same++
			} else if got != fullOut[k] {
				differ++
			}
		}
	}
	t.Logf("%d change passes (%d endpoints set), %d forgotten, %d passes left the budget empty; %d verdicts compared with the peer's own tracker, %d with full Steps only; %d not comparable differed from it",
		someSteps, someSets, forgets, bound, owned, same, differ)
	if someSteps < 300 || someSets < 50 || forgets < 50 {
		t.Fatalf("the timeline did not exercise the change pass (%d passes, %d endpoints set, %d forgotten)", someSteps, someSets, forgets)
	}
	if !exact && bound < 100 {
		t.Fatalf("the budget bound after %d passes only; this run is about a binding one", bound)
	}
	if exact && (owned < 2000 || same < 1000 || differ == 0) {
		t.Fatalf("too few comparisons: %d with own trackers, %d with full Steps only, %d moved by a change pass", owned, same, differ)
	}
}

// StepSome of a new peer sets its first candidate at once, as Step would,
// and leaves the other peers' verdicts and tracks alone.
func TestTrackerStepSomeNewPeer(t *testing.T) {
	self, a, b, c := testKey(t), testKey(t), testKey(t), testKey(t)
	ep := func(ss ...string) []netip.AddrPort {
		var eps []netip.AddrPort
		for _, s := range ss {
			eps = append(eps, netip.MustParseAddrPort(s))
		}
		return eps
	}
	peers := []Peer{{PublicKey: a, Endpoints: ep("192.0.2.1:1")}, {PublicKey: b, AffiliateID: "b", Endpoints: ep("192.0.2.2:1", "192.0.2.3:1")}}
	start := time.Unix(1_700_000_000, 0)
	tr := NewTracker(testHealth, self)
	out := tr.StepInto(map[wgtypes.Key]Status{}, start, peers, nil)
	before := maps.Clone(out)
	tracks := map[wgtypes.Key]track{a: *tr.peers[a], b: *tr.peers[b]}

	pc := Peer{PublicKey: c, AffiliateID: "c", Endpoints: ep("198.51.100.1:1", "198.51.100.2:1")}
	now := start.Add(300 * time.Millisecond)
	tr.StepSome(out, now, []Peer{pc}, nil)
	got := out[c]
	if got.SetEndpoint != pc.Endpoints[0] || got.State != StateUnknown || got.EndpointChanges != 1 {
		t.Fatalf("StepSome of a new peer: %+v; want unknown and the first candidate set", got)
	}
	if want := NewTracker(testHealth, self).Step(now, []Peer{pc}, nil)[c]; got != want {
		t.Fatalf("StepSome of a new peer: %+v; Step of it: %+v", got, want)
	}
	if len(out) != 3 || out[a] != before[a] || out[b] != before[b] {
		t.Fatalf("verdicts after StepSome: %+v; want a and b as before (%+v) and c", out, before)
	}
	for k, want := range tracks {
		if !reflect.DeepEqual(*tr.peers[k], want) {
			t.Fatalf("StepSome of c changed another peer's track: %+v, was %+v", *tr.peers[k], want)
		}
	}
	// The next Step takes c as a peer it knows, probing what StepSome set.
	out = tr.StepInto(out, start.Add(time.Second), append(peers, pc), nil)
	if st := out[c]; st.SetEndpoint.IsValid() || st.EndpointChanges != 1 {
		t.Fatalf("Step after StepSome: %+v; want the first candidate still probing", st)
	}
	if tr.resorts != 0 {
		t.Fatalf("the shortcut's order was wrong %d times", tr.resorts)
	}
}

// StepSome serves its peers in Step's order, so the budget goes to the
// same peers first: given them in the reverse order, with two tokens left,
// it sets the same two endpoints Step sets.
func TestTrackerStepSomeServesInStepOrder(t *testing.T) {
	self := testKey(t)
	start := time.Unix(1_700_000_000, 0)
	tr, twin := NewTracker(testHealth, self), NewTracker(testHealth, self)
	twin.seed = tr.seed
	var peers []Peer
	for i := range 8 {
		p := Peer{PublicKey: testKey(t), Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1)}}
		if i%2 == 1 {
			p.AffiliateID = "a"
		}
		peers = append(peers, p)
	}
	// Two of them known for a while (an endpoint set 5 s ago), the others new.
	tr.StepInto(map[wgtypes.Key]Status{}, start, peers[:2], nil)
	twin.StepInto(map[wgtypes.Key]Status{}, start, peers[:2], nil)
	now := start.Add(5 * time.Second)
	for _, x := range []*Tracker{tr, twin} {
		x.tokens, x.tokensAt = 2, now
	}
	slices.SortFunc(peers, func(p, q Peer) int { // the reverse of Step's order
		return -compareTrackerKeys(tr.keyOf([]Peer{p}, 0), tr.keyOf([]Peer{q}, 0))
	})
	out := map[wgtypes.Key]Status{}
	tr.StepSome(out, now, peers, nil)
	want := twin.StepInto(map[wgtypes.Key]Status{}, now, peers, nil)
	var set []wgtypes.Key
	for _, p := range peers {
		if out[p.PublicKey] != want[p.PublicKey] {
			t.Errorf("%v: StepSome %+v, Step %+v", p.PublicKey, out[p.PublicKey], want[p.PublicKey])
		}
		if out[p.PublicKey].SetEndpoint.IsValid() {
			set = append(set, p.PublicKey)
		}
	}
	if len(set) != 2 || tr.tokens >= 1 {
		t.Fatalf("%d endpoints set, %.2f tokens left; want the 2 the budget allows, spent", len(set), tr.tokens)
	}
}

// StepSome draws on Step's endpoint budget: what it earned since the last
// pass, no more.
func TestTrackerStepSomeSharesBudget(t *testing.T) {
	tr := NewTracker(testHealth, testKey(t))
	peer := func(i int) Peer {
		return Peer{PublicKey: testKey(t), Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1)}}
	}
	var peers []Peer
	for i := range ProbeBurst {
		peers = append(peers, peer(i))
	}
	start := time.Unix(1_700_000_000, 0)
	out := tr.Step(start, peers, nil) // spends the burst
	some := func(after time.Duration) Status {
		p := peer(100 + int(after/time.Millisecond))
		tr.StepSome(out, start.Add(after), []Peer{p}, nil)
		return out[p.PublicKey]
	}
	if st := some(0); st.SetEndpoint.IsValid() || !st.Quiet {
		t.Fatalf("StepSome with the budget spent: %+v; want nothing set, waiting", st)
	}
	if st := some(100 * time.Millisecond); !st.SetEndpoint.IsValid() {
		t.Fatalf("StepSome 100 ms later: %+v; want the token earned meanwhile spent", st)
	}
	if st := some(100 * time.Millisecond); st.SetEndpoint.IsValid() {
		t.Fatalf("StepSome again at once: %+v; want nothing set, the token is spent", st)
	}
}

// A track StepSome created has no place in the last Step's order: the
// next Step must sort it in, not take it for the peer it served first.
func TestTrackerStepSomeNewTrackIsDirty(t *testing.T) {
	tr := NewTracker(testHealth, testKey(t))
	var peers []Peer
	for range 5 {
		peers = append(peers, Peer{PublicKey: testKey(t)}) // static, no candidates: only the hash orders them
	}
	start := time.Unix(1_700_000_000, 0)
	tr.Step(start, peers, nil)
	// A new one that sorts last, listed first (the first to claim a slot).
	var c Peer
	for c.PublicKey == (wgtypes.Key{}) || !slices.ContainsFunc(peers, func(p Peer) bool {
		return maphash.Bytes(tr.seed, p.PublicKey[:]) < maphash.Bytes(tr.seed, c.PublicKey[:])
	}) {
		c.PublicKey = testKey(t)
	}
	tr.StepSome(map[wgtypes.Key]Status{}, start.Add(100*time.Millisecond), []Peer{c}, nil)
	tr.Step(start.Add(time.Second), append([]Peer{c}, peers...), nil)
	if tr.resorts != 0 {
		t.Fatalf("the shortcut's order was wrong %d times (StepSome's track taken as placed)", tr.resorts)
	}
}

// BenchmarkTrackerStepSome: a change pass at a thousand peers (one peer's
// candidates changed) against the full Step it spares.
func BenchmarkTrackerStepSome(b *testing.B) {
	const n = 1000
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Unix(1_700_000_000, 0)
	var peers []Peer
	obs := map[wgtypes.Key]Observation{}
	for i := range n {
		p := Peer{PublicKey: randKey(rng), AffiliateID: "a", Endpoints: []netip.AddrPort{
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 51820),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), 51820)}}
		peers = append(peers, p)
		obs[p.PublicKey] = Observation{LastHandshake: start, RxBytes: 1000, TxBytes: 1000}
	}
	setup := func() (*Tracker, map[wgtypes.Key]Status) {
		tr := NewTracker(someHealth, randKey(rng))
		return tr, tr.StepInto(map[wgtypes.Key]Status{}, start, peers, obs)
	}
	b.Run("some=1", func(b *testing.B) {
		tr, out := setup()
		one := []Peer{peers[n/2]}
		alt := [2][]netip.AddrPort{peers[n/2].Endpoints, {netip.MustParseAddrPort("203.0.113.1:51820")}}
		now := start
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			now = now.Add(time.Millisecond)
			one[0].Endpoints = alt[i%2]
			tr.StepSome(out, now, one, obs)
		}
	})
	b.Run("all=1000", func(b *testing.B) {
		tr, out := setup()
		now := start
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(time.Second)
			tr.StepInto(out, now, peers, obs)
		}
	})
}
