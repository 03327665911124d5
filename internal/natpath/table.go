package natpath

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Table holds one Path per peer. It is not safe for concurrent use; the
// agent's reconcile loop owns it.
type Table struct {
	t     Timing
	paths map[wgtypes.Key]*Path
}

// NewTable returns an empty table with timing t.
func NewTable(t Timing) *Table { return &Table{t: t, paths: map[wgtypes.Key]*Path{}} }

// Step advances every peer in in and forgets peers no longer there.
func (tb *Table) Step(now time.Time, in map[wgtypes.Key]Input) map[wgtypes.Key]Status {
	return tb.StepInto(make(map[wgtypes.Key]Status, len(in)), now, in)
}

// StepInto is Step writing into out (cleared first) and returning it, for
// a caller that reuses one map across passes.
func (tb *Table) StepInto(out map[wgtypes.Key]Status, now time.Time, in map[wgtypes.Key]Input) map[wgtypes.Key]Status {
	clear(out)
	for k, pin := range in {
		p := tb.paths[k]
		if p == nil {
			p = New(tb.t)
			tb.paths[k] = p
		}
		out[k] = p.Step(now, pin)
	}
	if len(tb.paths) > len(in) { // every key of in has a path: some are gone
		for k := range tb.paths {
			if _, ok := in[k]; !ok {
				delete(tb.paths, k)
			}
		}
	}
	return out
}

// StepPeer advances the peer k alone (creating its path if new), for a
// caller that reads peers one by one; it calls Forget when done.
func (tb *Table) StepPeer(now time.Time, k wgtypes.Key, pin Input) Status {
	p := tb.paths[k]
	if p == nil {
		p = New(tb.t)
		tb.paths[k] = p
	}
	return p.Step(now, pin)
}

// Len is the number of peers with a path.
func (tb *Table) Len() int { return len(tb.paths) }

// Forget drops the paths of the peers gone says are gone; a caller that
// stepped n peers with StepPeer and has n paths left need not call it.
func (tb *Table) Forget(gone func(wgtypes.Key) bool) {
	for k := range tb.paths {
		if gone(k) {
			delete(tb.paths, k)
		}
	}
}
