package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/protobuf/proto"
)

// Limits bound what one client can make the service store. The defaults are
// the reference service's (fact sheet section 2), so clients written for it
// never hit a limit here that they would not hit there.
type Limits struct {
	ClusterIDMax          int           // bytes
	AffiliateIDMax        int           // bytes
	AffiliateDataMax      int           // bytes of sealed blob
	AffiliateEndpointMax  int           // bytes per sealed endpoint blob
	EndpointsPerAffiliate int           // endpoints kept per affiliate
	AffiliatesPerCluster  int           // affiliates kept per cluster
	TTLMax                time.Duration // longest accepted ttl
}

// DefaultLimits are the reference service's limits.
func DefaultLimits() Limits {
	return Limits{
		ClusterIDMax:          256,
		AffiliateIDMax:        256,
		AffiliateDataMax:      2048,
		AffiliateEndpointMax:  32,
		EndpointsPerAffiliate: 64,
		AffiliatesPerCluster:  1024,
		TTLMax:                30 * time.Minute,
	}
}

// Store errors the server maps to gRPC status codes.
var (
	// ErrTooManyAffiliates: the cluster already holds Limits.AffiliatesPerCluster.
	ErrTooManyAffiliates = errors.New("too many affiliates in cluster")
	// ErrTooManyEndpoints: the affiliate already holds Limits.EndpointsPerAffiliate.
	ErrTooManyEndpoints = errors.New("too many endpoints for affiliate")
	// ErrUnavailable wraps back-end failures (Redis down): retry later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrClosed ends watches when the store shuts down.
	ErrClosed = errors.New("store closed")
)

// Update is one AffiliateUpdate, validated.
type Update struct {
	ClusterID   string
	AffiliateID string
	// Data replaces the stored blob and resets the affiliate's expiry when
	// non-empty; empty leaves both alone.
	Data []byte
	// Endpoints are merged: a known blob has its expiry extended, an unknown
	// one is appended.
	Endpoints [][]byte
	TTL       time.Duration
}

// Stats is what the metrics report about a store.
type Stats struct {
	Clusters   int
	Affiliates int
	Watchers   int // on this replica
}

// Store keeps clusters' sealed affiliates and tells watchers about changes.
// Implementations: MemoryStore (one process, snapshots to a file) and
// RedisStore (several replicas share one Redis).
type Store interface {
	Update(ctx context.Context, u Update) error
	// Delete removes an affiliate; deleting an unknown one is not an error.
	Delete(ctx context.Context, clusterID, affiliateID string) error
	// List returns the cluster's live affiliates (expired parts left out).
	List(ctx context.Context, clusterID string) ([]*serverpb.Affiliate, error)
	// Watch returns the cluster's current affiliates and a subscription that
	// receives every later change. The caller must Close the subscription.
	Watch(ctx context.Context, clusterID string) ([]*serverpb.Affiliate, *Subscription, error)
	// GC drops expired affiliates and endpoints and tells watchers.
	GC(ctx context.Context) error
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// Subscription is one watcher's queue of changes. It coalesces: it holds at
// most the latest state per affiliate, so a slow watcher gets every
// affiliate's newest state (never a stale one, never a silent gap) and the
// queue is bounded by the number of affiliate IDs that changed. If even
// that exceeds maxPending (churn of distinct IDs while the watcher is
// stuck), the subscription fails with ErrLostUpdates and the server ends the
// stream with Aborted, which makes clients resync from a fresh snapshot.
type Subscription struct {
	mu         sync.Mutex
	pending    map[string]*change
	order      []string
	err        error
	ready      chan struct{} // Next's wake-up; nil once onChange is set
	onChange   func()        // the server's sender: called, never under mu, after a push or fail
	maxPending int
	onClose    func()
	closeOnce  sync.Once
}

// ErrLostUpdates ends a watch whose backlog grew past its bound.
var ErrLostUpdates = errors.New("watcher too slow: backlog of changed affiliates over the limit, resync needed")

func newSubscription(maxPending int, onClose func()) *Subscription {
	return &Subscription{
		ready:      make(chan struct{}, 1),
		maxPending: maxPending,
		onClose:    onClose,
	}
}

// push queues the latest state of one affiliate (nil aff with id = deleted).
// It never blocks.
func (s *Subscription) push(id string, aff *serverpb.Affiliate) { s.pushChange(newChange(id, aff)) }

// pushChange queues ch; stores give every watcher of a cluster the same
// change, so that its message is encoded once (see change).
func (s *Subscription) pushChange(ch *change) {
	id := ch.id
	s.mu.Lock()
	if s.err == nil {
		if _, ok := s.pending[id]; !ok {
			if len(s.order) >= s.maxPending {
				s.err = ErrLostUpdates
			} else {
				s.order = append(s.order, id)
			}
		}
		if s.err == nil {
			if s.pending == nil {
				s.pending = make(map[string]*change)
			}
			s.pending[id] = ch
		}
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Subscription) wake() {
	s.mu.Lock()
	f, ready := s.onChange, s.ready
	s.mu.Unlock()
	if f != nil {
		f()
		return
	}
	select {
	case ready <- struct{}{}:
	default:
	}
}

// notify makes f the way the subscription announces changes instead of
// Next's channel (the server's senders take over; Next must not be used
// afterwards). f runs at once if changes or an error are already queued.
func (s *Subscription) notify(f func()) {
	s.mu.Lock()
	s.onChange = f
	s.ready = nil
	queued := s.err != nil || len(s.order) > 0
	s.mu.Unlock()
	if queued {
		f()
	}
}

// take returns what is queued, in the order the affiliates first changed,
// without waiting: nil, nil if nothing is.
func (s *Subscription) take() ([]*change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if len(s.order) == 0 {
		return nil, nil
	}
	out := make([]*change, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.pending[id])
	}
	// A burst's map is dropped rather than kept: an idle watcher then
	// holds none.
	s.pending = nil
	s.order = nil
	return out, nil
}

// fail ends the subscription with err (first error wins).
func (s *Subscription) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.wake()
}

