package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.zx2c4.com/wireguard/conn"
)

// DefaultTTL is how long a registration lasts without being renewed. Members
// renew every DefaultRegisterInterval, so a relay forgets a member that went
// away after a few missed renewals.
const DefaultTTL = 30 * time.Second

// Drop reasons, the "reason" label of meshspan_relay_dropped_packets_total.
const (
	DropStranger    = "stranger"     // data from an address no member registered
	DropBadMAC      = "bad_mac"      // registration not signed with the key pair of member and relay
	DropReplay      = "replay"       // registration counter not above the member's last one
	DropNotMember   = "not_member"   // registration of a key that is not one of this node's peers
	DropAddrInUse   = "addr_in_use"  // registration from an address another live member holds
	DropUnknownPeer = "unknown_peer" // destination member not registered here
	DropMalformed   = "malformed"    // too short, unknown type, not a relay frame
	DropIDConflict  = "id_conflict"  // another key holds this relay ID
)

var dropReasons = []string{DropStranger, DropBadMAC, DropReplay, DropNotMember, DropAddrInUse, DropUnknownPeer, DropMalformed, DropIDConflict}

// Transport sends a frame to an underlay address. *net.UDPConn does, through
// UDPTransport; the userspace Bind does through WireGuard's own socket.
type Transport interface {
	WriteTo(frame []byte, to netip.AddrPort) error
}

// UDPTransport adapts a UDP socket to Transport.
type UDPTransport struct{ Conn *net.UDPConn }

// WriteTo sends frame to to.
func (t UDPTransport) WriteTo(frame []byte, to netip.AddrPort) error {
	_, err := t.Conn.WriteToUDPAddrPort(frame, to)
	return err
}

// member is one of the relay's peers (SetMembers): the only keys that may
// register. Its registration fields are guarded by Server.mu.
type member struct {
	key [keyLen]byte
	id  ID

	pairOnce sync.Once
	pair     *Key // registrations' key (Key.Pair); nil if the exchange failed

	addr    netip.AddrPort // registered source address; zero: not registered
	seen    time.Time      // last accepted registration, on the relay's clock
	counter uint64         // of the last accepted registration
}

func (m *member) pairKey(s *Server) *Key {
	m.pairOnce.Do(func() { m.pair, _ = s.key.Pair(s.private, m.key, RoleRelay) })
	return m.pair
}

// Server forwards WireGuard packets between registered members. It is safe
// for concurrent use; Handle may be called from several receive goroutines.
type Server struct {
	key     *Key
	private [32]byte // this node's WireGuard private key
	now     func() time.Time
	ttl     time.Duration
	mark    uint32

	mu         sync.RWMutex
	peers      map[[keyLen]byte]*member // who may register
	byAddr     map[netip.AddrPort]*member
	byID       map[ID]*member
	lastExpire time.Time

	forwardedPackets prometheus.Counter
	forwardedBytes   prometheus.Counter
	dropped          map[string]prometheus.Counter
	droppedVec       *prometheus.CounterVec
	members          prometheus.GaugeFunc
}

// ServerOption adjusts a Server.
type ServerOption func(*Server)

// WithClock makes the server read time from now (tests).
func WithClock(now func() time.Time) ServerOption { return func(s *Server) { s.now = now } }

// WithMark sets SO_MARK on the socket Serve opens: the host policy's firewall
// mark, so that relayed packets to members stay on the underlay instead of
// being routed into the mesh (the WireGuard-port relay shares WireGuard's
// socket, which the device marks itself).
func WithMark(mark uint32) ServerOption { return func(s *Server) { s.mark = mark } }

// WithTTL sets how long a registration lasts.
func WithTTL(d time.Duration) ServerOption { return func(s *Server) { s.ttl = d } }

