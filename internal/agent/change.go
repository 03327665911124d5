package agent

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// PartialChooser is a PathChooser that takes a change to a few peers
// without a pass over all of them (see changePass); with a PathChooser
// that is not one, every discovery change runs a full pass.
type PartialChooser interface {
	// ChooseSome steps only peers and returns the whole map Choose
	// returns, updated for them.
	ChooseSome(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]PathChoice
	// Forget drops peers that left the set.
	Forget(keys []wgtypes.Key)
}

// changePass takes a discovery change to the peers it concerns (a member
// moved, joined or left) instead of a full pass over every peer. At a
// thousand members each change reaches every member, and a full pass
// there walks a thousand peers through the peer set, the tracker, the
// path chooser and the status: a cluster's control plane spent its time
// re-deciding peers nothing had happened to.
//
// The peer set is updated (mesh.Builder.Update); only the peers that
// changed are stepped through the tracker and the path chooser, configured
// on the device (Device.UpdatePeers) and formatted anew for status; the
// host policy is applied again only when a change routes something. Time
// does not move for the other peers: the tick's full pass advances every
// peer's health and path as before, and re-derives everything from its
// inputs, so anything a change pass left undone is done within a tick
// (the relays offered to a new peer, its NAT rendezvous requests, the
// endpoints published for a peer that left).
//
// It reports false, having changed nothing, when the change is not one it
// can take this way: no full pass yet, this node's observed address or a
// member's NAT-traversal data changed, a path chooser that cannot step
// some peers, or a change mesh.Builder.Update declines (members sharing
// an address or an endpoint, advertised networks). The caller then runs a
// full pass.
func (a *agent) changePass(ctx context.Context) bool {
	a.mu.Lock()
	old := a.status
	a.mu.Unlock()
	chooser, partial := a.opts.Paths.(PartialChooser)
	if old == nil || a.disco == nil || a.opts.Paths != nil && !partial {
		return false
	}
	prevTraversal := a.discoCache.view.traversal
	disc := a.discoCache.read(a.disco)
	seen := ""
	if disc.observedSelf.IsValid() {
		seen = disc.observedSelf.String()
	}
	if seen != old.ObservedAddress || !maps.EqualFunc(a.discoCache.view.traversal, prevTraversal, sameTraversal) {
		return false // what this node publishes changes: a full pass's
	}
	before := a.specs.out
	set, d, ok := a.specs.update(disc.affiliates)
	if !ok {
		return false
	}
	if len(d.Changed) == 0 && len(d.Removed) == 0 {
		return true // nothing the mesh uses (a member's hostname, say)
	}
	now := time.Now()
	peers := set.Peers
	dk := deltaKeys(d)
	changed := make([]mesh.Peer, 0, len(d.Changed))
	changedAt := make([]int, 0, len(d.Changed)) // their places in peers
	for i := range peers {
		if dk.changed[peers[i].PublicKey] {
			changed, changedAt = append(changed, peers[i]), append(changedAt, i)
		}
	}
	// Peers of the last peer set are on the device (the last pass put them
	// there); new ones are not yet.
	onDevice := slices.ContainsFunc(changed, func(p mesh.Peer) bool { return a.peerKeys[p.PublicKey] })
	a.notePeerKeys(now, d)

	obs, byKey := a.freshObservations(dk.changed, onDevice)
	for _, k := range d.Removed {
		delete(a.verdicts, k)
	}
	a.verdicts = reserve.Map(a.verdicts, len(changed))
	a.quiet = reserve.Map(a.quiet, len(changed))
	a.tracker.Forget(d.Removed)
	a.tracker.StepSome(a.verdicts, now, changed, obs)
	var paths map[wgtypes.Key]PathChoice
	if partial {
		chooser.Forget(d.Removed)
		paths = chooser.ChooseSome(now, changed, obs)
	}

	wi := wireguardInput{verdicts: a.verdicts, paths: paths, psk: a.psk, keepalive: a.cfg.WireGuard.Keepalive.D()}
	configs := make([]wg.PeerConfig, 0, len(changed))
	remove := slices.Clone(d.Removed)
	for i := range changed {
		p := &changed[i]
		pc, quiet := wi.peerConfig(p, a.log)
		if was, known := a.quiet[p.PublicKey]; quiet && known && !was {
			remove = append(remove, p.PublicKey) // see wireguardOutput.reset
		}
		a.quiet[p.PublicKey] = quiet
		configs = append(configs, pc)
	}
	for _, k := range d.Removed {
		delete(a.quiet, k)
	}
	var warnings []string
	if err := a.dev.UpdatePeers(configs, remove); err != nil {
		warnings = append(warnings, err.Error())
	}

	if a.policy != nil && routesChanged(a.prefix, before.Peers, changed, dk) {
		if err := a.applyPolicy(ctx, a.policyState(peers, a.verdicts, set.Contested)); err != nil {
			warnings = append(warnings, "host policy: "+err.Error())
		}
	}

	ri := reportInput{verdicts: a.verdicts, byKey: byKey, paths: paths}
	if len(d.Removed) == 0 && len(peers) == len(a.reported) && len(a.reportedRaw) == len(peers) && len(old.Peers) == len(peers) {
		// No peer came or went: the changed lines are replaced where they
		// are, without copying a thousand others.
		a.patchReportInPlace(old, &ri, peers, changedAt, now, warnings)
		a.reported = peers
		return true
	}
	if s, raw := a.patchReport(old, &ri, peers, dk, now); s != nil {
		s.Warnings = withWarnings(a.fullWarnings, warnings)
		a.reported, a.reportedRaw = peers, raw
		a.mu.Lock()
		a.status = s
		a.mu.Unlock()
	}
	return true
}

