package relay

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// viaProbes sends, answers and tracks probes to peers through relays
// (PingVia), for a Bind or a Proxy.
//
// WireGuard cannot show that a relayed path works from both ends: its
// persistent keepalive timer restarts on every packet received too, so once
// one end's keepalive arrives before the other's timer fires, that end sends
// every keepalive and hears nothing back for as long as the link is idle.
// A probe through the relay gets an answer from the quiet end.
type viaProbes struct {
	key   *Key
	pub   [32]byte
	limit *rate.Limiter
	now   func() time.Time

	mu       sync.Mutex
	pending  map[[nonceLen]byte]viaKey
	sent     map[[nonceLen]byte]time.Time
	guard    *replayGuard
	answered map[viaKey]time.Time
}

// viaKey names a relayed path: a peer through a relay.
type viaKey struct {
	relay netip.AddrPort
	peer  ID
}

func newViaProbes(k *Key, pub [32]byte, limit *rate.Limiter, now func() time.Time) *viaProbes {
	return &viaProbes{key: k, pub: pub, limit: limit, now: now, pending: map[[nonceLen]byte]viaKey{},
		sent: map[[nonceLen]byte]time.Time{}, guard: newReplayGuard(DefaultWindow, 1<<14), answered: map[viaKey]time.Time{}}
}

// ping returns a probe of peer to send to relay, or nil when over budget.
func (v *viaProbes) ping(relay netip.AddrPort, peer ID) []byte {
	if !v.limit.Allow() {
		return nil
	}
	now := v.now()
	h, err := newHello(typePing, v.pub, now)
	if err != nil {
		return nil
	}
	v.mu.Lock()
	if len(v.pending) > 1024 { // answers come within a second or never
		for n, at := range v.sent {
			if now.Sub(at) > DefaultWindow {
				delete(v.pending, n)
				delete(v.sent, n)
			}
		}
	}
	v.pending[h.Nonce] = viaKey{relay, peer}
	v.sent[h.Nonce] = now
	v.mu.Unlock()
	return viaFrame(peer, h.marshal(v.key))
}

// handle takes a ping or pong that peer sent through relay (the payload of
// a deliver frame). It returns the frame to send back to relay (the answer
// to a ping) or nil, and whether the frame was acceptable. The relay
// vouches only for the sender's registration; the frame must also be signed
// with the cluster key and name the sender's own key.
func (v *viaProbes) handle(frame []byte, relay netip.AddrPort, peer ID) ([]byte, bool) {
	switch frame[1] {
	case typePing:
		h, err := parseHello(frame, v.key)
		if err != nil || IDOf(h.Key) != peer {
			return nil, false
		}
		v.mu.Lock()
		err = v.guard.check(h, v.now())
		v.mu.Unlock()
		if err != nil {
			return nil, false
		}
		r := reply{Kind: typePong, Key: v.pub, Nonce: h.Nonce, Observed: relay}
		return viaFrame(peer, r.marshal(v.key)), true
	case typePong:
		r, err := parseReply(frame, v.key)
		if err != nil || r.Kind != typePong || IDOf(r.Key) != peer {
			return nil, false
		}
		now := v.now()
		v.mu.Lock()
		defer v.mu.Unlock()
		if k, ok := v.pending[r.Nonce]; !ok || k != (viaKey{relay, peer}) {
			return nil, false // unsolicited, answered already, or another path's
		}
		delete(v.pending, r.Nonce)
		delete(v.sent, r.Nonce)
		if len(v.answered) > 4096 {
			clear(v.answered) // a cache of recent answers: bound it
		}
		v.answered[viaKey{relay, peer}] = now
		return nil, true
	}
	return nil, false
}

// answeredAt is when peer last answered a probe through relay.
func (v *viaProbes) answeredAt(relay netip.AddrPort, peer ID) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.answered[viaKey{relay, peer}]
}

// forget drops what is known about paths through relay (it was removed).
func (v *viaProbes) forget(relay netip.AddrPort) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.answered {
		if k.relay == relay {
			delete(v.answered, k)
		}
	}
}

// viaFrame wraps a ping or pong for peer in a relay's send header.
func viaFrame(peer ID, body []byte) []byte {
	f := make([]byte, DataOverhead+len(body))
	putDataHeader(f, typeSend, peer)
	copy(f[DataOverhead:], body)
	return f
}
