package discovery

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
)

// MemoryStore keeps everything in this process; WriteSnapshot and
// LoadSnapshot carry it across restarts.
type MemoryStore struct {
	limits Limits
	now    func() time.Time
	// maxPending bounds each subscription's backlog (see Subscription).
	maxPending int

	mu       sync.RWMutex
	closed   bool // guarded by mu: no new watches once closing
	clusters map[string]*memCluster
}

type memCluster struct {
	mu         sync.Mutex
	removed    bool // dropped from the store map: callers must look it up again
	affiliates map[string]*memAffiliate
	subs       map[*Subscription]struct{}
}

type memAffiliate struct {
	data      []byte
	expires   int64 // unix nanoseconds
	endpoints []memEndpoint
}

type memEndpoint struct {
	blob    []byte
	expires int64
}

// NewMemoryStore returns an empty store. now may be nil (time.Now).
func NewMemoryStore(limits Limits, now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{
		limits:     limits,
		now:        now,
		maxPending: 2*limits.AffiliatesPerCluster + 64,
		clusters:   make(map[string]*memCluster),
	}
}

// cluster returns the cluster locked, creating it when create is set; nil
// if it does not exist and create is false.
func (m *MemoryStore) cluster(id string, create bool) *memCluster {
	for {
		m.mu.RLock()
		c := m.clusters[id]
		m.mu.RUnlock()
		if c == nil {
			if !create {
				return nil
			}
			m.mu.Lock()
			c = m.clusters[id]
			if c == nil {
				c = &memCluster{affiliates: make(map[string]*memAffiliate), subs: make(map[*Subscription]struct{})}
				m.clusters[id] = c
			}
			m.mu.Unlock()
		}
		c.mu.Lock()
		if !c.removed {
			return c
		}
		c.mu.Unlock()
	}
}

func (a *memAffiliate) proto(id string, now int64) *serverpb.Affiliate {
	out := &serverpb.Affiliate{Id: id, Data: a.data}
	for _, ep := range a.endpoints {
		if ep.expires > now {
			out.Endpoints = append(out.Endpoints, ep.blob)
		}
	}
	return out
}

func (c *memCluster) notify(id string, aff *serverpb.Affiliate) {
	ch := newChange(id, aff)
	for s := range c.subs {
		s.pushChange(ch)
	}
}

// Update implements Store.
func (m *MemoryStore) Update(_ context.Context, u Update) error {
	now := m.now().UnixNano()
	expires := now + int64(u.TTL)
	c := m.cluster(u.ClusterID, true)
	defer c.mu.Unlock()

	a := c.affiliates[u.AffiliateID]
	changed := false
	if a == nil {
		if len(c.affiliates) >= m.limits.AffiliatesPerCluster {
			return ErrTooManyAffiliates
		}
		a = &memAffiliate{expires: expires}
		c.affiliates[u.AffiliateID] = a
		changed = true
	}
	if len(u.Data) > 0 {
		a.data = u.Data
		a.expires = expires
		changed = true
	}
	var err error
	for _, blob := range u.Endpoints {
		found := false
		for i := range a.endpoints {
			if bytes.Equal(a.endpoints[i].blob, blob) {
				found = true
				if a.endpoints[i].expires < expires {
					// A refresh of an endpoint that had already expired (but
					// not been collected yet) brings it back: announce it.
					if a.endpoints[i].expires <= now {
						changed = true
					}
					a.endpoints[i].expires = expires
				}
				break
			}
		}
		if found {
			continue
		}
		if len(a.endpoints) >= m.limits.EndpointsPerAffiliate {
			// Any member may report endpoints it observed for an
			// affiliate; once they fill its slots, only the affiliate's
			// own update (it carries its data) makes room, by replacing
			// the endpoint that expires first and is not in the update.
			v := -1
			if len(u.Data) > 0 {
				v = evictable(a.endpoints, u.Endpoints)
			}
			if v < 0 {
				err = ErrTooManyEndpoints
				break
			}
			a.endpoints = slices.Delete(a.endpoints, v, v+1)
		}
		a.endpoints = append(a.endpoints, memEndpoint{blob: blob, expires: expires})
		changed = true
	}
	if a.expires < expires {
		a.expires = expires
	}
	if changed && len(c.subs) > 0 {
		c.notify(u.AffiliateID, a.proto(u.AffiliateID, now))
	}
	return err
}

