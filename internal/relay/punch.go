package relay

import "time"

// A punch is a burst of direct probes: long enough to cover the time the
// meeting request takes to reach the peer and a modest clock difference,
// short enough to stay cheap.
const (
	punchProbes   = 10
	punchInterval = 200 * time.Millisecond
	// punchHorizon bounds how far ahead a punch may be scheduled.
	punchHorizon = 2 * time.Minute
)

// Punch sends a burst of probes to peer's direct candidates (SetCandidates)
// from at, or at once if at has passed: this node's half of a rendezvous.
// Each NAT on the way sees this node send to the peer, so the peer's
// probes, sent at the same time, are let in as answers. A punch that would
// overlap one already scheduled for the peer is dropped.
func (b *Bind) Punch(peer [32]byte, at time.Time) {
	now := b.now()
	wait := min(max(at.Sub(now), 0), punchHorizon)
	start := now.Add(wait)
	id := IDOf(peer)
	b.mu.Lock()
	stop := b.stop
	if stop == nil || start.Before(b.punching[id]) {
		b.mu.Unlock()
		return
	}
	if len(b.punching) >= 4096 {
		for k, end := range b.punching {
			if end.Before(now) {
				delete(b.punching, k)
			}
		}
	}
	b.punching[id] = start.Add(punchProbes * punchInterval)
	b.mu.Unlock()
	b.punches.Add(1)
	b.done.Add(1)
	go func() {
		defer b.done.Done()
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for i := range punchProbes {
			select {
			case <-stop:
				return
			case <-timer.C:
			}
			b.ping(id)
			if i < punchProbes-1 {
				timer.Reset(punchInterval)
			}
		}
	}()
}

// Punches counts the punches started (rendezvous this node took part in).
func (b *Bind) Punches() uint64 { return b.punches.Load() }
