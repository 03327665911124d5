package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// A change pass leaves the device and the status as a full pass over the
// same input does. Members move, join and leave at random; some take
// another member's endpoint, which the change pass leaves to a full pass.
// After each pass a full pass must find no peer to add, remove or
// re-route on the device, and no line of status to change but the times.
func TestChangePassMatchesFullPass(t *testing.T) {
	a, d, dev := passedAgent(t, 40)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	taken, next := 0, 1000
	for step := range 300 {
		affs := slices.Clone(d.affs)
		i := rng.IntN(len(affs))
		what := ""
		switch rng.IntN(4) {
		case 0:
			what = "moves"
			ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(rng.IntN(250))}), uint16(30000+step))
			affs = withAffiliate(affs, i, func(a *discovery.Affiliate) { a.Endpoints = []netip.AddrPort{ep} })
		case 1:
			what = "takes another's endpoint"
			eps := slices.Clone(affs[rng.IntN(len(affs))].Endpoints)
			affs = withAffiliate(affs, i, func(a *discovery.Affiliate) { a.Endpoints = eps })
		case 2:
			if len(affs) < 10 {
				continue
			}
			what = "leaves"
			affs = slices.Delete(affs, i, i+1)
		case 3:
			what = "joins"
			m := newMember(t, a, fmt.Sprintf("node-%04d.%d", rng.IntN(40), next), next)
			at, _ := slices.BinarySearchFunc(affs, m.ID, func(x *discovery.Affiliate, id string) int { return strings.Compare(x.ID, id) })
			affs = slices.Insert(affs, at, &m)
			next++
		}
		d.affs = affs
		full := a.pass(ctx, true)
		if !full {
			taken++
		}
		cfg, lines := deviceText(dev.lastSync()), statusText(a.snapshot())
		a.reconcile(ctx)
		if want := deviceText(dev.lastSync()); cfg != want {
			t.Fatalf("step %d (member %d %s, full pass %v): the device had\n%s\na full pass made it\n%s", step, i, what, full, cfg, want)
		}
		if want := statusText(a.snapshot()); lines != want {
			t.Fatalf("step %d (member %d %s, full pass %v): status had\n%s\na full pass made it\n%s", step, i, what, full, lines, want)
		}
	}
	t.Logf("change passes took %d of 300 changes", taken)
	if taken < 100 {
		t.Errorf("change passes took %d of 300 changes: most moves, joins and leaves should be theirs", taken)
	}
	if dev.updates == 0 {
		t.Error("no change pass configured the device through UpdatePeers")
	}
}

// passedAgent is benchAgent with n peers on the recording fake device,
// after its first (full) pass.
func passedAgent(t *testing.T, n int) (*agent, *listDisco, *fakeDevice) {
	a, d := benchAgent(t, n)
	dev := newFakeDevice()
	a.dev = dev
	a.pass(context.Background(), false)
	return a, d, dev
}

// newMember is a new member's affiliate.
func newMember(t *testing.T, a *agent, id string, n int) discovery.Affiliate {
	addr := a.prefix.Addr().As16()
	addr[8], addr[13], addr[14], addr[15] = 3, byte(n>>16), byte(n>>8), byte(n)
	return discovery.Affiliate{ID: id, NodeName: fmt.Sprint("joined-", n), PublicKey: testKey(t).String(),
		Address: netip.AddrFrom16(addr), Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}), 51820)}}
}

// deviceText is a configuration's peers and AllowedIPs, in key order.
func deviceText(cfg []wg.PeerConfig) string {
	lines := make([]string, 0, len(cfg))
	for _, pc := range cfg {
		lines = append(lines, fmt.Sprint(pc.PublicKey, pc.AllowedIPs))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// statusText is status's peers without what time moves (states,
// activity, counters).
func statusText(s *Status) string {
	var b strings.Builder
	for _, p := range s.Peers {
		fmt.Fprintln(&b, p.Name, p.PublicKey, p.AffiliateID, p.Address, p.AllowedIPs, p.Candidates)
	}
	fmt.Fprintln(&b, s.Warnings)
	return b.String()
}

// A member that left is gone from the tracker, the path chooser, the
// device and status after the change pass that saw it leave.
func TestChangePassForgetsPeersThatLeft(t *testing.T) {
	a, d, dev := passedAgent(t, 10)
	ctx := context.Background()
	gone, err := wgtypes.ParseKey(d.affs[4].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	d.affs = slices.Delete(slices.Clone(d.affs), 4, 5)
	if full := a.pass(ctx, true); full {
		t.Fatal("a member leaving took a full pass")
	}
	if _, ok := a.verdicts[gone]; ok {
		t.Error("the tracker's verdicts keep the member that left")
	}
	if strings.Contains(deviceText(dev.lastSync()), gone.String()) {
		t.Error("the device keeps the member that left")
	}
	if strings.Contains(statusText(a.snapshot()), gone.String()) {
		t.Error("status lists the member that left")
	}
	if c := a.opts.Paths.Choose(a.lastPass, a.reported, a.devCache.v.obs); len(c) != 9 {
		t.Errorf("the path chooser holds %d peers after a full step, want 9", len(c))
	}
}

// What this node publishes depends on its observed address and on what
// members publish for NAT traversal: a change to either takes a full pass
// (which publishes), not a change pass.
func TestChangePassLeavesPublishingToFullPasses(t *testing.T) {
	a, d, _ := passedAgent(t, 10)
	ctx := context.Background()
	d.affs = withAffiliate(d.affs, 2, func(a *discovery.Affiliate) { a.Traversal = discovery.Traversal{RelayPort: 4000} })
	if full := a.pass(ctx, true); !full {
		t.Error("a member's relay port was taken by a change pass")
	}
	d.observed = netip.MustParseAddr("203.0.113.50")
	if full := a.pass(ctx, true); !full {
		t.Error("a new observed address was taken by a change pass")
	}
	d.affs = withAffiliate(d.affs, 3, func(a *discovery.Affiliate) {
		a.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:4000")}
	})
	if full := a.pass(ctx, true); full {
		t.Error("an endpoint moving after them took a full pass")
	}
}

// A change pass steps a peer already on the device on what the device
// reports now, not on the last full pass's report: a handshake since then
// shows in its status line and counts for its path.
func TestChangePassReadsTheDeviceForPeersOnIt(t *testing.T) {
	a, d, dev := passedAgent(t, 10)
	ctx := context.Background()
	k, err := wgtypes.ParseKey(d.affs[4].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hs := time.Now()
	dev.setStats(wg.PeerStats{PublicKey: k, Endpoint: d.affs[4].Endpoints[0], LastHandshake: hs, RxBytes: 1000})
	d.affs = withAffiliate(d.affs, 4, func(a *discovery.Affiliate) {
		a.Endpoints = append(slices.Clone(a.Endpoints), netip.MustParseAddrPort("203.0.113.9:4000"))
	})
	if full := a.pass(ctx, true); full {
		t.Fatal("a moved endpoint took a full pass")
	}
	for _, p := range a.snapshot().Peers {
		if p.PublicKey == k.String() && p.LastHandshake == "" {
			t.Errorf("status line %+v: the handshake since the last full pass is missing", p)
		}
	}
}