// NewServer returns a relay server for the cluster whose relay key is k, on
// the node whose WireGuard private key is private. Nobody may register until
// SetMembers names the node's peers.
func NewServer(k *Key, private [32]byte, opts ...ServerOption) *Server {
	s := &Server{
		key:     k,
		private: private,
		now:     time.Now,
		ttl:     DefaultTTL,
		peers:   make(map[[keyLen]byte]*member),
		byAddr:  make(map[netip.AddrPort]*member),
		byID:    make(map[ID]*member),
		forwardedPackets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshspan_relay_forwarded_packets_total",
			Help: "WireGuard packets this node relayed between members.",
		}),
		forwardedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshspan_relay_forwarded_bytes_total",
			Help: "Bytes of WireGuard ciphertext this node relayed between members.",
		}),
		droppedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshspan_relay_dropped_packets_total",
			Help: "Packets the relay refused, by reason (stranger, bad_mac, replay, not_member, addr_in_use, unknown_peer, malformed, id_conflict).",
		}, []string{"reason"}),
		dropped: make(map[string]prometheus.Counter),
	}
	for _, r := range dropReasons {
		// Resolved once: the data path must not hash label values per packet.
		s.dropped[r] = s.droppedVec.WithLabelValues(r)
	}
	s.members = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshspan_relay_members",
		Help: "Members currently registered with this relay.",
	}, func() float64 { return float64(s.Members()) })
	for _, o := range opts {
		o(s)
	}
	return s
}

// PublicKey is the relay's WireGuard public key, which members register with
// (Target.Key).
func (s *Server) PublicKey() [32]byte {
	pub, _ := publicKey(s.private) // X25519 takes any 32 bytes
	return pub
}

// Collectors returns the server's metrics for the caller to register.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.forwardedPackets, s.forwardedBytes, s.droppedVec, s.members}
}

// Dropped returns how many packets were dropped for reason.
func (s *Server) Dropped(reason string) uint64 {
	c, ok := s.dropped[reason]
	if !ok {
		return 0
	}
	return uint64(counterValue(c))
}

// Forwarded returns how many packets were relayed.
func (s *Server) Forwarded() uint64 { return uint64(counterValue(s.forwardedPackets)) }

// Members returns how many members hold a live registration.
func (s *Server) Members() int {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, m := range s.byID {
		if now.Sub(m.seen) <= s.ttl {
			n++
		}
	}
	return n
}

