package agent

import (
	"context"
	"time"
)

// pass runs one reconcile pass; byChange says a discovery change started
// it, which paceWait times, and which a change pass takes when it can. It
// reports whether the pass was a full one.
func (a *agent) pass(ctx context.Context, byChange bool) (full bool) {
	start := time.Now()
	full = !byChange || !a.changePass(ctx)
	if full {
		a.reconcile(ctx)
		a.lastPass = start
	}
	if byChange {
		a.pace.start, a.pace.end, a.pace.full = start, time.Now(), full
	}
	return full
}

// paceWait is how long a discovery change waits before its pass: until
// paceFactor times the last change's pass has passed since that pass
// ended (at most maxPace). A change after a quiet spell is taken at once,
// whatever the ticks do; a burst (a cluster starting, every member
// re-publishing after a service restart) is taken in passes that keep the
// agent busy at most 1/(paceFactor+1) of the time, each seeing every
// change that arrived before it. On a loaded host a pass takes longer and
// the agent backs off with it.
//
// After a change pass the wait is at most maxChangePace: such a pass does
// little work (see changePass), so when it took long, it mostly waited for
// the CPU, and waiting seconds more behind it would only delay the mesh.
// It is at least burstGap: a pass costs a walk over every peer however
// few changed, so a burst is taken in at most ten passes a second.
func (a *agent) paceWait(now time.Time) time.Duration {
	gap := min(paceFactor*a.pace.end.Sub(a.pace.start), maxPace)
	if !a.pace.full {
		gap = min(gap, maxChangePace)
	}
	gap = max(gap, burstGap)
	return a.pace.end.Add(gap).Sub(now)
}

const (
	paceFactor    = 10
	maxPace       = 5 * time.Second
	maxChangePace = 250 * time.Millisecond
	burstGap      = 100 * time.Millisecond
)

// handshook reports whether a peer completed a handshake since the last
// pass read the device: what turns a converging peer up. A converging
// agent probes for it every convergeTick and runs a pass only when one
// did. What the last pass itself changed (peers added, endpoints set) is
// no reason for another: during a cluster's start every pass adds peers,
// and a probe that took those for news ran a full pass four times a
// second, past the pacing. A peer's endpoint roaming, or the device
// failing to answer, waits for the tick.
func (a *agent) handshook() bool {
	stats, err := a.dev.Peers()
	if err != nil {
		return false
	}
	for i := range stats {
		s := &stats[i]
		if s.LastHandshake.IsZero() {
			continue // none completed (most peers of a starting cluster): no lookup
		}
		if o, ok := a.devCache.v.byKey[s.PublicKey]; !ok || !s.LastHandshake.Equal(o.LastHandshake) {
			return true
		}
	}
	return false
}