// Next waits for changes and returns them in the order the affiliates first
// changed, one WatchResponse each, or the error that ended the subscription.
func (s *Subscription) Next(ctx context.Context) ([]*serverpb.WatchResponse, error) {
	for {
		// Once failed, queued changes are moot: the stream ends and the
		// client resyncs from a fresh snapshot.
		if chs, err := s.take(); err != nil || chs != nil {
			out := make([]*serverpb.WatchResponse, len(chs))
			for i, ch := range chs {
				out[i] = ch.response()
			}
			return out, err
		}
		s.mu.Lock()
		ready := s.ready
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ready:
		}
	}
}

// Close unregisters the subscription.
func (s *Subscription) Close() {
	s.closeOnce.Do(func() {
		if s.onClose != nil {
			s.onClose()
		}
	})
}

// check rejects limits that would refuse every request.
func (l Limits) check() error {
	for _, v := range []struct {
		flag string
		n    int
	}{
		{"cluster ID size", l.ClusterIDMax}, {"affiliate ID size", l.AffiliateIDMax},
		{"affiliate data size", l.AffiliateDataMax}, {"endpoint size", l.AffiliateEndpointMax},
		{"--max-endpoints", l.EndpointsPerAffiliate}, {"--max-affiliates", l.AffiliatesPerCluster},
	} {
		if v.n <= 0 {
			return fmt.Errorf("discovery: limits: %s is %d, must be positive", v.flag, v.n)
		}
	}
	if l.TTLMax <= 0 {
		return fmt.Errorf("discovery: limits: --max-ttl is %s, must be positive", l.TTLMax)
	}
	return nil
}

// validateIDs checks the IDs against the size limits; the errors name the
// limit and are mapped to InvalidArgument.
func (l Limits) validateIDs(clusterID, affiliateID string, needAffiliate bool) error {
	if clusterID == "" {
		return fmt.Errorf("cluster_id is empty: set the cluster ID")
	}
	if len(clusterID) > l.ClusterIDMax {
		return fmt.Errorf("cluster_id is %d bytes, over the limit of %d bytes", len(clusterID), l.ClusterIDMax)
	}
	if !needAffiliate {
		return nil
	}
	if affiliateID == "" {
		return fmt.Errorf("affiliate_id is empty: set the affiliate ID")
	}
	if len(affiliateID) > l.AffiliateIDMax {
		return fmt.Errorf("affiliate_id is %d bytes, over the limit of %d bytes", len(affiliateID), l.AffiliateIDMax)
	}
	return nil
}

func (l Limits) validateUpdate(u Update) error {
	if err := l.validateIDs(u.ClusterID, u.AffiliateID, true); err != nil {
		return err
	}
	if len(u.Data) > l.AffiliateDataMax {
		return fmt.Errorf("affiliate_data is %d bytes, over the limit of %d bytes", len(u.Data), l.AffiliateDataMax)
	}
	for i, ep := range u.Endpoints {
		if len(ep) > l.AffiliateEndpointMax {
			return fmt.Errorf("affiliate_endpoints[%d] is %d bytes, over the limit of %d bytes per endpoint", i, len(ep), l.AffiliateEndpointMax)
		}
	}
	if u.TTL > l.TTLMax {
		return fmt.Errorf("ttl %s is over the limit of %s", u.TTL, l.TTLMax)
	}
	if u.TTL < 0 {
		return fmt.Errorf("ttl %s is negative", u.TTL)
	}
	return nil
}

// change is one affiliate's new state (aff nil: deleted). A store makes one
// per change and queues the same one for every watcher of the cluster, so
// the message that carries it alone (the usual case: a watcher that keeps
// up gets one change per message) is encoded once for all of them instead
// of once per watcher.
type change struct {
	id   string
	aff  *serverpb.Affiliate // nil: deleted
	once sync.Once
	enc  preEncoded // the WatchResponse carrying only this change
}

func newChange(id string, aff *serverpb.Affiliate) *change { return &change{id: id, aff: aff} }

// affiliate is what a message carries for this change: the affiliate, or
// only its ID for a deletion.
func (c *change) affiliate() *serverpb.Affiliate {
	if c.aff == nil {
		return &serverpb.Affiliate{Id: c.id}
	}
	return c.aff
}

// response is the WatchResponse that carries this change alone.
func (c *change) response() *serverpb.WatchResponse {
	return &serverpb.WatchResponse{Deleted: c.aff == nil, Affiliates: []*serverpb.Affiliate{c.affiliate()}}
}

// message is what a watcher sends for this change alone: the response
// encoded once, shared by every watcher (the server's codec passes it
// through), or the response itself should encoding fail (gRPC then
// reports the error on the stream).
func (c *change) message() any {
	c.once.Do(func() {
		if b, err := proto.Marshal(c.response()); err == nil {
			c.enc = b
		}
	})
	if c.enc == nil {
		return c.response()
	}
	return c.enc
}
