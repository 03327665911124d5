package relay

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"golang.zx2c4.com/wireguard/conn"
)

// Defaults for the Bind's background work.
const (
	// DefaultRegisterInterval renews relay registrations; it also keeps the
	// NAT mapping towards each relay alive.
	DefaultRegisterInterval = 10 * time.Second
	// DefaultProbeInterval is how often direct candidates of relayed peers are
	// probed. Probing both ways at once, which NATs need, is arranged by a
	// rendezvous (Punch); these probes find paths that opened on their own.
	DefaultProbeInterval = 15 * time.Second
	// DefaultProbeRate and DefaultProbeBurst bound the direct probes sent
	// over all peers together (periodic, on new candidates, and punches).
	// Candidates come from members; without a bound one publishing many
	// affiliates with many endpoints would set the rate (and fill the
	// pending-probe table, which every probe then scans).
	DefaultProbeRate  = 20 // per second
	DefaultProbeBurst = 80
)

// BindConfig configures a Bind.
type BindConfig struct {
	Key *Key
	// PrivateKey is this node's WireGuard private key: registrations with
	// relays prove it is held (Key.Pair). PublicKey is derived from it.
	PrivateKey [32]byte
	PublicKey  [32]byte
	// Server, when set, relays frames that other members send to this node's
	// WireGuard port (relay.enabled with relay.port 0, userspace WireGuard).
	Server           *Server
	RegisterInterval time.Duration
	ProbeInterval    time.Duration
	// ProbeRate (per second) and ProbeBurst bound direct probes; 0 means
	// DefaultProbeRate and DefaultProbeBurst.
	ProbeRate  float64
	ProbeBurst int
}

// RelayState is what the Bind knows about one relay.
type RelayState struct {
	Addr       netip.AddrPort
	Registered time.Time      // last accepted registration; zero: never
	Observed   netip.AddrPort // this node's address as the relay saw it
	RTT        time.Duration  // of the last registration
}

// DirectState is what probing learned about one peer's direct path.
type DirectState struct {
	Addr      netip.AddrPort // the address that answered
	Confirmed time.Time      // last answer; zero: none yet
	Observed  netip.AddrPort // this node's address as the peer saw it
}

type relayLink struct {
	RelayState
	slot  uint16
	inner conn.Endpoint
	key   [32]byte // the relay's WireGuard public key
	pair  *Key     // signs registrations with it (Key.Pair)
}

type probe struct {
	key        [32]byte
	candidates []netip.AddrPort
	state      DirectState
}

type pending struct {
	relay netip.AddrPort // register: the relay asked
	peer  ID             // ping: the peer asked
	to    netip.AddrPort
	sent  time.Time
}

type epKey struct {
	slot uint16
	peer ID
}

// Bind wraps a WireGuard conn.Bind (normally conn.NewDefaultBind()) so that
// peers can be reached either directly or through a relay, and so that the
// node can serve as a relay on its WireGuard port. wireguard-go sees relayed
// peers as ordinary endpoints with addresses in 100::/64.
type Bind struct {
	inner conn.Bind
	cfg   BindConfig
	self  ID
	now   func() time.Time

	mu       sync.RWMutex
	relays   map[netip.AddrPort]*relayLink
	bySlot   map[uint16]*relayLink
	nextSlot uint16
	eps      map[epKey]*Endpoint
	innerEps map[netip.AddrPort]conn.Endpoint
	probes   map[ID]*probe
	pending  map[[nonceLen]byte]pending
	guard    *replayGuard
	punching map[ID]time.Time // end of the punch scheduled per peer
	via      *viaProbes       // probes through relays (PingVia)
	counter  registrationCounter

	stop chan struct{}
	done sync.WaitGroup

	// probeLimit is the probe budget; probes over it are not sent.
	probeLimit *rate.Limiter

	arenas    sync.Pool
	strangers atomic.Uint64
	punches   atomic.Uint64
	port      atomic.Uint32
}

var _ conn.Bind = (*Bind)(nil)

