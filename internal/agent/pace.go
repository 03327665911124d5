package agent

import (
	"context"
	"time"
)

// pass runs one reconcile pass and notes its start and cost for pacing.
func (a *agent) pass(ctx context.Context) {
	start := time.Now()
	a.reconcile(ctx)
	a.pace.start, a.pace.end = start, time.Now()
}

// paceWait is how long a discovery change waits before its pass: until
// paceFactor times the last pass's duration has passed since it ended
// (at most maxPace). An isolated change is taken at once; a burst (a
// cluster starting, every member re-publishing after a service restart)
// is taken in passes that keep the agent busy at most 1/(paceFactor+1) of
// the time, each seeing every change that arrived before it.
func (a *agent) paceWait(now time.Time) time.Duration {
	gap := min(paceFactor*a.pace.end.Sub(a.pace.start), maxPace)
	return a.pace.end.Add(gap).Sub(now)
}

const (
	paceFactor = 10
	maxPace    = time.Second
)

// deviceMoved reports whether the device's peers differ from what the last
// pass read, in who they are, their endpoints or their handshakes: what
// can turn a converging peer up. A converging agent probes for it every
// convergeTick and runs a pass only when it did.
func (a *agent) deviceMoved() bool {
	stats, err := a.dev.Peers()
	if err != nil || len(stats) != len(a.seen) {
		return true
	}
	for i := range stats {
		s := &stats[i]
		o, ok := a.seen[s.PublicKey]
		if !ok || s.Endpoint != o.Endpoint || !s.LastHandshake.Equal(o.LastHandshake) {
			return true
		}
	}
	return false
}
