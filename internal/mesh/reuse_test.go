package mesh

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// StepInto reuses the caller's map and the tracker its last order: a peer
// replaced by another (the same count) is forgotten, the new one starts
// fresh, and the verdicts hold this Step's peers only.
func TestTrackerForgetsReplacedPeers(t *testing.T) {
	a, b, c := testKey(t), testKey(t), testKey(t)
	tr := NewTracker(testHealth, testKey(t))
	now := time.Unix(1700000000, 0)
	ep := func(s string) []netip.AddrPort { return []netip.AddrPort{netip.MustParseAddrPort(s)} }
	out := tr.StepInto(make(map[wgtypes.Key]Status), now, []Peer{{PublicKey: a, Endpoints: ep("192.0.2.1:1")}, {PublicKey: b, Endpoints: ep("192.0.2.2:1")}}, nil)
	out = tr.StepInto(out, now.Add(time.Second), []Peer{{PublicKey: c, Endpoints: ep("192.0.2.3:1")}, {PublicKey: a, Endpoints: ep("192.0.2.1:1")}}, nil)
	if _, ok := out[b]; ok || len(out) != 2 {
		t.Errorf("verdicts %v: want a and c only", out)
	}
	if _, ok := tr.peers[b]; ok || len(tr.peers) != 2 {
		t.Errorf("tracker keeps %d peers: want a and c", len(tr.peers))
	}
	if got := tr.peers[c].firstSeen; !got.Equal(now.Add(time.Second)) {
		t.Errorf("new peer first seen %v, want the second Step", got)
	}
}