// SetMembers sets the WireGuard public keys that may register: this node's
// current peers. A key that leaves the set loses its registration at once.
func (s *Server) SetMembers(keys [][32]byte) {
	want := make(map[[keyLen]byte]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, m := range s.peers {
		if !want[k] {
			s.unregisterLocked(m)
			delete(s.peers, k)
		}
	}
	for k := range want {
		if _, ok := s.peers[k]; !ok {
			s.peers[k] = &member{key: k, id: IDOf(k)}
		}
	}
}

// Handle processes one frame received from from, replying or forwarding
// through out. It may rewrite frame in place (forwarding does: the header is
// swapped, the ciphertext is never touched or copied).
func (s *Server) Handle(frame []byte, from netip.AddrPort, out Transport) {
	if to, ok := s.Route(frame, from, out); ok {
		_ = out.WriteTo(frame, to) // a member that went away re-registers or expires
	}
}

// Route is Handle without the send, so that callers can batch: for a data
// frame from a registered member it rewrites the header in place and
// returns where to send the frame; control frames are answered through out
// and yield ok=false, as does anything dropped.
func (s *Server) Route(frame []byte, from netip.AddrPort, out Transport) (to netip.AddrPort, ok bool) {
	return s.routeAt(frame, from, s.now(), out)
}

// routeAt is Route at time now: batch loops read the clock once per batch,
// not once per frame.
func (s *Server) routeAt(frame []byte, from netip.AddrPort, now time.Time, out Transport) (to netip.AddrPort, ok bool) {
	if !IsFrame(frame) {
		s.drop(DropMalformed)
		return to, false
	}
	switch frame[1] {
	case typeSend:
		return s.route(frame, from, now)
	case typeRegister:
		s.register(frame, from, out)
	default:
		s.drop(DropMalformed)
	}
	return to, false
}

func (s *Server) route(frame []byte, from netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	if len(frame) < DataOverhead+4 {
		s.drop(DropMalformed)
		return netip.AddrPort{}, false
	}
	dst := ID(frame[2 : 2+idLen])
	// Registrations change under the write lock: read what is needed here.
	s.mu.RLock()
	src, okSrc := s.byAddr[from]
	okSrc = okSrc && now.Sub(src.seen) <= s.ttl
	to, okDst := s.byID[dst]
	okDst = okDst && now.Sub(to.seen) <= s.ttl
	var srcID ID
	var toAddr netip.AddrPort
	if okSrc && okDst {
		srcID, toAddr = src.id, to.addr
	}
	s.mu.RUnlock()
	if !okSrc {
		s.drop(DropStranger)
		return netip.AddrPort{}, false
	}
	if !okDst {
		s.drop(DropUnknownPeer)
		return netip.AddrPort{}, false
	}
	putDataHeader(frame, typeDeliver, srcID)
	s.forwardedPackets.Inc()
	s.forwardedBytes.Add(float64(len(frame) - DataOverhead))
	return toAddr, true
}

func (s *Server) register(frame []byte, from netip.AddrPort, out Transport) {
	key, ok := registrant(frame)
	if !ok {
		s.drop(DropMalformed)
		return
	}
	s.mu.RLock()
	m := s.peers[key]
	s.mu.RUnlock()
	if m == nil {
		s.drop(DropNotMember)
		return
	}
	pair := m.pairKey(s) // one X25519 per peer, cached: a flood costs HMACs only
	if pair == nil {
		s.drop(DropBadMAC)
		return
	}
	r, err := parseRegistration(frame, pair)
	if err != nil {
		s.dropErr(err)
		return
	}
	now := s.now()
	s.mu.Lock()
	if reason := s.acceptLocked(m, r, from, now); reason != "" {
		s.mu.Unlock()
		s.drop(reason)
		return
	}
	s.mu.Unlock()

	ack := reply{Kind: typeRegistered, Nonce: r.Nonce, Observed: from}
	_ = out.WriteTo(ack.marshal(pair), from) // lost acks are retried by the member
}

// acceptLocked records m's registration r from from, or returns why not.
func (s *Server) acceptLocked(m *member, r registration, from netip.AddrPort, now time.Time) string {
	if s.peers[m.key] != m {
		return DropNotMember // left the peer set since it was looked up
	}
	live := func(x *member) bool { return x.addr.IsValid() && now.Sub(x.seen) <= s.ttl }
	// Only this member's own counters are compared: a replayed or late frame
	// is refused whatever the two clocks say. Once the registration has
	// expired any counter is taken, so a member whose clock was set back
	// across a restart is refused for one TTL at most.
	if live(m) && r.Counter <= m.counter {
		return DropReplay
	}
	if other := s.byID[m.id]; other != nil && other != m {
		if live(other) {
			return DropIDConflict
		}
		s.unregisterLocked(other)
	}
	if other := s.byAddr[from]; other != nil && other != m {
		if live(other) {
			// Never take a live member's address: a registration with a
			// spoofed source would otherwise cut that member off.
			return DropAddrInUse
		}
		s.unregisterLocked(other)
	}
	if m.addr != from {
		if s.byAddr[m.addr] == m {
			delete(s.byAddr, m.addr)
		}
		m.addr = from
		s.byAddr[from] = m
	}
	s.byID[m.id] = m
	m.seen, m.counter = now, r.Counter
	if now.Sub(s.lastExpire) >= time.Second {
		s.lastExpire = now
		s.expireLocked(now)
	}
	return ""
}

// unregisterLocked forgets m's registration (it stays a peer).
func (s *Server) unregisterLocked(m *member) {
	if s.byAddr[m.addr] == m {
		delete(s.byAddr, m.addr)
	}
	if s.byID[m.id] == m {
		delete(s.byID, m.id)
	}
	m.addr = netip.AddrPort{}
}

// expireLocked forgets registrations older than the TTL.
func (s *Server) expireLocked(now time.Time) {
	for _, m := range s.byID {
		if now.Sub(m.seen) > 3*s.ttl {
			s.unregisterLocked(m)
		}
	}
}

func (s *Server) drop(reason string) { s.dropped[reason].Inc() }

func (s *Server) dropErr(err error) {
	switch {
	case errors.Is(err, errBadMAC):
		s.drop(DropBadMAC)
	default:
		s.drop(DropMalformed)
	}
}

// Serve relays on its own UDP port through bind until bind is closed. bind
// is normally conn.NewDefaultBind(): it brings batched reads and writes with
// UDP GRO and GSO, so a burst from one member leaves for the other in a few
// syscalls. For relay.port (or kernel WireGuard holding the WireGuard port)
// prefer ListenUDP: on Linux it forwards the same bursts without copying
// them or waking the netpoller, at about 60% of Serve's CPU per Gbit/s.
func (s *Server) Serve(bind conn.Bind, port uint16) (actual uint16, wait func() error, err error) {
	fns, actual, err := bind.Open(port)
	if err != nil {
		return 0, nil, fmt.Errorf("relay: listen on UDP port %d: %w", port, err)
	}
	if s.mark != 0 {
		if err := bind.SetMark(s.mark); err != nil {
			bind.Close()
			return 0, nil, fmt.Errorf("relay: mark the socket on UDP port %d with %#x: %w (needs CAP_NET_ADMIN)", port, s.mark, err)
		}
	}
	out := &bindOut{bind: bind, eps: map[netip.AddrPort]conn.Endpoint{}}
	errs := make(chan error, len(fns))
	for _, fn := range fns {
		go func() {
			n := bind.BatchSize()
			bufs := make([][]byte, n)
			for i := range bufs {
				bufs[i] = make([]byte, 65536)
			}
			sizes := make([]int, n)
			eps := make([]conn.Endpoint, n)
			var fw forwarder
			for {
				k, err := fn(bufs, sizes, eps)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						errs <- nil
					} else {
						errs <- fmt.Errorf("relay: receive: %w", err)
					}
					return
				}
				now := s.now()
				for i := 0; i < k; i++ {
					if to, ok := s.routeAt(bufs[i][:sizes[i]], addrOf(eps[i]), now, out); ok {
						fw.add(bufs[i][:sizes[i]], to)
					}
				}
				fw.flush(out)
			}
		}()
	}
	wait = func() error {
		var all []error
		for range fns {
			all = append(all, <-errs)
		}
		return errors.Join(all...)
	}
	return actual, wait, nil
}

