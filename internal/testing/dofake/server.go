// Package dofake is a loopback stand-in for the DigitalOcean API's cloud
// firewall endpoints (/v2/firewalls and what they touch: droplets and tags),
// faithful enough that godo and doctl work against it as against the real
// API: paths, JSON shapes, status codes, error bodies, pagination and
// rate-limit headers. Tests seed droplets and tags and inject faults (429
// bursts, 5xx replies, slow status) through the Go API; the standalone
// command (./cmd) exposes the same controls as flags and /_dofake/ admin
// endpoints.
package dofake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Token is the bearer token accepted for reads and writes. Required.
	Token string
	// ReadOnlyToken, when set, is accepted for GET only; writes with it get
	// 403, like a DigitalOcean token without write scope.
	ReadOnlyToken string
	// RateLimit is the number of requests per hour per server (the real
	// limit is 5000 per token); 0 means 5000.
	RateLimit int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Fault makes the next Count API requests matching Method and Path fail
// with Status before they are processed.
type Fault struct {
	Method string `json:"method"` // "" matches any method
	Path   string `json:"path"`   // URL path prefix; "" matches any
	Status int    `json:"status"` // 429 or 5xx
	Count  int    `json:"count"`
	// RetryAfter, for 429, is sent as the retry-after header (seconds), as
	// the burst limiter does. Zero sends none and reports the window as
	// exhausted instead: ratelimit-remaining 0, ratelimit-reset now+ResetIn.
	RetryAfter int `json:"retry_after"`
	ResetIn    int `json:"reset_in"`
}

// Request is one API request the server answered, for tests to inspect.
type Request struct {
	Method string
	Path   string
	Query  string
	Status int
	Body   []byte
}

// Server is the stand-in. It implements http.Handler; serve it with
// httptest.NewServer or http.Server.
type Server struct {
	opts Options
	mux  *http.ServeMux

	mu          sync.Mutex
	firewalls   map[string]*stored
	order       []string // firewall IDs in creation order (the list order)
	droplets    map[int]string
	tags        map[string]bool
	faults      []Fault
	slowReads   int
	windowStart time.Time
	used        int
	requests    []Request
	nextReq     int
}

type stored struct {
	fw        Firewall
	waitReads int // GETs still answered with status "waiting"
}

// New returns a server with no firewalls, droplets or tags.
func New(opts Options) *Server {
	if opts.RateLimit == 0 {
		opts.RateLimit = 5000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:      opts,
		firewalls: map[string]*stored{},
		droplets:  map[int]string{},
		tags:      map[string]bool{},
	}
	s.routes()
	return s
}

// AddDroplet makes a droplet exist, so firewalls may be applied to it.
func (s *Server) AddDroplet(id int, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.droplets[id] = name
}

// AddTag makes a tag exist, so firewalls may be applied to it.
func (s *Server) AddTag(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tags[name] = true
}

// InjectFault queues a fault; queued faults are consumed in order.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// PendingFaults returns how many injected failures have not yet fired.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.faults {
		n += f.Count
	}
	return n
}

// SetSlowStatus makes every firewall created or changed from now on report
// status "waiting" (with pending changes for its droplets) for the next
// reads GETs, then "succeeded".
func (s *Server) SetSlowStatus(reads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowReads = reads
}

// Firewall returns a copy of a stored firewall.
func (s *Server) Firewall(id string) (Firewall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.firewalls[id]
	if !ok {
		return Firewall{}, false
	}
	return st.fw.clone(), true
}

// Firewalls returns copies of all firewalls in creation order.
func (s *Server) Firewalls() []Firewall {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Firewall, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.firewalls[id].fw.clone())
	}
	return out
}

// Requests returns the API requests answered so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// takeFault consumes and returns the first queued fault matching r.
func (s *Server) takeFault(r *http.Request) (Fault, bool) {
	for i := range s.faults {
		f := &s.faults[i]
		if f.Count <= 0 || (f.Method != "" && f.Method != r.Method) || !strings.HasPrefix(r.URL.Path, f.Path) {
			continue
		}
		f.Count--
		hit := *f
		if f.Count == 0 {
			s.faults = slices.Delete(s.faults, i, i+1)
		}
		return hit, true
	}
	return Fault{}, false
}

// rateHeaders counts the request against the hourly window and sets the
// ratelimit-* headers; it reports whether the window is exhausted.
func (s *Server) rateHeaders(h http.Header) (exhausted bool) {
	now := s.opts.Now()
	if s.windowStart.IsZero() || now.Sub(s.windowStart) >= time.Hour {
		s.windowStart, s.used = now, 0
	}
	s.used++
	remaining := s.opts.RateLimit - s.used
	if remaining < 0 {
		remaining = 0
		exhausted = true
	}
	h.Set("ratelimit-limit", fmt.Sprint(s.opts.RateLimit))
	h.Set("ratelimit-remaining", fmt.Sprint(remaining))
	h.Set("ratelimit-reset", fmt.Sprint(s.windowStart.Add(time.Hour).Unix()))
	return exhausted
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
