package relay

import (
	"errors"
	"time"
)

// DefaultWindow is how far a direct probe's timestamp may be from the
// receiver's clock. (Registrations with relays use per-member counters
// instead and compare no clocks.)
const DefaultWindow = time.Minute

var (
	errStale  = errors.New("timestamp outside window")
	errReplay = errors.New("nonce already seen")
)

// replayGuard rejects probes whose timestamp is outside the window and those
// whose nonce was already seen inside it. It holds at most max nonces: when
// full it forgets the oldest, so that a member flooding valid probes cannot
// make this node refuse everyone else's. (A replayed probe only earns an
// answer to where it came from, which a member can have by asking; the
// cache keeps strangers from replaying probes they captured.)
type replayGuard struct {
	window time.Duration
	max    int
	seen   map[[nonceLen]byte]time.Time
	order  [][nonceLen]byte // nonces in arrival order, a ring of max entries
	next   int              // where the next nonce goes in order
}

func newReplayGuard(window time.Duration, max int) *replayGuard {
	return &replayGuard{window: window, max: max, seen: make(map[[nonceLen]byte]time.Time), order: make([][nonceLen]byte, 0, max)}
}

func (g *replayGuard) check(h hello, now time.Time) error {
	if d := now.Sub(h.Time); d > g.window || d < -g.window {
		return errStale
	}
	if _, ok := g.seen[h.Nonce]; ok {
		return errReplay
	}
	if len(g.order) < g.max {
		g.order = append(g.order, h.Nonce)
	} else {
		delete(g.seen, g.order[g.next]) // the oldest
		g.order[g.next] = h.Nonce
		g.next = (g.next + 1) % g.max
	}
	g.seen[h.Nonce] = h.Time
	return nil
}