// freshObservations is what the device reports now for the changed peers,
// when some are on it already (onDevice): stepping a peer on the last
// pass's report (up to a tick old) could take a path that just came up for
// a silent one, and move its endpoint away. Peers new to the device have nothing to read,
// and a change of new peers alone (a cluster starting) reads nothing; a
// device that cannot be read leaves the last pass's report.
func (a *agent) freshObservations(changed map[wgtypes.Key]bool, onDevice bool) (map[wgtypes.Key]mesh.Observation, map[wgtypes.Key]wg.PeerStats) {
	obs, byKey := a.devCache.v.obs, a.devCache.v.byKey
	if !onDevice {
		return obs, byKey
	}
	stats, err := a.dev.Peers()
	if err != nil {
		return obs, byKey
	}
	obs, byKey = make(map[wgtypes.Key]mesh.Observation, len(changed)), make(map[wgtypes.Key]wg.PeerStats, len(changed))
	for i := range stats {
		if s := &stats[i]; changed[s.PublicKey] {
			obs[s.PublicKey], byKey[s.PublicKey] = observation(*s), *s
		}
	}
	return obs, byKey
}

// notePeerKeys keeps the peer keys of watchPeerSet up to date with a
// change pass's delta: a new peer starts a converging phase.
func (a *agent) notePeerKeys(now time.Time, d mesh.Delta) {
	a.peerKeys = reserve.Map(a.peerKeys, len(d.Changed))
	for _, k := range d.Removed {
		delete(a.peerKeys, k)
	}
	for _, k := range d.Changed {
		if !a.peerKeys[k] {
			a.peerKeys[k] = true
			a.fastUntil = now.Add(convergeFor)
		}
	}
}

// routesChanged reports whether a change routes or stops routing anything
// outside the mesh prefix (which is on the link): only then does the host
// policy change.
func routesChanged(prefix netip.Prefix, before []mesh.Peer, changed []mesh.Peer, dk delta) bool {
	routes := func(p *mesh.Peer) bool {
		return slices.ContainsFunc(p.AllowedIPs, func(n netip.Prefix) bool { return !prefix.Overlaps(n) || n.Bits() < prefix.Bits() })
	}
	for i := range changed {
		if routes(&changed[i]) {
			return true
		}
	}
	for i := range before {
		p := &before[i]
		if (dk.changed[p.PublicKey] || dk.removed[p.PublicKey]) && routes(p) {
			return true
		}
	}
	return false
}

