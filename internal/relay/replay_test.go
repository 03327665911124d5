package relay

import (
	"testing"
	"time"
)

// A member flooding valid direct probes must not stop this node from
// answering the probes of others: when the nonce cache is full the oldest
// nonces are forgotten, never fresh probes refused.
func TestProbeGuardFlood(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := newReplayGuard(DefaultWindow, 1<<14)
	for range 20_000 {
		h, _ := newHello(typePing, [32]byte{'e'}, now)
		if err := g.check(h, now); err != nil {
			t.Fatalf("flood probe refused early: %v", err)
		}
	}
	h, _ := newHello(typePing, [32]byte{'a'}, now)
	if err := g.check(h, now); err != nil {
		t.Fatalf("after a flood, a member's probe is refused: %v", err)
	}
	if err := g.check(h, now); err != errReplay {
		t.Fatalf("a replay of it: %v, want errReplay", err)
	}
	if len(g.seen) > 1<<14 {
		t.Errorf("cache holds %d nonces, above its bound", len(g.seen))
	}
}