// NewBind wraps inner.
func NewBind(inner conn.Bind, cfg BindConfig) (*Bind, error) {
	if cfg.Key == nil {
		return nil, fmt.Errorf("relay: bind needs the relay key (DeriveKey of the cluster secret)")
	}
	pub, err := publicKey(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	cfg.PublicKey = pub
	if cfg.RegisterInterval <= 0 {
		cfg.RegisterInterval = DefaultRegisterInterval
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeRate <= 0 {
		cfg.ProbeRate = DefaultProbeRate
	}
	if cfg.ProbeBurst <= 0 {
		cfg.ProbeBurst = DefaultProbeBurst
	}
	b := &Bind{
		inner:    inner,
		cfg:      cfg,
		self:     IDOf(cfg.PublicKey),
		now:      time.Now,
		relays:   make(map[netip.AddrPort]*relayLink),
		bySlot:   make(map[uint16]*relayLink),
		eps:      make(map[epKey]*Endpoint),
		innerEps: make(map[netip.AddrPort]conn.Endpoint),
		probes:   make(map[ID]*probe),
		pending:  make(map[[nonceLen]byte]pending),
		// Not on b.now: the limiter keeps its own clock, so tests with a
		// fake clock keep the default budget's headroom.
		probeLimit: rate.NewLimiter(rate.Limit(cfg.ProbeRate), cfg.ProbeBurst),
		guard:      newReplayGuard(DefaultWindow, 1<<14),
		punching:   make(map[ID]time.Time),
	}
	b.via = newViaProbes(cfg.Key, cfg.PublicKey, b.probeLimit, func() time.Time { return b.now() })
	return b, nil
}

// Open opens the inner bind and starts registering with relays and probing.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.port.Store(uint32(actual))
	b.mu.Lock()
	b.innerEps = make(map[netip.AddrPort]conn.Endpoint) // stale after a reopen
	for _, r := range b.relays {
		r.inner = nil
	}
	clear(b.eps)
	b.stop = make(chan struct{})
	stop := b.stop
	b.mu.Unlock()
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = b.receive(fn)
	}
	b.done.Add(1)
	go b.maintain(stop)
	return wrapped, actual, nil
}

// Close stops background work and closes the inner bind.
func (b *Bind) Close() error {
	b.mu.Lock()
	if b.stop != nil {
		close(b.stop)
		b.stop = nil
	}
	b.mu.Unlock()
	err := b.inner.Close()
	b.done.Wait()
	return err
}

// Port is the UDP port the inner bind listens on (0 before Open).
func (b *Bind) Port() uint16 { return uint16(b.port.Load()) }

// SetMark passes the firewall mark to the inner bind.
func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }

// BatchSize is the inner bind's.
func (b *Bind) BatchSize() int { return b.inner.BatchSize() }

// ParseEndpoint understands virtual (relayed) endpoints and passes anything
// else to the inner bind.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if a, err := netip.ParseAddrPort(s); err == nil && IsVirtual(a) {
		slot, peer, err := parseVirtual(a)
		if err != nil {
			return nil, err
		}
		ep := b.virtualEndpoint(slot, peer)
		if ep == nil {
			return nil, fmt.Errorf("relay: endpoint %q names relay slot %d, which is not configured", s, slot)
		}
		return ep, nil
	}
	return b.inner.ParseEndpoint(s)
}

