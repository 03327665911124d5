package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshspan/terraform-provider-meshspan/internal/fwmark"
)

// maxProxyPeers bounds the local sockets a Proxy opens.
const maxProxyPeers = 1024

// Proxy relays for kernel WireGuard, which cannot take a custom Bind: for
// each relayed peer it listens on a loopback port that the kernel peer uses
// as its endpoint, and carries what arrives there to the relay over its own
// uplink socket (registered like a Bind). The kernel sees a relayed peer at
// 127.0.0.1:port and still does all the cryptography itself; the proxy only
// moves ciphertext.
type Proxy struct {
	key    *Key
	priv   [32]byte
	pub    [32]byte
	wg     netip.AddrPort // the kernel WireGuard listen address, e.g. 127.0.0.1:51820
	uplink *net.UDPConn
	every  time.Duration

	mu      sync.Mutex
	relays  map[netip.AddrPort]*proxyRelay
	pending map[[nonceLen]byte]pending
	counter registrationCounter
	peers   map[proxyKey]*proxyPeer
	closed  bool
	via     *viaProbes // probes through relays (PingVia)

	stop chan struct{}
	done sync.WaitGroup
}

type proxyRelay struct {
	RelayState
	key  [32]byte // the relay's WireGuard public key
	pair *Key     // signs registrations with it
}

type proxyKey struct {
	relay netip.AddrPort
	peer  ID
}

type proxyPeer struct {
	key  proxyKey
	conn *net.UDPConn
}

// NewProxy starts a proxy whose uplink listens on uplink (":0" picks a
// port) and which delivers to kernel WireGuard at wg. privateKey is the
// node's WireGuard private key, which registrations prove (Key.Pair).
func NewProxy(k *Key, privateKey [32]byte, wg netip.AddrPort, uplink string, registerEvery time.Duration) (*Proxy, error) {
	if k == nil {
		return nil, fmt.Errorf("relay: proxy needs the relay key")
	}
	pub, err := publicKey(privateKey)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", uplink)
	if err != nil {
		return nil, fmt.Errorf("relay: proxy uplink address %q: %w", uplink, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("relay: proxy uplink listen %q: %w", uplink, err)
	}
	if registerEvery <= 0 {
		registerEvery = DefaultRegisterInterval
	}
	p := &Proxy{
		key: k, priv: privateKey, pub: pub, wg: wg, uplink: c, every: registerEvery,
		relays:  map[netip.AddrPort]*proxyRelay{},
		pending: map[[nonceLen]byte]pending{},
		peers:   map[proxyKey]*proxyPeer{},
		stop:    make(chan struct{}),
		via:     newViaProbes(k, pub, rate.NewLimiter(DefaultProbeRate, DefaultProbeBurst), time.Now),
	}
	p.done.Add(2)
	go p.readUplink()
	go p.maintain()
	return p, nil
}

// SetMark sets SO_MARK on the uplink socket, which sends to relays (members)
// outside kernel WireGuard: with the host policy's firewall mark it stays
// on the underlay instead of being routed into the mesh.
func (p *Proxy) SetMark(mark uint32) error {
	rc, err := p.uplink.SyscallConn()
	if err != nil {
		return fmt.Errorf("relay: proxy uplink: %w", err)
	}
	return fwmark.Set(rc, mark)
}

// SetRelays sets the relays to register with; new ones are registered at once.
func (p *Proxy) SetRelays(relays []Target) {
	p.mu.Lock()
	keep := map[netip.AddrPort]bool{}
	var added []netip.AddrPort
	for _, t := range relays {
		a := unmap(t.Addr)
		if r, ok := p.relays[a]; ok && r.key == t.Key {
			keep[a] = true
			continue
		}
		pair, err := p.key.Pair(p.priv, t.Key, RoleMember)
		if err != nil {
			continue // a low-order key: no member has one
		}
		keep[a] = true
		p.relays[a] = &proxyRelay{RelayState: RelayState{Addr: a}, key: t.Key, pair: pair}
		added = append(added, a)
	}
	for a := range p.relays {
		if !keep[a] {
			delete(p.relays, a)
			p.via.forget(a)
		}
	}
	for k, pp := range p.peers {
		if !keep[k.relay] {
			pp.conn.Close()
			delete(p.peers, k)
		}
	}
	p.mu.Unlock()
	for _, a := range added {
		p.register(a)
	}
}

// Relays reports every configured relay.
func (p *Proxy) Relays() []RelayState {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]RelayState, 0, len(p.relays))
	for _, r := range p.relays {
		out = append(out, r.RelayState)
	}
	return out
}

// Endpoint returns the loopback address to set as the kernel peer's
// endpoint so that it reaches peer through relay.
func (p *Proxy) Endpoint(relay netip.AddrPort, peer [32]byte) (netip.AddrPort, error) {
	pp, err := p.peer(proxyKey{unmap(relay), IDOf(peer)})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return pp.conn.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}