// patchReportInPlace replaces the lines of the changed peers, at their
// places at, in the current status; the peers are those of the status,
// in the same order (none came or went).
func (a *agent) patchReportInPlace(st *Status, ri *reportInput, peers []mesh.Peer, at []int, now time.Time, warnings []string) {
	lines, raws := make([]*PeerStatus, len(at)), make([]peerRaw, len(at))
	for j, i := range at {
		f := ri.factsOf(&peers[i])
		lines[j], raws[j] = f.line(&peers[i], nil), f.raw()
	}
	a.mu.Lock()
	for j, i := range at {
		if lines[j].State != st.Peers[i].State || st.Peers[i].PublicKey != lines[j].PublicKey {
			a.logPeerState(lines[j])
		}
		st.Peers[i] = lines[j]
		a.reportedRaw[i] = raws[j]
	}
	st.UpdatedAt = now.UTC()
	st.Warnings = withWarnings(a.fullWarnings, warnings)
	a.mu.Unlock()
}

// withWarnings is the last full pass's warnings and a change pass's (not
// the last change pass's: they are not carried from pass to pass).
func withWarnings(full, more []string) []string {
	w := append(slices.Clip(full), more...)
	if w == nil {
		w = []string{}
	}
	return w
}

// patchReport is the last status with the changed peers' lines made anew,
// the removed ones' dropped and the others' kept, and the raw values of
// its lines (reportInput.raw). Lines are formatted only for the changed
// peers; the others are copied. It returns nil if the last status does
// not list the unchanged peers in the peer set's order (never, unless
// the two disagree): status then waits for the next full pass.
func (a *agent) patchReport(old *Status, ri *reportInput, peers []mesh.Peer, dk delta, now time.Time) (*Status, []peerRaw) {
	s := *old
	s.UpdatedAt = now.UTC()
	s.Peers = make([]*PeerStatus, 0, len(peers))
	raw := make([]peerRaw, 0, len(peers))
	gone := func(k wgtypes.Key) bool { return dk.removed[k] || dk.changed[k] }
	i := 0 // in the last status, whose lines are a.reported's peers
	for j := range peers {
		p := &peers[j]
		for i < len(a.reported) && a.reported[i].PublicKey != p.PublicKey && gone(a.reported[i].PublicKey) {
			i++
		}
		was := ""
		if i < len(a.reported) && a.reported[i].PublicKey == p.PublicKey {
			if !dk.changed[p.PublicKey] && i < len(old.Peers) && i < len(a.reportedRaw) {
				s.Peers, raw = append(s.Peers, old.Peers[i]), append(raw, a.reportedRaw[i])
				i++
				continue
			}
			was = old.Peers[i].State
			i++
		} else if !dk.changed[p.PublicKey] {
			return nil, nil
		}
		f := ri.factsOf(p)
		line := f.line(p, nil)
		if line.State != was {
			a.logPeerState(line)
		}
		s.Peers, raw = append(s.Peers, line), append(raw, f.raw())
	}
	return &s, raw
}

// delta is a mesh.Delta as sets.
type delta struct{ changed, removed map[wgtypes.Key]bool }

func deltaKeys(d mesh.Delta) delta {
	dk := delta{changed: make(map[wgtypes.Key]bool, len(d.Changed)), removed: make(map[wgtypes.Key]bool, len(d.Removed))}
	for _, k := range d.Changed {
		dk.changed[k] = true
	}
	for _, k := range d.Removed {
		dk.removed[k] = true
	}
	return dk
}

// sameTraversal compares what two members publish for NAT traversal.
func sameTraversal(a, b discovery.Traversal) bool {
	return a.RelayPort == b.RelayPort && slices.Equal(a.Rendezvous, b.Rendezvous)
}
