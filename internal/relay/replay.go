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
	errFull   = errors.New("nonce cache full")
)

// replayGuard rejects hellos whose timestamp is outside the window and
// those whose nonce was already seen inside it. Nonces are forgotten once
// their timestamp leaves the window, since the time check then rejects them.
type replayGuard struct {
	window time.Duration
	max    int
	seen   map[[nonceLen]byte]time.Time
}

func newReplayGuard(window time.Duration, max int) *replayGuard {
	return &replayGuard{window: window, max: max, seen: make(map[[nonceLen]byte]time.Time)}
}

func (g *replayGuard) check(h hello, now time.Time) error {
	if d := now.Sub(h.Time); d > g.window || d < -g.window {
		return errStale
	}
	if _, ok := g.seen[h.Nonce]; ok {
		return errReplay
	}
	if len(g.seen) >= g.max {
		for n, t := range g.seen {
			if now.Sub(t) > g.window {
				delete(g.seen, n)
			}
		}
		if len(g.seen) >= g.max {
			return errFull
		}
	}
	g.seen[h.Nonce] = h.Time
	return nil
}
