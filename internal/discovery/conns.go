package discovery

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ConnLimits bound what idle or greedy clients can hold: neither the
// reference service nor HTTP/2 itself bounds connections or returns their
// memory. Zero values mean the defaults; negative values turn a limit off.
type ConnLimits struct {
	// IdleTimeout closes a connection that has had no RPC or stream open
	// for this long (HTTP/2 GOAWAY; a client reconnects when it next needs
	// to). Watching clients always hold a stream, so they are never idle.
	IdleTimeout time.Duration
	// PerAddress bounds connections from one client IP (the TCP peer;
	// trusted proxies are exempt). A connection over it is accepted, every
	// RPC on it fails with ResourceExhausted naming the limit, and it is
	// closed shortly after.
	PerAddress int
	// WatchersPerAddress bounds open Watch streams per client IP (as the
	// rate limit sees it, so behind a trusted proxy the real client).
	WatchersPerAddress int
	// Max bounds connections in total; zero: 7/8 of the open-file limit,
	// so the service always keeps descriptors to answer new clients with.
	// Connections over it are closed at once.
	Max int
}

// DefaultConnLimits: a Talos node holds one connection and one watch per
// discovery endpoint, so these leave room for a 1,024-member cluster behind
// one NAT address while bounding a single greedy client.
func DefaultConnLimits() ConnLimits {
	return ConnLimits{IdleTimeout: 2 * time.Minute, PerAddress: 1024, WatchersPerAddress: 2048}
}

func (c ConnLimits) withDefaults() ConnLimits {
	d := DefaultConnLimits()
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.PerAddress == 0 {
		c.PerAddress = d.PerAddress
	}
	if c.WatchersPerAddress == 0 {
		c.WatchersPerAddress = d.WatchersPerAddress
	}
	if c.Max == 0 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 64 && rl.Cur < 1<<31 {
			c.Max = int(rl.Cur) / 8 * 7
		} else {
			c.Max = -1
		}
	}
	return c
}

func (c ConnLimits) check() error {
	if c.IdleTimeout > 0 && c.IdleTimeout < time.Second {
		return fmt.Errorf("discovery: serve: --idle-timeout %s is under 1s: clients would be cut between their Hello and Watch; use at least 1s, or a negative value to disable", c.IdleTimeout)
	}
	return nil
}

// connTracker counts connections per client address. It wraps the
// listener (to count and refuse) and remembers connections over the
// per-address limit, so their RPCs fail with a message naming the limit
// rather than a bare reset.
type connTracker struct {
	limits  ConnLimits
	trusted func(netip.Addr) bool
	onLimit func(reason string)

	total  atomic.Int64
	nOver  atomic.Int64 // len(over), read without the lock
	mu     sync.Mutex
	perIP  map[netip.Addr]int
	over   map[string]struct{} // remote addr strings of connections over PerAddress
	graceT time.Duration       // how long an over-limit connection lives
}

func newConnTracker(l ConnLimits, trusted func(netip.Addr) bool, onLimit func(string)) *connTracker {
	return &connTracker{limits: l, trusted: trusted, onLimit: onLimit, perIP: make(map[netip.Addr]int),
		over: make(map[string]struct{}), graceT: 5 * time.Second}
}

// listener wraps l so every accepted connection is counted.
func (t *connTracker) listener(l net.Listener) net.Listener {
	return &trackedListener{Listener: l, t: t}
}

type trackedListener struct {
	net.Listener
	t *connTracker
}

func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *trackedListener) Accept() (net.Conn, error) {
	t := l.t
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if t.limits.Max > 0 && t.total.Load() >= int64(t.limits.Max) {
			// No descriptors to spare: refusing at once keeps the service
			// able to answer the clients it has.
			t.onLimit("connections_total")
			c.Close() //nolint:errcheck
			continue
		}
		ip := addrIP(c.RemoteAddr())
		tc := &trackedConn{Conn: c, t: t, ip: ip}
		t.total.Add(1)
		t.mu.Lock()
		t.perIP[ip]++
		n := t.perIP[ip]
		t.mu.Unlock()
		if t.limits.PerAddress > 0 && n > t.limits.PerAddress && !(t.trusted != nil && t.trusted(ip)) {
			t.onLimit("connections_per_address")
			t.mu.Lock()
			t.over[c.RemoteAddr().String()] = struct{}{}
			t.nOver.Add(1)
			tc.overKey = c.RemoteAddr().String()
			t.mu.Unlock()
			tc.timer = time.AfterFunc(t.graceT, func() { tc.Close() }) //nolint:errcheck
		}
		return tc, nil
	}
}

type trackedConn struct {
	net.Conn
	t       *connTracker
	ip      netip.Addr
	overKey string
	timer   *time.Timer
	once    sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		c.t.total.Add(-1)
		c.t.mu.Lock()
		if c.t.perIP[c.ip]--; c.t.perIP[c.ip] <= 0 {
			delete(c.t.perIP, c.ip)
		}
		if c.overKey != "" {
			delete(c.t.over, c.overKey)
			c.t.nOver.Add(-1)
		}
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// Count is the number of open connections.
func (t *connTracker) Count() int { return int(t.total.Load()) }

// refuseOverLimit is the error for an RPC on a connection over the
// per-address limit, nil on others. It is looked up per call rather than
// tagged on the connection by a gRPC stats handler: a stats handler makes
// gRPC build and hand over an event for every message of every stream.
func (t *connTracker) refuseOverLimit(ctx context.Context) error {
	if t.nOver.Load() == 0 {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	key := p.Addr.String()
	t.mu.Lock()
	_, over := t.over[key]
	t.mu.Unlock()
	if !over {
		return nil
	}
	return status.Errorf(codes.ResourceExhausted, "connection limit of %d per client address reached for %s: close idle connections or raise --max-conns-per-address", t.limits.PerAddress, addrIP(p.Addr))
}

// watcherCounter bounds open watches per client address.
type watcherCounter struct {
	max int
	mu  sync.Mutex
	n   map[netip.Addr]int
}

func (w *watcherCounter) acquire(ip netip.Addr) error {
	if w == nil || w.max <= 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n[ip] >= w.max {
		return status.Errorf(codes.ResourceExhausted, "watch limit of %d open watches per client address reached for %s: close unused watches or raise --max-watchers-per-address", w.max, ip)
	}
	w.n[ip]++
	return nil
}

func (w *watcherCounter) release(ip netip.Addr) {
	if w == nil || w.max <= 0 {
		return
	}
	w.mu.Lock()
	if w.n[ip]--; w.n[ip] <= 0 {
		delete(w.n, ip)
	}
	w.mu.Unlock()
}