// forwarder collects routed frames and sends each run bound for the same
// member with one Send, which the standard Bind turns into one GSO write.
type forwarder struct {
	frames [][]byte
	to     []netip.AddrPort
}

func (f *forwarder) add(frame []byte, to netip.AddrPort) {
	f.frames = append(f.frames, frame)
	f.to = append(f.to, to)
}

func (f *forwarder) flush(out batchSender) {
	for i := 0; i < len(f.frames); {
		j := i + 1
		for j < len(f.frames) && f.to[j] == f.to[i] {
			j++
		}
		_ = out.sendBatch(f.frames[i:j], f.to[i])
		i = j
	}
	clear(f.frames)
	f.frames, f.to = f.frames[:0], f.to[:0]
}

type batchSender interface {
	sendBatch(frames [][]byte, to netip.AddrPort) error
}

// bindOut sends through a conn.Bind, caching its endpoints.
type bindOut struct {
	bind conn.Bind
	mu   sync.Mutex
	eps  map[netip.AddrPort]conn.Endpoint
}

func (o *bindOut) endpoint(to netip.AddrPort) (conn.Endpoint, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ep, ok := o.eps[to]; ok {
		return ep, nil
	}
	ep, err := o.bind.ParseEndpoint(to.String())
	if err != nil {
		return nil, err
	}
	if len(o.eps) > 4096 {
		clear(o.eps)
	}
	o.eps[to] = ep
	return ep, nil
}

func (o *bindOut) WriteTo(frame []byte, to netip.AddrPort) error {
	return o.sendBatch([][]byte{frame}, to)
}

func (o *bindOut) sendBatch(frames [][]byte, to netip.AddrPort) error {
	ep, err := o.endpoint(to)
	if err != nil {
		return err
	}
	return o.bind.Send(frames, ep)
}

// unmap turns an IPv4-mapped IPv6 source (dual-stack sockets) into plain
// IPv4 so one member has one address whatever socket saw it.
func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