// SetRelays sets the relays this node registers with. A relay keeps its slot
// (and so its peers' virtual addresses) as long as it stays in the list.
func (b *Bind) SetRelays(relays []Target) {
	b.mu.Lock()
	keep := make(map[netip.AddrPort]bool, len(relays))
	var added []netip.AddrPort
	for _, t := range relays {
		a := unmap(t.Addr)
		if r, ok := b.relays[a]; ok {
			keep[a] = true
			if r.key != t.Key { // another node took the address: register anew
				if pair, err := b.cfg.Key.Pair(b.cfg.PrivateKey, t.Key, RoleMember); err == nil {
					r.key, r.pair, r.Registered = t.Key, pair, time.Time{}
					added = append(added, a)
				}
			}
			continue
		}
		pair, err := b.cfg.Key.Pair(b.cfg.PrivateKey, t.Key, RoleMember)
		if err != nil {
			continue // a low-order key: no member has one
		}
		keep[a] = true
		if len(b.bySlot) >= 1<<16-1 {
			continue // every slot taken: a relay list this long is a bug upstream
		}
		for { // next free slot; 0 is never one (a port of 0 is no endpoint)
			b.nextSlot++
			if _, used := b.bySlot[b.nextSlot]; b.nextSlot != 0 && !used {
				break
			}
		}
		r := &relayLink{RelayState: RelayState{Addr: a}, slot: b.nextSlot, key: t.Key, pair: pair}
		b.relays[a] = r
		b.bySlot[r.slot] = r
		added = append(added, a)
	}
	for a, r := range b.relays {
		if !keep[a] {
			delete(b.relays, a)
			delete(b.bySlot, r.slot)
			defer b.via.forget(a)
			for k := range b.eps {
				if k.slot == r.slot {
					delete(b.eps, k)
				}
			}
		}
	}
	open := b.stop != nil
	b.mu.Unlock()
	if open {
		for _, a := range added {
			b.register(a)
		}
	}
}

// RelayEndpoint returns the virtual address that makes WireGuard reach peer
// through relay; set it as the peer's endpoint (UAPI or wgctrl).
func (b *Bind) RelayEndpoint(relay netip.AddrPort, peer [32]byte) (netip.AddrPort, error) {
	b.mu.RLock()
	r, ok := b.relays[unmap(relay)]
	b.mu.RUnlock()
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("relay: %q is not a configured relay; call SetRelays first", relay)
	}
	return virtualAddr(r.slot, IDOf(peer)), nil
}

// Relays reports every configured relay.
func (b *Bind) Relays() []RelayState {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]RelayState, 0, len(b.relays))
	for _, r := range b.relays {
		out = append(out, r.RelayState)
	}
	slices.SortFunc(out, func(x, y RelayState) int { return x.Addr.Compare(y.Addr) })
	return out
}

// SetCandidates sets the direct endpoints to probe for peer; nil stops
// probing it. Probing starts at once and repeats every ProbeInterval.
func (b *Bind) SetCandidates(peer [32]byte, candidates []netip.AddrPort) {
	id := IDOf(peer)
	b.mu.Lock()
	if len(candidates) == 0 {
		delete(b.probes, id)
		delete(b.punching, id)
		b.mu.Unlock()
		return
	}
	p, ok := b.probes[id]
	if !ok {
		p = &probe{key: peer}
		b.probes[id] = p
	}
	changed := !slices.Equal(p.candidates, candidates)
	p.candidates = slices.Clone(candidates)
	open := b.stop != nil
	b.mu.Unlock()
	if open && changed {
		b.ping(id)
	}
}

// Direct reports what probing learned about peer's direct path.
func (b *Bind) Direct(peer [32]byte) (DirectState, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	p, ok := b.probes[IDOf(peer)]
	if !ok || p.state.Confirmed.IsZero() {
		return DirectState{}, false
	}
	return p.state, true
}

// PingVia probes the path to peer through relay end to end: the peer's
// Bind (or Proxy) answers through the same relay, and Answered then reports
// when. See viaProbes for why WireGuard alone cannot tell.
func (b *Bind) PingVia(relay netip.AddrPort, peer [32]byte) {
	relay = unmap(relay)
	b.mu.RLock()
	_, ok := b.relays[relay]
	open := b.stop != nil
	b.mu.RUnlock()
	if !ok || !open {
		return
	}
	if f := b.via.ping(relay, IDOf(peer)); f != nil {
		_ = b.sendTo(f, relay)
	}
}

