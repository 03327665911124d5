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
	DropBadMAC      = "bad_mac"      // control frame not signed with the cluster's relay key
	DropReplay      = "replay"       // control frame nonce seen before
	DropStale       = "stale"        // control frame timestamp outside the window
	DropUnknownPeer = "unknown_peer" // destination member not registered here
	DropMalformed   = "malformed"    // too short, unknown type, not a relay frame
	DropIDConflict  = "id_conflict"  // another key holds this relay ID
)

var dropReasons = []string{DropStranger, DropBadMAC, DropReplay, DropStale, DropUnknownPeer, DropMalformed, DropIDConflict}

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

type member struct {
	key  [keyLen]byte
	id   ID
	addr netip.AddrPort
	seen time.Time // last accepted registration
}

// Server forwards WireGuard packets between registered members. It is safe
// for concurrent use; Handle may be called from several receive goroutines.
type Server struct {
	key  *Key
	now  func() time.Time
	ttl  time.Duration
	mark uint32

	mu     sync.RWMutex
	byAddr map[netip.AddrPort]*member
	byID   map[ID]*member
	guard  *replayGuard

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

// NewServer returns a relay server for the cluster whose relay key is k.
func NewServer(k *Key, opts ...ServerOption) *Server {
	s := &Server{
		key:    k,
		now:    time.Now,
		ttl:    DefaultTTL,
		byAddr: make(map[netip.AddrPort]*member),
		byID:   make(map[ID]*member),
		guard:  newReplayGuard(DefaultWindow, 1<<16),
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
			Help: "Packets the relay refused, by reason (stranger, bad_mac, replay, stale, unknown_peer, malformed, id_conflict).",
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
	s.mu.RLock()
	src, okSrc := s.byAddr[from]
	to, okDst := s.byID[dst]
	s.mu.RUnlock()
	if !okSrc || now.Sub(src.seen) > s.ttl {
		s.drop(DropStranger)
		return netip.AddrPort{}, false
	}
	if !okDst || now.Sub(to.seen) > s.ttl {
		s.drop(DropUnknownPeer)
		return netip.AddrPort{}, false
	}
	putDataHeader(frame, typeDeliver, src.id)
	s.forwardedPackets.Inc()
	s.forwardedBytes.Add(float64(len(frame) - DataOverhead))
	return to.addr, true
}

func (s *Server) register(frame []byte, from netip.AddrPort, out Transport) {
	h, err := parseHello(frame, s.key)
	if err != nil || h.Kind != typeRegister {
		s.dropErr(err)
		return
	}
	now := s.now()
	id := IDOf(h.Key)
	s.mu.Lock()
	if err := s.guard.check(h, now); err != nil {
		s.mu.Unlock()
		s.dropErr(err)
		return
	}
	m, ok := s.byID[id]
	if ok && m.key != h.Key && now.Sub(m.seen) <= s.ttl {
		s.mu.Unlock()
		s.drop(DropIDConflict)
		return
	}
	if ok && h.Time.Before(m.seen) && m.addr != from && now.Sub(m.seen) <= s.ttl {
		// An older registration arriving late must not move a member back.
		s.mu.Unlock()
		s.drop(DropStale)
		return
	}
	if !ok || m.key != h.Key {
		m = &member{key: h.Key, id: id}
		s.byID[id] = m
	}
	if m.addr != from {
		if old, ok := s.byAddr[m.addr]; ok && old == m {
			delete(s.byAddr, m.addr)
		}
		if prev, ok := s.byAddr[from]; ok && prev != m {
			delete(s.byID, prev.id) // that address now belongs to someone else
		}
		m.addr = from
		s.byAddr[from] = m
	}
	m.seen = now
	s.expireLocked(now)
	s.mu.Unlock()

	ack := reply{Kind: typeRegistered, Nonce: h.Nonce, Observed: from}
	_ = out.WriteTo(ack.marshal(s.key), from) // lost acks are retried by the member
}

// expireLocked forgets registrations older than the TTL.
func (s *Server) expireLocked(now time.Time) {
	for id, m := range s.byID {
		if now.Sub(m.seen) > 3*s.ttl {
			delete(s.byID, id)
			if s.byAddr[m.addr] == m {
				delete(s.byAddr, m.addr)
			}
		}
	}
}

func (s *Server) drop(reason string) { s.dropped[reason].Inc() }

func (s *Server) dropErr(err error) {
	switch {
	case errors.Is(err, errBadMAC):
		s.drop(DropBadMAC)
	case errors.Is(err, errReplay):
		s.drop(DropReplay)
	case errors.Is(err, errStale), errors.Is(err, errFull):
		s.drop(DropStale)
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
