package drive

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
)

// fakeBind is a userspace Bind without sockets: it records relays and punches.
type fakeBind struct {
	relays     []relay.Target
	punches    []natpath.Meeting
	registered time.Time // every relay answered then
}

func (f *fakeBind) SetRelays(relays []relay.Target) { f.relays = relays }
func (f *fakeBind) Relays() []relay.RelayState {
	var out []relay.RelayState
	for _, r := range f.relays {
		out = append(out, relay.RelayState{Addr: r.Addr, Registered: f.registered})
	}
	return out
}
func (f *fakeBind) RelayEndpoint(r netip.AddrPort, peer [32]byte) (netip.AddrPort, error) {
	return netip.AddrPortFrom(netip.MustParseAddr("100::1"), r.Port()), nil
}
func (f *fakeBind) SetCandidates(peer [32]byte, candidates []netip.AddrPort) {}
func (f *fakeBind) Direct(peer [32]byte) (relay.DirectState, bool)           { return relay.DirectState{}, false }
func (f *fakeBind) Punch(peer [32]byte, at time.Time) {
	f.punches = append(f.punches, natpath.Meeting{Peer: peer, At: at})
}

func key(t testing.TB) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func TestRelaysFromTraversalData(t *testing.T) {
	r, plain := key(t), key(t)
	peers := []Peer{
		{Key: r, Name: "r", Direct: []netip.AddrPort{
			netip.MustParseAddrPort("[2001:db8::1]:51820"),                                         // IPv6 goes last
			netip.MustParseAddrPort("192.0.2.1:51820"), netip.MustParseAddrPort("192.0.2.1:40000"), // one address
			netip.MustParseAddrPort("127.0.0.1:51820"), netip.MustParseAddrPort("[100::1:0:0:0]:3"), // loopback, virtual
		}},
		{Key: plain, Name: "plain", Direct: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:51820")}},
	}
	got := Relays(peers, map[wgtypes.Key]discovery.Traversal{r: {RelayPort: 51821}})
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51821"), netip.MustParseAddrPort("[2001:db8::1]:51821")}
	if len(got) != len(want) {
		t.Fatalf("relays %v, want %v", got, want)
	}
	for i, m := range got {
		if m.Addr != want[i] || m.Key != r || m.Name != "r" {
			t.Fatalf("relay %d = %+v, want r at %s", i, m, want[i])
		}
	}
	if got := Relays(peers, nil); len(got) != 0 {
		t.Fatalf("relays %v from peers that publish none", got)
	}
}

// TestChooserRendezvous: a peer not yet direct is asked to meet (published,
// and punched here too); a meeting a peer asks of us is joined; the relay
// port is published.
func TestChooserRendezvous(t *testing.T) {
	self, a, b := key(t), key(t), key(t)
	fb := &fakeBind{}
	c := &Chooser{Driver: New(fb, natpath.Timing{}, time.Minute), RelayPort: 51820,
		Rendezvous: natpath.NewRendezvous(self, 2*time.Second, time.Minute, 10*time.Second)}
	now := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	peers := []mesh.Peer{
		{PublicKey: a, Name: "a", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:51820")}},
		{PublicKey: b, Name: "b", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.20:51820")}},
	}
	if pub := c.Traverse(now, nil); pub.RelayPort != 51820 || len(pub.Rendezvous) != 0 {
		t.Fatalf("before any pass: %+v, want only the relay port", pub)
	}
	c.Choose(now, peers, nil) // both start trying their direct candidates

	// b asks us to meet; we ask a (b is asking already).
	meet := now.Add(1500 * time.Millisecond).Round(time.Millisecond)
	remote := map[wgtypes.Key]discovery.Traversal{b: {Rendezvous: []discovery.Rendezvous{{Peer: self, At: meet}}}}
	pub := c.Traverse(now.Add(time.Second), remote)
	if len(pub.Rendezvous) != 1 || pub.Rendezvous[0].Peer != a || !pub.Rendezvous[0].At.Equal(now.Add(3*time.Second)) {
		t.Fatalf("published %+v, want one meeting with a at +3s", pub.Rendezvous)
	}
	if len(fb.punches) != 2 {
		t.Fatalf("punches %+v, want one for a (ours) and one for b (joined)", fb.punches)
	}
	for _, p := range fb.punches {
		if !(p.Peer == a && p.At.Equal(now.Add(3*time.Second))) && !(p.Peer == b && p.At.Equal(meet)) {
			t.Fatalf("unexpected punch %+v", p)
		}
	}
	// The same request seen again is not joined twice.
	c.Traverse(now.Add(2*time.Second), remote)
	if len(fb.punches) != 2 {
		t.Fatalf("punches %+v after seeing the same request again", fb.punches)
	}
}

// TestChooserWarnsAboutIPv6RelayMTU: relayed full-size packets do not fit a
// 1500-byte IPv6 underlay at the default MTU; status says what to set.
func TestChooserWarnsAboutIPv6RelayMTU(t *testing.T) {
	r, p := key(t), key(t)
	now := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	peers := []mesh.Peer{
		{PublicKey: r, Name: "r", Endpoints: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:51820")}},
		{PublicKey: p, Name: "p"}, // advertises nothing: relayed at once
	}
	remote := map[wgtypes.Key]discovery.Traversal{r: {RelayPort: 51820}}
	for _, tc := range []struct {
		mtu  int
		warn bool
	}{{1420, true}, {MaxRelayedMTU6, false}} {
		c := &Chooser{Driver: New(&fakeBind{registered: now}, natpath.Timing{}, time.Minute), MTU: tc.mtu}
		c.Traverse(now, remote)
		c.Choose(now, peers, nil) // registers with r
		got := c.Choose(now, peers, nil)[p]
		if got.Path != "relayed" || got.Via != "r" {
			t.Fatalf("MTU %d: p is %+v, want relayed via r", tc.mtu, got)
		}
		if warned := strings.Contains(got.Reason, "set wireguard.mtu to 1410"); warned != tc.warn {
			t.Errorf("MTU %d: reason %q; warning about IPv6 fragmentation: %v, want %v", tc.mtu, got.Reason, warned, tc.warn)
		}
	}
}
