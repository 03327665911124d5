package drive

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
)

// Choose reuses its maps: a peer replaced by another (the same count)
// leaves nothing behind, in the choices or in the driver's state.
func TestChooseForgetsReplacedPeers(t *testing.T) {
	a, b, c := key(t), key(t), key(t)
	ch := &Chooser{Driver: New(&fakeBind{}, natpath.Timing{}, time.Minute)}
	peer := func(k wgtypes.Key, ep string) mesh.Peer {
		return mesh.Peer{PublicKey: k, Endpoints: []netip.AddrPort{netip.MustParseAddrPort(ep)}}
	}
	now := time.Unix(1700000000, 0)
	ch.Choose(now, []mesh.Peer{peer(a, "192.0.2.1:51820"), peer(b, "192.0.2.2:51820")}, nil)
	got := ch.Choose(now.Add(time.Second), []mesh.Peer{peer(a, "192.0.2.1:51820"), peer(c, "192.0.2.3:51820")}, nil)
	if _, ok := got[b]; ok || len(got) != 2 {
		t.Errorf("choices %v: want a and c only", got)
	}
	if _, ok := ch.last[b]; ok || len(ch.last) != 2 {
		t.Errorf("driver status %v: want a and c only", ch.last)
	}
	if _, ok := ch.Driver.rx[b]; ok || len(ch.Driver.rx) != 2 || ch.Driver.table.Len() != 2 {
		t.Errorf("driver keeps %d rx entries, %d paths: want 2", len(ch.Driver.rx), ch.Driver.table.Len())
	}
	got = ch.Choose(now.Add(2*time.Second), []mesh.Peer{peer(c, "192.0.2.3:51820")}, nil)
	if _, ok := got[a]; ok || len(got) != 1 || ch.Driver.table.Len() != 1 {
		t.Errorf("choices %v, %d paths: want c only", got, ch.Driver.table.Len())
	}
}