// evictable is the index of the endpoint that expires first among those
// not in keep, or -1.
func evictable(eps []memEndpoint, keep [][]byte) int {
	v := -1
	for i := range eps {
		if (v < 0 || eps[i].expires < eps[v].expires) && !slices.ContainsFunc(keep, func(b []byte) bool { return bytes.Equal(b, eps[i].blob) }) {
			v = i
		}
	}
	return v
}

// Delete implements Store.
func (m *MemoryStore) Delete(_ context.Context, clusterID, affiliateID string) error {
	c := m.cluster(clusterID, false)
	if c == nil {
		return nil
	}
	defer c.mu.Unlock()
	if _, ok := c.affiliates[affiliateID]; !ok {
		return nil
	}
	delete(c.affiliates, affiliateID)
	c.notify(affiliateID, nil)
	return nil
}

func (c *memCluster) list(now int64) []*serverpb.Affiliate {
	out := make([]*serverpb.Affiliate, 0, len(c.affiliates))
	for id, a := range c.affiliates {
		if a.expires > now {
			out = append(out, a.proto(id, now))
		}
	}
	return out
}

// List implements Store.
func (m *MemoryStore) List(_ context.Context, clusterID string) ([]*serverpb.Affiliate, error) {
	c := m.cluster(clusterID, false)
	if c == nil {
		return []*serverpb.Affiliate{}, nil
	}
	defer c.mu.Unlock()
	return c.list(m.now().UnixNano()), nil
}

// Watch implements Store.
func (m *MemoryStore) Watch(_ context.Context, clusterID string) ([]*serverpb.Affiliate, *Subscription, error) {
	m.mu.RLock()
	closed := m.closed
	m.mu.RUnlock()
	if closed {
		return nil, nil, ErrClosed
	}
	c := m.cluster(clusterID, true)
	defer c.mu.Unlock()
	var sub *Subscription
	sub = newSubscription(m.maxPending, func() {
		c.mu.Lock()
		delete(c.subs, sub)
		c.mu.Unlock()
	})
	c.subs[sub] = struct{}{}
	return c.list(m.now().UnixNano()), sub, nil
}

// GC implements Store: whole affiliates past their expiry go (watchers get
// deleted=true); affiliates that merely lost some endpoints stay, and
// watchers get their new state (the reference announces them as deleted).
func (m *MemoryStore) GC(_ context.Context) error {
	now := m.now().UnixNano()
	m.mu.RLock()
	ids := make([]string, 0, len(m.clusters))
	for id := range m.clusters {
		ids = append(ids, id)
	}
	m.mu.RUnlock()
	for _, id := range ids {
		c := m.cluster(id, false)
		if c == nil {
			continue
		}
		for aid, a := range c.affiliates {
			if a.expires <= now {
				delete(c.affiliates, aid)
				c.notify(aid, nil)
				continue
			}
			kept := a.endpoints[:0]
			for _, ep := range a.endpoints {
				if ep.expires > now {
					kept = append(kept, ep)
				}
			}
			if len(kept) != len(a.endpoints) {
				clear(a.endpoints[len(kept):])
				a.endpoints = kept
				if len(c.subs) > 0 {
					c.notify(aid, a.proto(aid, now))
				}
			}
		}
		empty := len(c.affiliates) == 0 && len(c.subs) == 0
		c.mu.Unlock()
		if empty {
			m.mu.Lock()
			c.mu.Lock()
			if len(c.affiliates) == 0 && len(c.subs) == 0 && !c.removed {
				c.removed = true
				delete(m.clusters, id)
			}
			c.mu.Unlock()
			m.mu.Unlock()
		}
	}
	return nil
}

// Stats implements Store.
func (m *MemoryStore) Stats(context.Context) (Stats, error) {
	var st Stats
	m.mu.RLock()
	defer m.mu.RUnlock()
	st.Clusters = len(m.clusters)
	for _, c := range m.clusters {
		c.mu.Lock()
		st.Affiliates += len(c.affiliates)
		st.Watchers += len(c.subs)
		c.mu.Unlock()
	}
	return st, nil
}

// Close implements Store. Open subscriptions end with ErrClosed.
func (m *MemoryStore) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, c := range m.clusters {
		c.mu.Lock()
		for s := range c.subs {
			s.fail(ErrClosed)
		}
		c.mu.Unlock()
	}
	return nil
}