// Answered reports when peer last answered a PingVia through relay (zero:
// never, or not since the relay was removed).
func (b *Bind) Answered(relay netip.AddrPort, peer [32]byte) time.Time {
	return b.via.answeredAt(unmap(relay), IDOf(peer))
}

// onVia handles a ping or pong that ep's peer sent through ep's relay.
func (b *Bind) onVia(frame []byte, ep *Endpoint) {
	answer, ok := b.via.handle(frame, ep.Relay, ep.Peer)
	if !ok {
		b.strangers.Add(1)
		return
	}
	if answer != nil {
		_ = b.sendTo(answer, ep.Relay)
	}
}

// Strangers counts relay frames dropped because they came from an address
// that is not a configured relay or failed authentication.
func (b *Bind) Strangers() uint64 { return b.strangers.Load() }

// Send sends to a direct endpoint through the inner bind, or wraps each
// packet in a relay header for a relayed one.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	ve, ok := ep.(*Endpoint)
	if !ok {
		return b.inner.Send(bufs, ep)
	}
	total := 0
	for _, p := range bufs {
		total += DataOverhead + len(p)
	}
	// Frames are laid end to end in one arena, without capping each slice:
	// the inner bind's GSO coalescing appends a frame to the previous one's
	// spare capacity, which is exactly where that frame already lies.
	a, _ := b.arenas.Get().(*sendArena)
	if a == nil {
		a = &sendArena{}
	}
	if cap(a.buf) < total {
		a.buf = make([]byte, max(total, 64<<10))
	}
	arena := a.buf[:cap(a.buf)]
	frames := a.frames[:0]
	off := 0
	for _, p := range bufs {
		f := arena[off:]
		putDataHeader(f, typeSend, ve.Peer)
		n := DataOverhead + copy(f[DataOverhead:], p)
		frames = append(frames, f[:n])
		off += n
	}
	a.frames = frames
	defer b.arenas.Put(a)
	inner := ve.inner
	if inner == nil {
		var err error
		if inner, err = b.innerEndpoint(ve.Relay); err != nil {
			return err
		}
	}
	return b.inner.Send(frames, inner)
}

// sendArena is Send's scratch space, pooled: the frames and the slice
// naming them, so that a relayed send allocates nothing.
type sendArena struct {
	buf    []byte
	frames [][]byte
}

// receive wraps an inner ReceiveFunc: WireGuard packets pass through, relayed
// ones are unwrapped and attributed to their virtual endpoint, control frames
// and frames relayed for others are consumed: their sizes become 0, which
// WireGuard skips (and internal/wg's in-flight limiter does not count).
func (b *Bind) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	out := bindTransport{b}
	var fw forwarder // one per receive goroutine
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		var now time.Time // read once per batch, if a frame needs it
		// A batch holds runs from one relay about one peer: look the
		// virtual endpoint up once per run, not per packet.
		var lastFrom netip.AddrPort
		var lastPeer ID
		var lastEp *Endpoint
		for i := 0; i < n; i++ {
			p := bufs[i][:sizes[i]]
			if len(p) == 0 || IsWireGuard(p) {
				continue
			}
			sizes[i] = 0
			if !IsFrame(p) {
				b.strangers.Add(1)
				continue
			}
			from := addrOf(eps[i])
			switch p[1] {
			case typeDeliver:
				if len(p) < DataOverhead+4 {
					continue
				}
				ep := lastEp
				if peer := ID(p[2 : 2+idLen]); ep == nil || from != lastFrom || peer != lastPeer {
					ep = b.deliveredFrom(from, peer)
					lastFrom, lastPeer, lastEp = from, peer, ep
				}
				if ep == nil {
					b.strangers.Add(1)
					continue
				}
				if IsFrame(p[DataOverhead:]) { // a ping or pong through the relay
					b.onVia(p[DataOverhead:], ep)
					continue
				}
				sizes[i] = copy(bufs[i], p[DataOverhead:])
				eps[i] = ep
			case typeSend, typeRegister:
				if b.cfg.Server != nil {
					if now.IsZero() {
						now = b.cfg.Server.now()
					}
					if to, ok := b.cfg.Server.routeAt(p, from, now, out); ok {
						fw.add(p, to) // sent below, while the buffer is still ours
					}
				} else {
					b.strangers.Add(1)
				}
			case typeRegistered, typePong:
				b.onReply(p, from)
			case typePing:
				b.onPing(p, from, eps[i])
			default:
				b.strangers.Add(1)
			}
		}
		fw.flush(out)
		return n, err
	}
}

