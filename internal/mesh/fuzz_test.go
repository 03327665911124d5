package mesh

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// FuzzBuild turns arbitrary bytes into affiliates (what a hostile member
// can publish) and checks the peer set's invariants: no peer routes this
// node's addresses, another member's mesh address, a default or wide
// route it was not approved for, or anything in the mesh prefix but its
// own address; AllowedIPs are disjoint between peers; candidates are
// usable and at most MaxCandidates (+ observed) per peer.
func FuzzBuild(f *testing.F) {
	f.Add([]byte("\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("0123456789abcdef0123456789abcdef\x7f\x00\x00\x01\x00\x35\x00\xc0\x00\x02\x0b\x18"))
	var keys []wgtypes.Key
	for range 4 {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			f.Fatal(err)
		}
		keys = append(keys, k.PublicKey())
	}
	self, _ := wgtypes.GeneratePrivateKey()
	var shared Builder // reused by every input: must answer as a fresh one
	var mu sync.Mutex
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzInput(data, keys, self.PublicKey())
		res := Build(in)
		mu.Lock()
		again := shared.Build(in)
		mu.Unlock()
		if !reflect.DeepEqual(res, again) {
			t.Errorf("a reused Builder answered\n%+v\na fresh one\n%+v", again, res)
		}
		for i, p := range res.Peers {
			if len(p.Endpoints) > MaxCandidates {
				t.Errorf("%s: %d candidates", p.Name, len(p.Endpoints))
			}
			for _, ep := range p.Endpoints {
				if !usableEndpoint(ep, victimOwn, trustPrefix) {
					t.Errorf("%s: unusable candidate %s", p.Name, ep)
				}
			}
			for _, n := range p.AllowedIPs {
				if n != n.Masked() {
					t.Errorf("%s: %s not masked", p.Name, n)
				}
				for _, a := range victimOwn {
					if n.Contains(a) {
						t.Errorf("%s routes this node's %s via %s", p.Name, a, n)
					}
				}
				if n.Overlaps(trustPrefix) && n != netip.PrefixFrom(p.Address, 128) {
					t.Errorf("%s: %s overlaps the mesh prefix", p.Name, n)
				}
				if IsWide(n) && !(len(in.Approved) > 0 && p.PublicKey == keys[0]) {
					t.Errorf("%s: wide %s without approval", p.Name, n)
				}
				for j, q := range res.Peers {
					if j == i {
						continue
					}
					for _, m := range q.AllowedIPs {
						if n.Overlaps(m) {
							t.Errorf("%s's %s overlaps %s's %s", p.Name, n, q.Name, m)
						}
					}
				}
			}
		}
	})
}

// fuzzInput turns data into three affiliates with keys (what a hostile
// member can publish), maybe a wide route approved for the first.
func fuzzInput(data []byte, keys []wgtypes.Key, self wgtypes.Key) Input {
	r := reader{b: data}
	var affs []*Affiliate
	for i := range 3 {
		a := Affiliate{ID: fmt.Sprint(r.byte() % 4), NodeName: fmt.Sprint("n", i), PublicKey: keys[i].String()}
		a.Address = r.meshAddr()
		for range r.byte() % 5 {
			a.Networks = append(a.Networks, r.prefix())
		}
		for range r.byte() % 3 {
			a.ExcludeNetworks = append(a.ExcludeNetworks, r.prefix())
		}
		for range r.byte() % 4 {
			a.Addresses = append(a.Addresses, r.addr())
		}
		for range r.byte() % 12 {
			a.Endpoints = append(a.Endpoints, netip.AddrPortFrom(r.addr(), uint16(r.byte())))
		}
		affs = append(affs, ref(a))
	}
	in := Input{Self: self, Prefix: trustPrefix, Own: victimOwn, Affiliates: affs}
	if r.byte()%2 == 0 {
		in.Approved = []ApprovedRoute{{PublicKey: keys[0], Networks: []netip.Prefix{r.prefix()}}}
	}
	return in
}

// reader hands out fuzz bytes; past the end it returns zeros.
type reader struct {
	b []byte
	i int
}

func (r *reader) byte() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}

func (r *reader) addr() netip.Addr {
	switch r.byte() % 4 {
	case 0:
		return netip.AddrFrom4([4]byte{r.byte(), r.byte(), r.byte(), r.byte()})
	case 1: // near this node and the cluster, where it matters
		return netip.AddrFrom4([4]byte{192, 0, 2, r.byte()})
	case 2:
		b := trustPrefix.Addr().As16()
		b[15] = r.byte()
		return netip.AddrFrom16(b)
	}
	var b [16]byte
	for i := range b {
		b[i] = r.byte()
	}
	return netip.AddrFrom16(b)
}

func (r *reader) meshAddr() netip.Addr {
	b := trustPrefix.Addr().As16()
	binary.BigEndian.PutUint16(b[14:], uint16(r.byte()%8))
	return netip.AddrFrom16(b)
}

func (r *reader) prefix() netip.Prefix {
	a := r.addr()
	return netip.PrefixFrom(a, int(r.byte())%(a.BitLen()+1)).Masked()
}
