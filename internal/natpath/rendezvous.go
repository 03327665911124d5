package natpath

import (
	"bytes"
	"slices"
	"time"
)

// Rendezvous defaults.
const (
	// DefaultRendezvousLead is how far ahead a meeting is set: time for the
	// request to reach the peer through the discovery service's watch.
	DefaultRendezvousLead = 2 * time.Second
	// DefaultRendezvousInterval is how long after a meeting a peer that
	// stays off the direct path is asked again. It doubles with every
	// meeting that did not help, up to maxBackoff times: a pair behind
	// random-port NATs stays relayed and should not churn discovery data.
	DefaultRendezvousInterval = time.Minute
	maxBackoff                = 16
	// DefaultRendezvousKeep is how long a request stays published after its
	// meeting time, so a peer that was briefly disconnected still joins.
	DefaultRendezvousKeep = 10 * time.Second
)

// Meeting is a direct attempt two members make together: from At, each
// sends probes to the other's direct candidates, so each NAT has seen
// outbound traffic towards the other when the other's packets arrive.
type Meeting struct {
	Peer [32]byte // the other member's WireGuard public key
	At   time.Time
}

// Rendezvous plans meetings. A member asks a peer it reaches only through a
// relay (or not at all) to meet, by publishing the meeting in its sealed
// discovery data; the peer sees it through its watch and joins. It is pure
// logic; not safe for concurrent use.
type Rendezvous struct {
	self     [32]byte
	lead     time.Duration
	interval time.Duration
	keep     time.Duration
	asked    map[[32]byte]time.Time // our latest request's meeting time, per peer
	attempts map[[32]byte]int       // meetings asked in a row, per peer still off direct
	joined   map[[32]byte]time.Time // the latest meeting time we joined, per peer
}

// NewRendezvous returns a planner for the member whose public key is self.
// Zero durations take the defaults.
func NewRendezvous(self [32]byte, lead, interval, keep time.Duration) *Rendezvous {
	if lead <= 0 {
		lead = DefaultRendezvousLead
	}
	if interval <= 0 {
		interval = DefaultRendezvousInterval
	}
	if keep <= 0 {
		keep = DefaultRendezvousKeep
	}
	return &Rendezvous{self: self, lead: lead, interval: interval, keep: keep,
		asked: map[[32]byte]time.Time{}, attempts: map[[32]byte]int{}, joined: map[[32]byte]time.Time{}}
}

// Step plans at now. need holds the peers to meet: not on a direct path,
// with direct candidates to probe. requests holds, per peer, the meetings
// that peer publishes (for anyone: those for other members are ignored).
// It returns the meetings to publish and those to start now (ours, new,
// and the peers' we have not joined yet, each once).
func (r *Rendezvous) Step(now time.Time, need map[[32]byte]bool, requests map[[32]byte][]Meeting) (publish, start []Meeting) {
	// A request far from now is stale, or its sender's clock is badly off:
	// probing then would open nothing the other side uses.
	window := r.interval + r.keep
	for peer, ms := range requests {
		for _, m := range ms {
			if m.Peer != r.self || m.At.Before(now.Add(-r.keep)) || m.At.After(now.Add(window)) || !m.At.After(r.joined[peer]) {
				continue
			}
			r.joined[peer] = m.At
			start = append(start, Meeting{Peer: peer, At: m.At})
		}
	}
	for peer := range need {
		if at, ok := r.asked[peer]; ok && now.Sub(at) < r.backoff(peer) {
			continue
		}
		if at, ok := r.joined[peer]; ok && now.Sub(at) < r.interval {
			continue // the peer is asking already
		}
		at := now.Add(r.lead).Round(time.Millisecond) // what the wire carries
		r.asked[peer] = at
		r.attempts[peer]++
		start = append(start, Meeting{Peer: peer, At: at})
	}
	for peer := range r.attempts {
		if !need[peer] {
			delete(r.attempts, peer) // direct again (or gone): the next need starts afresh
		}
	}
	for peer, at := range r.asked {
		if now.Before(at.Add(r.keep)) {
			publish = append(publish, Meeting{Peer: peer, At: at})
		} else if !need[peer] {
			delete(r.asked, peer)
		}
	}
	for peer, at := range r.joined {
		if now.Sub(at) > window {
			delete(r.joined, peer)
		}
	}
	byPeer := func(a, b Meeting) int { return bytes.Compare(a.Peer[:], b.Peer[:]) }
	slices.SortFunc(publish, byPeer)
	slices.SortFunc(start, byPeer)
	return publish, start
}

// backoff is how long after our last meeting with peer we ask again.
func (r *Rendezvous) backoff(peer [32]byte) time.Duration {
	return r.interval * time.Duration(min(1<<max(r.attempts[peer]-1, 0), maxBackoff))
}