func addrOf(ep conn.Endpoint) netip.AddrPort {
	if se, ok := ep.(*conn.StdNetEndpoint); ok {
		return unmap(se.AddrPort)
	}
	a, _ := netip.ParseAddrPort(ep.DstToString())
	return unmap(a)
}

func (b *Bind) deliveredFrom(relay netip.AddrPort, peer ID) *Endpoint {
	b.mu.RLock()
	r, ok := b.relays[relay]
	var ep *Endpoint
	if ok {
		ep = b.eps[epKey{r.slot, peer}]
	}
	b.mu.RUnlock()
	if !ok {
		return nil
	}
	if ep != nil {
		return ep
	}
	return b.virtualEndpoint(r.slot, peer)
}

func (b *Bind) virtualEndpoint(slot uint16, peer ID) *Endpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.bySlot[slot]
	if !ok {
		return nil
	}
	k := epKey{slot, peer}
	if ep, ok := b.eps[k]; ok {
		return ep
	}
	ep := &Endpoint{Relay: r.Addr, Peer: peer, virt: virtualAddr(slot, peer)}
	if r.inner == nil {
		r.inner, _ = b.innerEndpointLocked(r.Addr)
	}
	ep.inner = r.inner
	b.eps[k] = ep
	return ep
}

func (b *Bind) innerEndpoint(a netip.AddrPort) (conn.Endpoint, error) {
	b.mu.RLock()
	ep, ok := b.innerEps[a]
	b.mu.RUnlock()
	if ok {
		return ep, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.innerEndpointLocked(a)
}

func (b *Bind) innerEndpointLocked(a netip.AddrPort) (conn.Endpoint, error) {
	if ep, ok := b.innerEps[a]; ok {
		return ep, nil
	}
	ep, err := b.inner.ParseEndpoint(a.String())
	if err != nil {
		return nil, fmt.Errorf("relay: endpoint %q: %w", a, err)
	}
	if len(b.innerEps) > 4096 {
		clear(b.innerEps) // a cache, not a registry: bound it
	}
	b.innerEps[a] = ep
	return ep, nil
}

// bindTransport lets the relay server answer through WireGuard's socket.
type bindTransport struct{ b *Bind }

func (t bindTransport) WriteTo(frame []byte, to netip.AddrPort) error {
	ep, err := t.b.innerEndpoint(to)
	if err != nil {
		return err
	}
	return t.b.inner.Send([][]byte{frame}, ep)
}

func (t bindTransport) sendBatch(frames [][]byte, to netip.AddrPort) error {
	ep, err := t.b.innerEndpoint(to)
	if err != nil {
		return err
	}
	return t.b.inner.Send(frames, ep)
}

func (b *Bind) sendTo(frame []byte, to netip.AddrPort) error {
	return bindTransport{b}.WriteTo(frame, to)
}

func (b *Bind) track(nonce [nonceLen]byte, p pending) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) > 1024 {
		for n, q := range b.pending {
			if p.sent.Sub(q.sent) > DefaultWindow {
				delete(b.pending, n)
			}
		}
	}
	b.pending[nonce] = p
}

func (b *Bind) register(relay netip.AddrPort) {
	b.mu.RLock()
	link, ok := b.relays[relay]
	var pair *Key
	if ok {
		pair = link.pair
	}
	b.mu.RUnlock()
	if pair == nil {
		return
	}
	now := b.now()
	r, err := newRegistration(b.cfg.PublicKey, b.counter.next(now))
	if err != nil {
		return
	}
	b.track(r.Nonce, pending{relay: relay, to: relay, sent: now})
	_ = b.sendTo(r.marshal(pair), relay) // retried every RegisterInterval
}

