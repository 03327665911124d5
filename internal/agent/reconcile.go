package agent

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
)

// reconcile is one level-triggered pass over every input. Each step reads
// what the ones before it produced, as Talos's KubeSpan controllers read
// each other's resources:
//
//	observe      host addresses, discovery (observe.go), the device's peers
//	peer specs   who the peers are and what they route (peer_spec.go)
//	peer status  up or down, which endpoint or path (peer_status.go)
//	wireguard    the device's peer configuration (wireguard.go)
//	endpoints    endpoints learned from up peers (endpoints.go)
//	host policy  routing rules and the nftables table (policy.go)
//	affiliate    what this node publishes (affiliate.go)
//	report       the status the socket serves (report.go)
func (a *agent) reconcile(ctx context.Context) {
	now := time.Now()
	var warnings []string
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	if err := a.dev.UAPIError(); err != nil {
		warn("%v (wg show will not see the interface)", err)
	}

	addrs, err := a.opts.HostAddrs()
	if err != nil {
		warn("%v", err)
	}
	disc := a.discoCache.read(a.disco)
	localEps := mesh.LocalEndpoints(mesh.LocalInput{
		Addrs: addrs, Prefix: a.prefix, Observed: disc.observedSelf, Port: uint16(a.dev.ListenPort()),
		Filter: a.filter, Extra: a.extra,
	})
	stats, err := a.dev.Peers()
	if err != nil {
		warn("%v", err)
	}
	dev := a.devCache.observe(stats)
	if w := netpolicy.MTUWarning(a.underlayMTU(now, dev.stats), a.cfg.WireGuard.MTU); w != "" {
		warnings = append(warnings, w)
	}
	if w := a.decryptWarning(now); w != "" {
		warnings = append(warnings, w)
	}

	set := a.specs.peerSpecs(peerSpecInput{
		self: a.id.PublicKey(), prefix: a.prefix, own: append(slices.Clone(addrs), a.id.Address), ownNets: a.ownNets,
		static: a.cfg.StaticPeers, affs: disc.affiliates, filter: a.peerFilter, live: a.live, approved: a.approved,
	})
	peers := set.Peers
	warnings = append(warnings, set.Warnings...)
	a.refused.observe(set.Refused)
	a.watchPeerSet(now, peers)

	st := peerStatus{tracker: a.tracker, paths: a.opts.Paths, into: a.verdicts}.step(peerStatusInput{
		now: now, peers: peers, obs: dev.obs, remote: disc.traversal, static: a.cfg.StaticPeers,
	})

	wgo := wireguardPeers(wireguardInput{
		peers: peers, verdicts: st.verdicts, paths: st.paths, psk: a.psk, keepalive: a.cfg.WireGuard.Keepalive.D(),
		quiet: a.quiet, want: a.want, spare: a.spareQuiet,
	}, a.log)
	a.verdicts = st.verdicts
	a.quiet, a.spareQuiet, a.want = wgo.quiet, a.quiet, wgo.want
	if len(wgo.reset) > 0 {
		// Removed here, added afresh by the SyncPeers below.
		if err := a.dev.UpdatePeers(nil, wgo.reset); err != nil {
			warn("%v", err)
		}
	}
	if err := a.dev.SyncPeers(wgo.want); err != nil {
		warn("%v", err)
	}

	eps := peerEndpoints(endpointsInput{peers: peers, verdicts: st.verdicts, byKey: dev.byKey, prev: a.live})
	a.live = eps.live

	if a.policy != nil {
		if err := a.applyPolicy(ctx, a.policyState(peers, st.verdicts, set.Contested)); err != nil {
			warn("host policy: %v", err)
		}
	}

	if a.disco != nil {
		self := localAffiliate(affiliateInput{
			id: a.id, nodeName: a.nodeName(), hostname: hostname(), version: a.opts.Version,
			addrs: addrs, prefix: a.prefix, nets: a.nets, exclude: a.exclude,
			endpoints: localEps, traversal: st.traversal,
		})
		a.published.publish(a.disco, self, eps.observed)
	}

	a.fullWarnings = warnings
	ri := reportInput{
		id: a.id, node: a.nodeName(), dev: a.dev, endpoints: localEps, discovery: a.disco != nil,
		observedSelf: disc.observedSelf, warnings: warnings,
		peers: peers, verdicts: st.verdicts, byKey: dev.byKey, paths: st.paths, now: time.Now(),
	}
	a.mu.Lock()
	old := a.status
	a.mu.Unlock()
	ri.prev, ri.prevPeers, ri.raw = old, a.reported, a.reportedRaw
	s, raw := report(ri)
	a.reported, a.reportedRaw = peers, raw
	a.mu.Lock()
	a.status = s
	a.mu.Unlock()
	a.logTransitions(old, s)
}

// watchPeerSet starts a converging phase (a shorter tick, see nextTick)
// when the set of peers changed.
func (a *agent) watchPeerSet(now time.Time, peers []mesh.Peer) {
	if a.peerKeys != nil && samePeerKeys(a.peerKeys, peers) {
		return // the common case, without building the set
	}
	keys := make(map[wgtypes.Key]bool, len(peers))
	for _, p := range peers {
		keys[p.PublicKey] = true
	}
	if !reflect.DeepEqual(keys, a.peerKeys) {
		a.peerKeys, a.fastUntil = keys, now.Add(convergeFor)
	}
}

// samePeerKeys reports whether peers hold exactly the keys of set (peers
// hold each key once).
func samePeerKeys(set map[wgtypes.Key]bool, peers []mesh.Peer) bool {
	if len(set) != len(peers) {
		return false
	}
	for i := range peers {
		if !set[peers[i].PublicKey] {
			return false
		}
	}
	return true
}
