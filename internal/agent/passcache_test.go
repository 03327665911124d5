package agent

import (
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// The device view is updated in place: a peer whose statistics changed
// shows the new ones, and a peer replaced by another (same count) is gone.
func TestDeviceCacheFollowsChanges(t *testing.T) {
	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	var c deviceCache
	c.observe([]wg.PeerStats{{PublicKey: k1, RxBytes: 1}, {PublicKey: k2, RxBytes: 2}})
	v := c.observe([]wg.PeerStats{{PublicKey: k1, RxBytes: 1}, {PublicKey: k2, RxBytes: 5, Endpoint: ap("192.0.2.9:1")}})
	if v.obs[k2].RxBytes != 5 || v.byKey[k2].Endpoint != ap("192.0.2.9:1") || v.obs[k1].RxBytes != 1 {
		t.Errorf("changed statistics not seen: obs %+v", v.obs)
	}
	v = c.observe([]wg.PeerStats{{PublicKey: k1, RxBytes: 1}, {PublicKey: k3, RxBytes: 3}})
	if _, ok := v.byKey[k2]; ok || len(v.byKey) != 2 || len(v.obs) != 2 || v.obs[k3].RxBytes != 3 {
		t.Errorf("replaced peer: byKey %v obs %v, want k1 and k3 only", v.byKey, v.obs)
	}
	v = c.observe([]wg.PeerStats{{PublicKey: k1, RxBytes: 1, AllowedIPs: []netip.Prefix{pfx("fd00::1/128")}}, {PublicKey: k3, RxBytes: 3}})
	if len(v.byKey[k1].AllowedIPs) != 1 {
		t.Errorf("changed AllowedIPs not seen: %+v", v.byKey[k1])
	}
}

// The reused quiet map starts empty: what it held two passes ago must not
// count as the last pass's.
func TestWireguardPeersSpareMapCleared(t *testing.T) {
	k, gone := testKey(t), testKey(t)
	peers := []mesh.Peer{{PublicKey: k}}
	out := wireguardPeers(wireguardInput{peers: peers, verdicts: map[wgtypes.Key]mesh.Status{k: {Quiet: true}},
		spare: map[wgtypes.Key]bool{gone: true, k: false}, want: make([]wg.PeerConfig, 3)}, slog.Default())
	if len(out.quiet) != 1 || !out.quiet[k] || len(out.want) != 1 {
		t.Errorf("quiet %v want %d: want only this pass's peer", out.quiet, len(out.want))
	}
	if len(out.reset) != 0 {
		t.Errorf("reset %v: the spare map's content was taken for the last pass's", out.reset)
	}
}

// A status shares the last one's lines only when nothing they show
// changed: a new counter, state, endpoint or name is formatted.
func TestReportReusesOnlyUnchanged(t *testing.T) {
	k := testKey(t)
	peers := []mesh.Peer{{PublicKey: k, Name: "p", Address: addr("fd00:1::2"), Endpoints: []netip.AddrPort{ap("192.0.2.2:51820")}}}
	in := reportInput{id: Identity{Address: addr("fd00:1::1")}, dev: newFakeDevice(), peers: peers,
		verdicts: map[wgtypes.Key]mesh.Status{k: {State: mesh.StateDown}},
		byKey:    map[wgtypes.Key]wg.PeerStats{k: {PublicKey: k, RxBytes: 1}}, now: time.Unix(1700000000, 0)}
	first, raw := report(in)
	in.prev, in.prevPeers, in.raw = first, peers, raw
	same, _ := report(in)
	if same.Peers[0] != first.Peers[0] {
		t.Errorf("unchanged input: peers formatted anew")
	}
	for _, change := range []func(in *reportInput){
		func(in *reportInput) { in.byKey = map[wgtypes.Key]wg.PeerStats{k: {PublicKey: k, RxBytes: 2}} },
		func(in *reportInput) { in.verdicts = map[wgtypes.Key]mesh.Status{k: {State: mesh.StateUp}} },
		func(in *reportInput) {
			in.byKey = map[wgtypes.Key]wg.PeerStats{k: {PublicKey: k, RxBytes: 1, Endpoint: ap("198.51.100.1:1")}}
		},
		func(in *reportInput) { in.paths = map[wgtypes.Key]PathChoice{k: {Path: "direct"}} },
		func(in *reportInput) {
			in.peers = []mesh.Peer{{PublicKey: k, Name: "p", Address: addr("fd00:1::2"), Endpoints: []netip.AddrPort{ap("192.0.2.3:51820")}}}
		},
		func(in *reportInput) {
			in.peers = []mesh.Peer{{PublicKey: k, Name: "renamed", Address: addr("fd00:1::2"), Endpoints: []netip.AddrPort{ap("192.0.2.2:51820")}}}
		},
	} {
		c := in
		c.raw = slices.Clone(raw)
		change(&c)
		got, _ := report(c)
		want, _ := report(reportInput{id: c.id, dev: c.dev, peers: c.peers, verdicts: c.verdicts, byKey: c.byKey, paths: c.paths, now: c.now})
		if !reflect.DeepEqual(got.Peers[0], want.Peers[0]) {
			t.Errorf("changed input: peer %+v, want %+v", got.Peers[0], want.Peers[0])
		}
	}
}

// Peers that join keep the lines of those already there, whatever their
// places: the last line is found by affiliate ID, not by index.
func TestReportKeepsLinesWhenPeersJoin(t *testing.T) {
	kb, kd, ka, kc := testKey(t), testKey(t), testKey(t), testKey(t)
	peer := func(k wgtypes.Key, id string) mesh.Peer {
		return mesh.Peer{PublicKey: k, AffiliateID: id, Name: id, Address: addr("fd00:1::2"), Endpoints: []netip.AddrPort{ap("192.0.2.2:51820")}}
	}
	before := []mesh.Peer{peer(kb, "b"), peer(kd, "d")}
	in := reportInput{id: Identity{Address: addr("fd00:1::1")}, dev: newFakeDevice(), peers: before, now: time.Unix(1700000000, 0)}
	first, raw := report(in)
	in.prev, in.prevPeers, in.raw = first, before, raw
	in.peers = []mesh.Peer{peer(ka, "a"), peer(kb, "b"), peer(kc, "c"), peer(kd, "d")}
	got, gotRaw := report(in)
	if got.Peers[1] != first.Peers[0] || got.Peers[3] != first.Peers[1] {
		t.Errorf("b and d were formatted anew after a and c joined")
	}
	if got.Peers[0].Name != "a" || got.Peers[2].Name != "c" || len(gotRaw) != 4 {
		t.Errorf("new lines %+v %+v, raw %d: want a and c, four raw values", got.Peers[0], got.Peers[2], len(gotRaw))
	}
	if len(raw) != 2 {
		t.Errorf("the last pass's raw values were changed: %d", len(raw))
	}
}

// Without the last raw values (which times and endpoint a line shows), no
// line is kept, but the text of an unchanged peer still is.
func TestReportWithoutRawKeepsTextOnly(t *testing.T) {
	k := testKey(t)
	peers := []mesh.Peer{{PublicKey: k, AffiliateID: "a", Address: addr("fd00:1::2"), Endpoints: []netip.AddrPort{ap("192.0.2.2:51820")}}}
	in := reportInput{id: Identity{Address: addr("fd00:1::1")}, dev: newFakeDevice(), peers: peers, now: time.Unix(1700000000, 0)}
	first, _ := report(in)
	in.prev, in.prevPeers = first, peers
	got, raw := report(in)
	if got.Peers[0] == first.Peers[0] {
		t.Error("a line was kept without knowing what it was formatted from")
	}
	if &got.Peers[0].Candidates[0] != &first.Peers[0].Candidates[0] || len(raw) != 1 {
		t.Errorf("the unchanged peer's text was formatted anew (raw %d)", len(raw))
	}
}