func (b *Bind) ping(peer ID) {
	b.mu.RLock()
	p, ok := b.probes[peer]
	var cands []netip.AddrPort
	if ok {
		cands = p.candidates
	}
	b.mu.RUnlock()
	for _, c := range cands {
		if !b.probeLimit.Allow() {
			return // over budget: the next round tries again
		}
		h, err := newHello(typePing, b.cfg.PublicKey, b.now())
		if err != nil {
			return
		}
		b.track(h.Nonce, pending{peer: peer, to: c, sent: h.Time})
		_ = b.sendTo(h.marshal(b.cfg.Key), c)
	}
}

func (b *Bind) onPing(frame []byte, from netip.AddrPort, ep conn.Endpoint) {
	h, err := parseHello(frame, b.cfg.Key)
	if err != nil || h.Kind != typePing {
		b.strangers.Add(1)
		return
	}
	now := b.now()
	b.mu.Lock()
	err = b.guard.check(h, now)
	b.mu.Unlock()
	if err != nil {
		b.strangers.Add(1)
		return
	}
	r := reply{Kind: typePong, Key: b.cfg.PublicKey, Nonce: h.Nonce, Observed: from}
	_ = b.inner.Send([][]byte{r.marshal(b.cfg.Key)}, ep)
}

func (b *Bind) onReply(frame []byte, from netip.AddrPort) {
	k := b.cfg.Key
	if frame[1] == typeRegistered { // signed by the relay with the pair key
		b.mu.RLock()
		link, ok := b.relays[from]
		if ok {
			k = link.pair
		}
		b.mu.RUnlock()
		if !ok {
			b.strangers.Add(1)
			return
		}
	}
	r, err := parseReply(frame, k)
	if err != nil {
		b.strangers.Add(1)
		return
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[r.Nonce]
	if !ok {
		b.strangers.Add(1) // unsolicited or already answered: a replay
		return
	}
	delete(b.pending, r.Nonce)
	switch r.Kind {
	case typeRegistered:
		link, ok := b.relays[p.relay]
		if !ok || from != p.relay {
			return
		}
		link.Registered, link.Observed, link.RTT = now, r.Observed, now.Sub(p.sent)
	case typePong:
		pr, ok := b.probes[p.peer]
		if !ok || IDOf(r.Key) != p.peer || r.Key != pr.key {
			return
		}
		// from, not p.to: the answer proves the path from where it came.
		pr.state = DirectState{Addr: from, Confirmed: now, Observed: r.Observed}
	}
}

// maintain renews registrations and probes direct candidates until stop.
func (b *Bind) maintain(stop chan struct{}) {
	defer b.done.Done()
	b.registerAll()
	b.pingAll()
	tick := time.NewTicker(min(b.cfg.RegisterInterval, b.cfg.ProbeInterval, time.Second))
	defer tick.Stop()
	lastReg, lastProbe := b.now(), b.now()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := b.now()
		if now.Sub(lastReg) >= b.cfg.RegisterInterval {
			lastReg = now
			b.registerAll()
		}
		if now.Sub(lastProbe) >= b.cfg.ProbeInterval {
			lastProbe = now
			b.pingAll()
		}
	}
}

func (b *Bind) registerAll() {
	b.mu.RLock()
	addrs := make([]netip.AddrPort, 0, len(b.relays))
	for a := range b.relays {
		addrs = append(addrs, a)
	}
	b.mu.RUnlock()
	for _, a := range addrs {
		b.register(a)
	}
}

func (b *Bind) pingAll() {
	b.mu.RLock()
	ids := make([]ID, 0, len(b.probes))
	for id := range b.probes {
		ids = append(ids, id)
	}
	b.mu.RUnlock()
	for _, id := range ids {
		b.ping(id)
	}
}