func (p *Proxy) peer(k proxyKey) (*proxyPeer, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if pp, ok := p.peers[k]; ok {
		return pp, nil
	}
	if _, ok := p.relays[k.relay]; !ok {
		return nil, fmt.Errorf("relay: %q is not a configured relay; call SetRelays first", k.relay)
	}
	if len(p.peers) >= maxProxyPeers {
		return nil, fmt.Errorf("relay: proxy already serves %d relayed peers", maxProxyPeers)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.wg.Addr(), 0)))
	if err != nil {
		return nil, fmt.Errorf("relay: proxy listen for peer %s via %s: %w", k.peer, k.relay, err)
	}
	pp := &proxyPeer{key: k, conn: c}
	p.peers[k] = pp
	p.done.Add(1)
	go p.readPeer(pp)
	return pp, nil
}

// readPeer carries what kernel WireGuard sends to pp's port to the relay.
func (p *Proxy) readPeer(pp *proxyPeer) {
	defer p.done.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := pp.conn.ReadFromUDPAddrPort(buf[DataOverhead:])
		if err != nil {
			return
		}
		if unmap(from) != p.wg || !IsWireGuard(buf[DataOverhead:DataOverhead+n]) {
			continue // only the local kernel device may use the proxy
		}
		putDataHeader(buf, typeSend, pp.key.peer)
		_, _ = p.uplink.WriteToUDPAddrPort(buf[:DataOverhead+n], pp.key.relay)
	}
}

// readUplink hands relayed packets to the kernel and consumes acks.
func (p *Proxy) readUplink() {
	defer p.done.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.uplink.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = unmap(from)
		f := buf[:n]
		if !IsFrame(f) {
			continue
		}
		switch f[1] {
		case typeDeliver:
			if n < DataOverhead+4 {
				continue
			}
			// Only to peers the agent routes through this relay (it asked
			// for their Endpoint): a frame for any other opens nothing. A
			// socket opened here would also be opened by this goroutine's
			// thread, not where the agent asked for its sockets.
			p.mu.Lock()
			pp := p.peers[proxyKey{from, ID(f[2 : 2+idLen])}]
			p.mu.Unlock()
			if pp == nil {
				continue
			}
			if IsFrame(f[DataOverhead:]) { // a ping or pong through the relay
				if answer, _ := p.via.handle(f[DataOverhead:], from, pp.key.peer); answer != nil {
					_, _ = p.uplink.WriteToUDPAddrPort(answer, from)
				}
				continue
			}
			_, _ = pp.conn.WriteToUDPAddrPort(f[DataOverhead:], p.wg)
		case typeRegistered:
			p.mu.Lock()
			st, ok := p.relays[from]
			p.mu.Unlock()
			if !ok {
				continue
			}
			r, err := parseReply(f, st.pair) // only that relay can sign it
			if err != nil {
				continue
			}
			now := time.Now()
			p.mu.Lock()
			if q, ok := p.pending[r.Nonce]; ok && q.relay == from {
				delete(p.pending, r.Nonce)
				if st, ok := p.relays[from]; ok {
					st.Registered, st.Observed, st.RTT = now, r.Observed, now.Sub(q.sent)
				}
			}
			p.mu.Unlock()
		}
	}
}

func (p *Proxy) register(relay netip.AddrPort) {
	now := time.Now()
	r, err := newRegistration(p.pub, p.counter.next(now))
	if err != nil {
		return
	}
	p.mu.Lock()
	st, ok := p.relays[relay]
	if !ok {
		p.mu.Unlock()
		return
	}
	if len(p.pending) > 1024 {
		clear(p.pending)
	}
	p.pending[r.Nonce] = pending{relay: relay, to: relay, sent: now}
	frame := r.marshal(st.pair)
	p.mu.Unlock()
	_, _ = p.uplink.WriteToUDPAddrPort(frame, relay)
}

func (p *Proxy) maintain() {
	defer p.done.Done()
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		addrs := make([]netip.AddrPort, 0, len(p.relays))
		for a := range p.relays {
			addrs = append(addrs, a)
		}
		p.mu.Unlock()
		for _, a := range addrs {
			p.register(a)
		}
	}
}

// Close stops the proxy and closes every socket.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	var errs []error
	for _, pp := range p.peers {
		errs = append(errs, pp.conn.Close())
	}
	p.mu.Unlock()
	errs = append(errs, p.uplink.Close())
	p.done.Wait()
	return errors.Join(errs...)
}

// RelayEndpoint is Endpoint, named as the path driver expects.
func (p *Proxy) RelayEndpoint(relay netip.AddrPort, peer [32]byte) (netip.AddrPort, error) {
	return p.Endpoint(relay, peer)
}

// PingVia probes the path to peer through relay end to end, as
// Bind.PingVia does: kernel WireGuard's keepalives leave an idle link
// silent at one end just as wireguard-go's do.
func (p *Proxy) PingVia(relay netip.AddrPort, peer [32]byte) {
	relay = unmap(relay)
	p.mu.Lock()
	_, ok := p.relays[relay]
	p.mu.Unlock()
	if !ok {
		return
	}
	if f := p.via.ping(relay, IDOf(peer)); f != nil {
		_, _ = p.uplink.WriteToUDPAddrPort(f, relay)
	}
}

// Answered reports when peer last answered a PingVia through relay.
func (p *Proxy) Answered(relay netip.AddrPort, peer [32]byte) time.Time {
	return p.via.answeredAt(unmap(relay), IDOf(peer))
}
