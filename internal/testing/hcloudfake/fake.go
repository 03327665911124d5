// Package hcloudfake is a loopback stand-in of the Hetzner Cloud API's
// firewall endpoints (plus minimal servers and actions), faithful enough for
// hcloud-go and the hcloud CLI: same paths, JSON shapes, status codes, error
// bodies, pagination, rate-limit headers and asynchronous actions. Faults
// (429 bursts, 5xx, slow or failing actions) are injected through the Go API
// or the /_admin HTTP endpoints, which need no token:
//
//	POST   /_admin/servers       {"name":"n1","labels":{"role":"worker"}} -> {"id":1001}
//	POST   /_admin/faults        {"status":429,"count":3,"method":"POST","path":"/firewalls"}
//	DELETE /_admin/faults        clear queued faults and action failures
//	PUT    /_admin/action_delay  {"delay":"2s"}
//	POST   /_admin/fail_actions  {"count":1}
//	GET    /_admin/requests      the recorded /v1 requests
//	GET    /_admin/firewalls     firewall snapshots
//
// Known simplifications: apply_to and set_rules take effect at once (removal
// waits for its action, so deleting too early gets resource_in_use); servers
// carry only what firewall flows read (id, name, labels, status, public_net).
package hcloudfake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Options configure a Fake. Zero values give the defaults noted.
type Options struct {
	// Token is the bearer token every /v1 request must carry ("test-token").
	Token string
	// ReadOnlyToken, if set, is accepted for GET requests only; writes get 401 token_readonly.
	ReadOnlyToken string
	// ActionDelay is how long actions stay "running" (0: they finish at once).
	ActionDelay time.Duration
	// RateLimit is the RateLimit-Limit per hour (3600); the bucket refills one per second.
	RateLimit int
	// RateLimitResetIn is how far RateLimit-Reset lies ahead on an injected 429 (1s).
	RateLimitResetIn time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Fault makes the next Count matching /v1 requests fail with Status. Method
// and Path (relative to /v1, prefix match, e.g. "/firewalls") narrow the match.
type Fault struct {
	Status int    `json:"status"`
	Code   string `json:"code,omitempty"` // error code; derived from Status when empty
	Count  int    `json:"count"`
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Request is one recorded /v1 request.
type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Query  string `json:"query"`
	Body   string `json:"body"`
	Status int    `json:"status"`
}

// Fake is the in-memory Hetzner Cloud project. It is an http.Handler.
type Fake struct {
	opts Options

	mu          sync.Mutex
	nextID      int64
	firewalls   map[int64]*firewall
	servers     map[int64]*server
	actions     map[int64]*action
	faults      []Fault
	failActions int
	actionDelay time.Duration
	tokens      float64
	tokensAt    time.Time
	requests    []Request
}

// New returns an empty project.
func New(opts Options) *Fake {
	if opts.Token == "" {
		opts.Token = "test-token"
	}
	if opts.RateLimit == 0 {
		opts.RateLimit = 3600
	}
	if opts.RateLimitResetIn == 0 {
		opts.RateLimitResetIn = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Fake{
		opts:        opts,
		nextID:      1000,
		firewalls:   map[int64]*firewall{},
		servers:     map[int64]*server{},
		actions:     map[int64]*action{},
		actionDelay: opts.ActionDelay,
		tokens:      float64(opts.RateLimit),
		tokensAt:    opts.Now(),
	}
}

// Token returns the bearer token the fake accepts.
func (f *Fake) Token() string { return f.opts.Token }

// Running is a Fake served on a loopback listener.
type Running struct {
	*Fake
	// Endpoint is the API base URL for hcloud-go / HCLOUD_ENDPOINT, ending in /v1.
	Endpoint string
	srv      *http.Server
	done     chan error
}

// Start serves f on addr (e.g. "127.0.0.1:0").
func Start(f *Fake, addr string) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hcloudfake: listen on %q: %w", addr, err)
	}
	r := &Running{
		Fake:     f,
		Endpoint: "http://" + ln.Addr().String() + "/v1",
		srv:      &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second},
		done:     make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Close stops the listener and waits for the serve loop to end.
func (r *Running) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	if serr := <-r.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// AddServer creates a server (running, with a public IPv4) and returns its ID.
func (f *Fake) AddServer(name string, labels map[string]string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addServerLocked(name, labels)
}

func (f *Fake) addServerLocked(name string, labels map[string]string) int64 {
	f.nextID++
	id := f.nextID
	if labels == nil {
		labels = map[string]string{}
	}
	f.servers[id] = &server{ID: id, Name: name, Labels: labels, Created: f.now()}
	return id
}

// Inject queues a fault.
func (f *Fake) Inject(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ft.Count > 0 {
		f.faults = append(f.faults, ft)
	}
}

// ClearFaults drops every queued fault and action failure.
func (f *Fake) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
	f.failActions = 0
}

// SetActionDelay sets how long new actions stay running.
func (f *Fake) SetActionDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actionDelay = d
}

// FailActions makes the next n actions end with status "error".
func (f *Fake) FailActions(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failActions = n
}

// Requests returns the recorded /v1 requests, oldest first.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// FirewallRule is a rule as the API returns it.
type FirewallRule struct {
	Direction      string   `json:"direction"`
	Protocol       string   `json:"protocol"`
	Port           *string  `json:"port"`
	SourceIPs      []string `json:"source_ips"`
	DestinationIPs []string `json:"destination_ips"`
	Description    *string  `json:"description"`
}

// Firewall is a snapshot of a firewall for tests.
type Firewall struct {
	ID        int64
	Name      string
	Labels    map[string]string
	Rules     []FirewallRule
	ServerIDs []int64
	Selectors []string
}

// Firewalls returns snapshots of all firewalls, by ID.
func (f *Fake) Firewalls() []Firewall {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settle()
	var out []Firewall
	for _, fw := range f.sortedFirewalls() {
		out = append(out, fw.snapshot())
	}
	return out
}

// Firewall returns a snapshot of one firewall.
func (f *Fake) Firewall(id int64) (Firewall, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settle()
	fw, ok := f.firewalls[id]
	if !ok {
		return Firewall{}, false
	}
	return fw.snapshot(), true
}

func (fw *firewall) snapshot() Firewall {
	s := Firewall{ID: fw.ID, Name: fw.Name, Labels: cloneMap(fw.Labels), Rules: slices.Clone(fw.Rules)}
	for _, a := range fw.AppliedTo {
		if a.Server != 0 {
			s.ServerIDs = append(s.ServerIDs, a.Server)
		} else {
			s.Selectors = append(s.Selectors, a.Selector)
		}
	}
	return s
}

func (f *Fake) now() time.Time { return f.opts.Now().UTC() }

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
