package mesh

import (
	"bytes"
	"cmp"
	"hash/maphash"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
)

// State is a peer's connectivity as KubeSpan reports it.
type State int

const (
	// StateUnknown: no verdict yet (just configured, or no endpoint to try).
	StateUnknown State = iota
	// StateUp: the peer showed activity within the down threshold.
	StateUp
	// StateDown: it did not.
	StateDown
)

func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	default:
		return "unknown"
	}
}

// Health holds the timing thresholds (config health.*).
type Health struct {
	// DownAfter: a peer with no activity for this long is down.
	DownAfter time.Duration
	// EndpointProbe: how long a newly set endpoint gets before the next
	// candidate is tried.
	EndpointProbe time.Duration
	// Keepalive is the persistent keepalive programmed on every peer
	// (WireGuardKeepalive). A peer this node has sent nothing for this
	// long inside a session gets one keepalive at once (Status.SendKeepalive);
	// zero turns that off.
	Keepalive time.Duration
}

// Observation is what the WireGuard device reports for one peer.
type Observation struct {
	// Endpoint is the peer's live endpoint (WireGuard roams it to wherever
	// authenticated packets come from); invalid if none.
	Endpoint      netip.AddrPort
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// Status is the tracker's verdict for one peer after a Step.
type Status struct {
	State State
	// SetEndpoint, when valid, must be configured on the device now.
	SetEndpoint netip.AddrPort
	// LastActivity is the later of the last handshake and the last rx growth.
	LastActivity time.Time
	// EndpointChanges counts the endpoints this tracker has set.
	EndpointChanges int
	// Keepalive says whether the peer's persistent keepalive should be on.
	// Turning it on makes WireGuard initiate a handshake at once; if both
	// sides do that at the same moment the two initiations void each other
	// and the retry comes 5 s later. So of two new peers only the one with
	// the lower public key starts at once; the other waits AnswerDelay for
	// that handshake before starting its own (the first may be unable to
	// reach it, or may not know it yet).
	Keepalive bool
	// Quiet says the peer is waiting out its backoff (see Backoff): keep
	// it off WireGuard's handshake loop until the next attempt, with no
	// keepalive and its handshake timers reset, so it costs nothing but
	// an answer if it initiates itself. Keepalive is false then.
	Quiet bool
	// SendKeepalive asks for one keepalive to the peer now: this node sent
	// it nothing for Health.Keepalive although a session is live. WireGuard
	// restarts the persistent keepalive timer on every packet received too,
	// so on an idle link with the same interval at both ends only the end
	// whose timer fires first ever sends: the other's timer is restarted by
	// each arriving keepalive just before it would fire. Kernel WireGuard's
	// timers fire late (the timer wheel rounds a 2 s timeout up by up to
	// 32 ms at HZ=250), so against a userspace peer the kernel end stayed
	// silent between handshakes and looked down to the peer after downAfter.
	SendKeepalive bool
}

// AnswerDelay is how long the higher-keyed side of a new pair waits for the
// other side's handshake before initiating itself.
const AnswerDelay = 500 * time.Millisecond

// ProbeRate and ProbeBurst bound how fast the tracker sets endpoints over
// all peers together: each set starts a WireGuard handshake to a candidate,
// and candidates come from members, so without a bound a member publishing
// many dead endpoints for many affiliates would make this node send to them
// at any rate it likes. Peers waiting longest (never tried first) go first;
// a peer that is up never needs one.
const (
	ProbeRate  = 10 // per second
	ProbeBurst = 20
)

// A peer that has never answered is tried with backoff: after FreeAttempts
// candidates tried back to back, each further attempt (one candidate for
// health.endpointProbe) follows a quiet time that doubles from
// health.endpointProbe up to BackoffMax. Every attempt costs a WireGuard
// handshake initiation (an X25519 key pair and two exchanges) and WireGuard
// would otherwise retry every 5 s for ever: a member publishing many
// affiliates that never answer would keep this node busy. An answer, or
// new candidates (the peer published new data), ends the backoff; a peer
// coming up initiates itself and is answered at once, since it stays
// configured.
const (
	FreeAttempts = 3
	BackoffMax   = time.Minute
)

// Backoff is the quiet time after a never-answered peer's attempt-th
// attempt (counting from 1) before the next one.
func Backoff(probe time.Duration, attempt int) time.Duration {
	n := attempt - FreeAttempts
	if n < 0 {
		return 0
	}
	d := max(probe, time.Second)
	for ; n > 0 && d < BackoffMax; n-- {
		d *= 2
	}
	return min(d, BackoffMax)
}

// Tracker follows every peer across reconcile passes. It is not safe for
// concurrent use; the agent's loop owns it.
type Tracker struct {
	health Health
	self   wgtypes.Key
	peers  map[wgtypes.Key]*track
	// tokens is the endpoint-set budget (ProbeRate), refilled at each Step
	// and StepSome.
	tokens   float64
	tokensAt time.Time
	seed     maphash.Seed // orders peers never tried
	// steps counts Steps (not StepSomes); a track not stepped in the last
	// is forgotten
	steps uint64
	// keys are the last Step's peers in the order served (track pointers
	// included: tracks of peers gone are forgotten by then anyway);
	// slots and dirty are sortedKeys's scratch.
	keys, slots, dirty []trackerKey
	resorts            int // times the shortcut's order was wrong (never, unless a bug)
}

type track struct {
	endpoint  netip.AddrPort // the endpoint this tracker last set
	setAt     time.Time      // when; zero if never set
	rxBytes   int64
	lastRx    time.Time
	txBytes   int64
	lastTx    time.Time // when tx was last seen to grow (or a keepalive asked for)
	lastStep  time.Time // when the previous observation was taken
	state     State
	changes   int
	activated bool // activity seen at some point
	firstSeen time.Time
	seen      uint64 // the Tracker's step that last saw it
	hash      uint64 // the key's hash under the Tracker's seed
	// pos is where the last Step served it, by setAt and discovered as
	// they were then (sortedKeys); -1 for a track no Step served yet (one
	// StepSome created), which no slot may take
	pos         int
	sortedSetAt time.Time
	sortedDisc  int
	// backoff of a peer that never answered: attempts since the last
	// reset, the time the next may start, the candidates they were for
	attempts int
	nextTry  time.Time
	tried    []netip.AddrPort
}

// NewTracker returns a tracker for the node whose public key is self.
func NewTracker(h Health, self wgtypes.Key) *Tracker {
	return &Tracker{health: h, self: self, peers: map[wgtypes.Key]*track{}, tokens: ProbeBurst, seed: maphash.MakeSeed()}
}

// Step advances every peer to now. peers is the desired set (peers not in
// it are forgotten); obs holds the device's report, keyed by public key (a
// peer missing there is treated as silent).
func (t *Tracker) Step(now time.Time, peers []Peer, obs map[wgtypes.Key]Observation) map[wgtypes.Key]Status {
	return t.StepInto(make(map[wgtypes.Key]Status, len(peers)), now, peers, obs)
}

// sortedKeys is peers in the order Step serves them. The keys are taken
// once per peer (the hash once per track), not in every comparison, and
// only the peers whose key changed since the last Step (an endpoint set,
// new ones) are sorted, then merged with the others, which keep the last
// Step's order: at a thousand peers a full sort every pass was a tenth of
// the members' CPU in tests/scale. The order is total (the index decides
// ties), and a final check falls back to a full sort, so the result is
// the sorted order whatever the shortcut finds.
func (t *Tracker) sortedKeys(peers []Peer) []trackerKey {
	slots := t.slots[:0]
	for range t.keys { // the last Step's positions
		slots = append(slots, trackerKey{})
	}
	dirty := t.dirty[:0]
	for i := range peers {
		k := t.keyOf(peers, i)
		tr := k.tr
		if tr == nil {
			dirty = append(dirty, k)
			continue
		}
		// A StepSome may have set an endpoint (setAt moved: dirty) or
		// created the track (pos -1: dirty) since the last Step.
		if tr.seen == t.steps-1 && tr.pos >= 0 && tr.pos < len(slots) && slots[tr.pos].tr == nil &&
			tr.sortedSetAt == tr.setAt && tr.sortedDisc == k.discovered {
			slots[tr.pos] = k
		} else {
			dirty = append(dirty, k)
		}
	}
	clean := slots[:0]
	for _, k := range slots {
		if k.tr != nil {
			clean = append(clean, k)
		}
	}
	slices.SortFunc(dirty, compareTrackerKeys)
	t.slots, t.dirty = slots[:0], dirty[:0] // before the merge moves them
	keys := t.keys[:0]
	for len(clean) > 0 && len(dirty) > 0 {
		if compareTrackerKeys(dirty[0], clean[0]) < 0 {
			keys, dirty = append(keys, dirty[0]), dirty[1:]
		} else {
			keys, clean = append(keys, clean[0]), clean[1:]
		}
	}
	keys = append(append(keys, clean...), dirty...)
	if !slices.IsSortedFunc(keys, compareTrackerKeys) {
		t.resorts++
		slices.SortFunc(keys, compareTrackerKeys)
	}
	clear(t.slots[:cap(t.slots)]) // drop track pointers
	clear(t.dirty[:cap(t.dirty)])
	return keys
}

// keyOf is the key peers[i] is served by.
func (t *Tracker) keyOf(peers []Peer, i int) trackerKey {
	p := &peers[i]
	k := trackerKey{discovered: discovered(p), i: i}
	if tr := t.peers[p.PublicKey]; tr != nil {
		k.setAt, k.hash, k.tr = tr.setAt, tr.hash, tr
	} else {
		k.hash = maphash.Bytes(t.seed, p.PublicKey[:])
	}
	return k
}

func compareTrackerKeys(a, b trackerKey) int {
	if c := a.setAt.Compare(b.setAt); c != 0 {
		return c
	}
	if c := cmp.Compare(a.discovered, b.discovered); c != 0 {
		return c
	}
	if c := cmp.Compare(a.hash, b.hash); c != 0 {
		return c
	}
	return cmp.Compare(a.i, b.i)
}

// trackerKey is what Step orders peers by; the index last makes the order
// that of a stable sort.
type trackerKey struct {
	setAt      time.Time
	discovered int
	hash       uint64
	i          int
	tr         *track // nil: never seen
}

// StepInto is Step writing the verdicts into out (cleared first) and
// returning it: a caller that steps every second reuses one map instead of
// allocating one per pass.
func (t *Tracker) StepInto(out map[wgtypes.Key]Status, now time.Time, peers []Peer, obs map[wgtypes.Key]Observation) map[wgtypes.Key]Status {
	clear(out)
	t.steps++
	t.refill(now)
	t.peers = reserve.Map(t.peers, len(peers)-len(t.peers))
	// Serve the peers waiting longest first, so none starves.
	// Among peers never tried, static ones first, then affiliates in an
	// order keyed by this tracker's random seed: affiliate IDs and keys are
	// chosen by members, and a hostile one must not be able to make its
	// affiliates go before an honest member's.
	keys := t.sortedKeys(peers)
	live := 0 // tracks stepped in this Step
	for j, k := range keys {
		tr := t.serve(out, now, &peers[k.i], k, obs)
		if tr.seen != t.steps {
			live++
		}
		tr.seen, tr.pos, tr.sortedSetAt, tr.sortedDisc = t.steps, j, k.setAt, k.discovered
	}
	t.keys = keys
	if live != len(t.peers) {
		for k, tr := range t.peers {
			if tr.seen != t.steps {
				delete(t.peers, k)
			}
		}
	}
	return out
}

// StepSome advances only peers — those a discovery change concerns: new
// ones, or ones whose candidates changed — writing their verdicts into
// out; other entries of out, and the other peers' tracks, stay as the
// last Step or StepSome left them. The next Step serves every peer as
// usual.
//
// The work is proportional to len(peers): the step counter, the last
// Step's order and its positions are left alone, so the next Step's
// shortcut still holds for the peers not stepped here and finds the
// others dirty (setAt moved, or new with no position).
func (t *Tracker) StepSome(out map[wgtypes.Key]Status, now time.Time, peers []Peer, obs map[wgtypes.Key]Observation) {
	t.refill(now)
	t.peers = reserve.Map(t.peers, len(peers))
	keys := t.dirty[:0]
	for i := range peers {
		keys = append(keys, t.keyOf(peers, i))
	}
	// In Step's order, so that the budget goes to the same peers first.
	slices.SortFunc(keys, compareTrackerKeys)
	for _, k := range keys {
		t.serve(out, now, &peers[k.i], k, obs)
	}
	clear(keys) // drop track pointers
	t.dirty = keys[:0]
}

// Forget drops the tracks of peers that left the set (the next Step would
// too). Their entries in the last Step's order are skipped by the next
// one, as those of any peer gone.
func (t *Tracker) Forget(keys []wgtypes.Key) {
	for _, k := range keys {
		delete(t.peers, k)
	}
}

// refill adds the budget earned since the last Step or StepSome.
func (t *Tracker) refill(now time.Time) {
	if !t.tokensAt.IsZero() && now.After(t.tokensAt) {
		t.tokens = min(ProbeBurst, t.tokens+now.Sub(t.tokensAt).Seconds()*ProbeRate)
	}
	t.tokensAt = now
}

// serve steps the peer p, served by k, within the budget and writes its
// verdict into out; it returns the peer's track, created if new.
func (t *Tracker) serve(out map[wgtypes.Key]Status, now time.Time, p *Peer, k trackerKey, obs map[wgtypes.Key]Observation) *track {
	tr := k.tr
	if tr == nil {
		// New (or listed twice and created by its first entry).
		if tr = t.peers[p.PublicKey]; tr == nil {
			tr = &track{firstSeen: now, hash: k.hash, pos: -1}
			t.peers[p.PublicKey] = tr
		}
	}
	o := obs[p.PublicKey]
	st := tr.step(now, t.health, p.Endpoints, o, t.tokens >= 1)
	if st.SetEndpoint.IsValid() {
		t.tokens--
	}
	st.Keepalive = !st.Quiet && (bytes.Compare(t.self[:], p.PublicKey[:]) < 0 || st.State != StateUnknown ||
		now.Sub(tr.firstSeen) >= AnswerDelay)
	st.SendKeepalive = st.Keepalive && tr.silent(now, t.health.Keepalive, o)
	out[p.PublicKey] = st
	return tr
}

func discovered(p *Peer) int {
	if p.AffiliateID == "" {
		return 0
	}
	return 1
}

// step advances one peer; mayset says whether the budget allows setting
// an endpoint now (otherwise the current one keeps probing).
func (tr *track) step(now time.Time, h Health, candidates []netip.AddrPort, o Observation, mayset bool) Status {
	switch {
	case o.RxBytes > tr.rxBytes:
		// The bytes arrived after the previous observation; taking that
		// earlier bound keeps detection from lagging by a whole tick.
		tr.lastRx = now
		if !tr.lastStep.IsZero() {
			tr.lastRx = tr.lastStep
		}
	case o.RxBytes < tr.rxBytes:
		// Counters went back: the peer was re-created on the device.
		tr.lastRx = time.Time{}
	}
	tr.rxBytes = o.RxBytes
	if o.TxBytes != tr.txBytes || tr.lastTx.IsZero() {
		// Unlike rx, the later bound: an end whose own timer fires every
		// interval must never look silent and send extra keepalives.
		tr.lastTx = now
	}
	tr.txBytes = o.TxBytes
	tr.lastStep = now

	activity := o.LastHandshake
	// Received bytes count only inside a session: a handshake initiation
	// also grows the counter, and one with a wrong pre-shared key (or from
	// a stale key) never completes, so it must not make the peer look up.
	if tr.lastRx.After(activity) && sessionLive(now, o.LastHandshake) {
		activity = tr.lastRx
	}
	recent := !activity.IsZero() && now.Sub(activity) < h.DownAfter
	probing := !tr.setAt.IsZero() && now.Sub(tr.setAt) < h.EndpointProbe

	switch {
	case recent:
		tr.state = StateUp
		tr.activated = true
	case probing:
		// The new endpoint is still getting its chance: keep the verdict,
		// except that a peer that went quiet is no longer up.
		if tr.state == StateUp {
			tr.state = StateDown
		}
	case tr.setAt.IsZero() && !tr.activated:
		tr.state = StateUnknown // never had an endpoint, never heard of
	default:
		tr.state = StateDown
	}

	if !slices.Equal(candidates, tr.tried) {
		// New data from the peer: whatever it is, it gets tried now.
		tr.tried = slices.Clone(candidates)
		tr.attempts, tr.nextTry = 0, time.Time{}
	}
	st := Status{State: tr.state, LastActivity: activity}
	if tr.activated {
		// It answered once: a peer that goes quiet later is tried without
		// backoff, so a member coming back is found within a rotation.
		if !recent && !probing && mayset {
			if next, ok := nextEndpoint(candidates, tr.endpoint); ok && (next != tr.endpoint || tr.setAt.IsZero()) {
				tr.set(now, next, &st)
			} else if ok && len(candidates) == 1 {
				// One candidate, already set: restart its probe window so
				// the state stays down without re-setting it every pass.
				tr.setAt = now
			}
		}
	} else if !probing {
		// Never answered: one attempt at a time, then quiet.
		waiting := now.Before(tr.nextTry)
		next, ok := nextEndpoint(candidates, tr.endpoint)
		if ok && !waiting && mayset {
			// Always set, even the same endpoint: while quiet the peer was
			// re-created without one.
			tr.set(now, next, &st)
			tr.attempts++
			tr.nextTry = now.Add(h.EndpointProbe + Backoff(h.EndpointProbe, tr.attempts))
		} else {
			st.Quiet = true
		}
	}
	st.State = tr.state
	st.EndpointChanges = tr.changes
	return st
}

// silent reports whether this node has sent the peer nothing for the
// keepalive interval inside a live session, and if so counts a keepalive
// as sent now (it is asked for at most once per interval). Outside a
// session WireGuard's own timers handshake; and a peer that has gone
// quiet does not restart our timer, so it fires by itself.
func (tr *track) silent(now time.Time, keepalive time.Duration, o Observation) bool {
	if keepalive <= 0 || !sessionLive(now, o.LastHandshake) || now.Sub(tr.lastTx) < keepalive {
		return false
	}
	tr.lastTx = now
	return true
}

// set makes next the peer's endpoint now.
func (tr *track) set(now time.Time, next netip.AddrPort, st *Status) {
	tr.endpoint = next
	tr.setAt = now
	tr.changes++
	st.SetEndpoint = next
}

// rejectAfter is WireGuard's RejectAfterTime: a session older than this
// carries no data, so without a newer handshake there is no session.
const rejectAfter = 180 * time.Second

func sessionLive(now, lastHandshake time.Time) bool {
	return !lastHandshake.IsZero() && now.Sub(lastHandshake) < rejectAfter
}

// nextEndpoint picks the candidate after last (wrapping), or the first one
// when last is not (or no longer) a candidate.
func nextEndpoint(candidates []netip.AddrPort, last netip.AddrPort) (netip.AddrPort, bool) {
	if len(candidates) == 0 {
		return netip.AddrPort{}, false
	}
	for i, c := range candidates {
		if c == last {
			return candidates[(i+1)%len(candidates)], true
		}
	}
	return candidates[0], true
}

// WireGuardKeepalive is the persistent keepalive to program so that each
// side of an idle link hears from the other at least every silence: half of
// it, in whole seconds, at least one (see the package comment).
func WireGuardKeepalive(silence time.Duration) time.Duration {
	return max(time.Second, (silence / 2).Truncate(time.Second))
}
