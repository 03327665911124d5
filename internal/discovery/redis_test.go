package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// testStoreSemantics is the behaviour every Store must share.
func testStoreSemantics(t *testing.T, s Store, clock *fakeClock) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	snap, sub, err := s.Watch(ctx, "c")
	must(err)
	defer sub.Close()
	if len(snap) != 0 {
		t.Fatalf("snapshot of empty cluster: %v", snap)
	}
	// nextN collects n changes: a store may deliver them in one batch or
	// several (Redis announces each affiliate separately).
	nextN := func(n int) []*serverpb.WatchResponse {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var out []*serverpb.WatchResponse
		for len(out) < n {
			msgs, err := sub.Next(wctx)
			must(err)
			out = append(out, msgs...)
		}
		return out
	}
	next := func() []*serverpb.WatchResponse { t.Helper(); return nextN(1) }
	must(s.Update(ctx, Update{ClusterID: "c", AffiliateID: "a", Data: []byte("d1"), Endpoints: [][]byte{[]byte("e1")}, TTL: time.Minute}))
	if m := next(); len(m) != 1 || string(m[0].Affiliates[0].Data) != "d1" {
		t.Fatalf("create: %v", m)
	}
	clock.Advance(30 * time.Second)
	must(s.Update(ctx, Update{ClusterID: "c", AffiliateID: "a", Endpoints: [][]byte{[]byte("e2")}, TTL: time.Minute}))
	if m := next(); len(m[0].Affiliates[0].Endpoints) != 2 {
		t.Fatalf("append: %v", m)
	}
	// Endpoints-only update for an unknown affiliate creates it with no data.
	must(s.Update(ctx, Update{ClusterID: "c", AffiliateID: "observed", Endpoints: [][]byte{[]byte("e9")}, TTL: time.Minute}))
	if m := next(); m[0].Deleted || len(m[0].Affiliates[0].Data) != 0 {
		t.Fatalf("endpoint-only create: %v", m)
	}
	clock.Advance(40 * time.Second) // e1 (and a's data expiry +60s) passed? a: data at 0 -> +60, raised to +90 by e2.
	if got := listAll(t, s, "c"); !slices.Equal(got, []string{"a=d1[e2]", "observed=[e9]"}) {
		t.Fatalf("list hides expired endpoint: %v", got)
	}
	must(s.GC(ctx))
	m := next()
	if len(m) != 1 || m[0].Deleted || len(m[0].Affiliates[0].Endpoints) != 1 {
		t.Fatalf("partial expiry must send the new state: %v", m)
	}
	clock.Advance(time.Minute)
	must(s.GC(ctx))
	m = nextN(2)
	if len(m) != 2 || !m[0].Deleted || !m[1].Deleted {
		t.Fatalf("expiry: %v", m)
	}
	must(s.Update(ctx, Update{ClusterID: "c", AffiliateID: "b", Data: []byte("x"), TTL: time.Minute}))
	next()
	must(s.Delete(ctx, "c", "b"))
	if m := next(); !m[0].Deleted || m[0].Affiliates[0].Id != "b" {
		t.Fatalf("delete: %v", m)
	}
	must(s.Delete(ctx, "c", "never-existed"))
	eps := make([][]byte, 65)
	for i := range eps {
		eps[i] = []byte{byte(i)}
	}
	if err := s.Update(ctx, Update{ClusterID: "c", AffiliateID: "full", Data: []byte("kept"), Endpoints: eps, TTL: time.Minute}); !errors.Is(err, ErrTooManyEndpoints) {
		t.Fatalf("65 endpoints: %v", err)
	}
	if got := listAll(t, s, "c"); len(got) != 1 || got[0][:10] != "full=kept[" {
		t.Fatalf("data kept after endpoint overflow: %v", got)
	}
	// A member fills another affiliate's endpoint slots with what it says
	// it observed: further reports are refused, but the affiliate's own
	// update still stores its endpoints, in place of the oldest reports.
	junk := make([][]byte, 64)
	for i := range junk {
		junk[i] = []byte(fmt.Sprintf("junk-%02d", i))
	}
	must(s.Update(ctx, Update{ClusterID: "c", AffiliateID: "victim", Endpoints: junk, TTL: time.Minute}))
	if err := s.Update(ctx, Update{ClusterID: "c", AffiliateID: "victim", Endpoints: [][]byte{[]byte("more-junk")}, TTL: time.Minute}); !errors.Is(err, ErrTooManyEndpoints) {
		t.Fatalf("a report into a full affiliate: %v", err)
	}
	clock.Advance(time.Second)
	own := [][]byte{[]byte("own-1"), []byte("own-2")}
	must(s.Update(ctx, Update{ClusterID: "c", AffiliateID: "victim", Data: []byte("v"), Endpoints: own, TTL: 5 * time.Minute}))
	got := listAll(t, s, "c")
	if len(got) != 2 || !strings.HasPrefix(got[1], "victim=v[") || !strings.Contains(got[1], "own-1") || !strings.Contains(got[1], "own-2") {
		t.Fatalf("the affiliate's own endpoints after others filled its slots: %v", got)
	}
	if err := s.Update(ctx, Update{ClusterID: "c", AffiliateID: "victim", Endpoints: [][]byte{[]byte("more-junk")}, TTL: time.Minute}); !errors.Is(err, ErrTooManyEndpoints) {
		t.Fatalf("a report into a full affiliate: %v", err)
	}
	st, err := s.Stats(ctx)
	must(err)
	if st.Clusters != 1 || st.Affiliates != 2 || st.Watchers != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMemoryStoreSemantics(t *testing.T) {
	clock := newFakeClock()
	testStoreSemantics(t, NewMemoryStore(DefaultLimits(), clock.Now), clock)
}

func TestRedisStoreSemantics(t *testing.T) {
	r := startRedis(t)
	clock := newFakeClock()
	s, err := NewRedisStore(RedisOptions{URL: r.URL(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testStoreSemantics(t, s, clock)
}

func TestRedisTooManyAffiliates(t *testing.T) {
	r := startRedis(t)
	lim := DefaultLimits()
	lim.AffiliatesPerCluster = 3
	s, err := NewRedisStore(RedisOptions{URL: r.URL(), Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, id := range []string{"1", "2", "3"} {
		if err := s.Update(ctx, Update{ClusterID: "c", AffiliateID: id, TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(ctx, Update{ClusterID: "c", AffiliateID: "4", TTL: time.Minute}); !errors.Is(err, ErrTooManyAffiliates) {
		t.Fatalf("4th affiliate: %v", err)
	}
}

// TestRedisTwoReplicasOneService: updates through one replica reach
// watchers on the other within a second, and either answers List the same.
func TestRedisTwoReplicasOneService(t *testing.T) {
	r := startRedis(t)
	a := startService(t, ServiceConfig{Store: "redis", RedisURL: r.URL(), RateLimitRPS: -1})
	b := startService(t, ServiceConfig{Store: "redis", RedisURL: r.URL(), RateLimitRPS: -1})
	ca, cb := dial(t, a.Addr().String()), dial(t, b.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := ca.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || len(m.Affiliates) != 0 {
		t.Fatalf("snapshot: %v %v", m, err)
	}
	for i, id := range []string{"x", "y", "z"} {
		start := time.Now()
		if _, err := cb.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: id,
			AffiliateData: []byte{byte(i)}, Ttl: durationpb.New(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		m, err := w.Recv()
		if err != nil || m.Affiliates[0].Id != id {
			t.Fatalf("watch on A after update on B: %v %v", m, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("update through B reached A's watcher after %s", d)
		}
	}
	if _, err := ca.AffiliateDelete(ctx, &serverpb.AffiliateDeleteRequest{ClusterId: "c", AffiliateId: "y"}); err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || !m.Deleted || m.Affiliates[0].Id != "y" {
		t.Fatalf("delete: %v %v", m, err)
	}
	la, _ := ca.List(ctx, &serverpb.ListRequest{ClusterId: "c"})
	lb, _ := cb.List(ctx, &serverpb.ListRequest{ClusterId: "c"})
	if len(la.GetAffiliates()) != 2 || len(lb.GetAffiliates()) != 2 {
		t.Fatalf("lists differ: %v / %v", la, lb)
	}
}

// TestRedisOutageAndRecovery: with Redis gone, calls answer Unavailable and
// watches end so clients resync; when Redis returns everything recovers
// without a restart, and clients re-publish what Redis lost.
func TestRedisOutageAndRecovery(t *testing.T) {
	r := startRedis(t)
	a := startService(t, ServiceConfig{Store: "redis", RedisURL: r.URL(), RateLimitRPS: -1})
	b := startService(t, ServiceConfig{Store: "redis", RedisURL: r.URL(), RateLimitRPS: -1})
	secret := newSecret(t)
	ka := runClient(t, ClientOptions{Endpoints: []string{"http://" + a.Addr().String()}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "ka", TTL: time.Minute})
	kb := runClient(t, ClientOptions{Endpoints: []string{"http://" + b.Addr().String()}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "kb", TTL: time.Minute})
	ka.SetLocal(testAffiliate("", 1), nil)
	kb.SetLocal(testAffiliate("", 2), nil)
	eventually(t, 10*time.Second, "clients on two replicas see each other", func() bool {
		return len(ka.Affiliates()) == 1 && len(kb.Affiliates()) == 1
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := dial(t, a.Addr().String())
	w, err := c.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	r.stop()
	// A change published just before Redis died may still arrive first.
	for err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("watch after Redis died: %v, want Unavailable", err)
	}
	_, err = c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "q", AffiliateData: []byte("d"), Ttl: durationpb.New(time.Minute)})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("update without Redis: %v, want Unavailable", err)
	}
	// The clients keep their last view meanwhile.
	if len(ka.Affiliates()) != 1 {
		t.Fatal("client lost its view during the outage")
	}

	r.start() // empty: no persistence, like a replacement Redis
	eventually(t, 15*time.Second, "updates succeed again", func() bool {
		_, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "q", AffiliateData: []byte("d"), Ttl: durationpb.New(time.Minute)})
		return err == nil
	})
	eventually(t, 30*time.Second, "clients re-published into the new Redis", func() bool {
		l, err := c.List(ctx, &serverpb.ListRequest{ClusterId: "c"})
		return err == nil && len(l.Affiliates) == 3
	})
}

// FuzzChangeMessage: the Redis change decoder never panics and accepts only
// well-formed messages.
func FuzzChangeMessage(f *testing.F) {
	f.Add("1:c1:a1:u4:data2:e1")
	f.Add("1:c1:a1:d")
	f.Add("9:c")
	f.Fuzz(func(t *testing.T, p string) {
		cid, aid, st, ok := parseChange(p)
		if !ok {
			return
		}
		if st != nil && st.Id != aid {
			t.Fatalf("state for %q names %q", aid, st.Id)
		}
		_ = cid
	})
}

func TestParseChange(t *testing.T) {
	cid, aid, st, ok := parseChange("1:c2:id1:u4:data2:e12:e2")
	if !ok || cid != "c" || aid != "id" || string(st.Data) != "data" || len(st.Endpoints) != 2 {
		t.Fatalf("update: %q %q %v %v", cid, aid, st, ok)
	}
	if _, _, st, ok := parseChange("1:c2:id1:d"); !ok || st != nil {
		t.Fatal("delete")
	}
	for _, bad := range []string{"", "1:c", "1:c2:id", "1:c2:id1:x", "1:c2:id1:u", "5:c", "x:c", "1:c2:id1:d1:z"} {
		if _, _, _, ok := parseChange(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRedisGCOncePerInterval: with the GC lock, a second replica's GC in
// the same interval is skipped, and the first one's work is visible to it.
func TestRedisGCOncePerInterval(t *testing.T) {
	r := startRedis(t)
	clock := newFakeClock()
	a, err := NewRedisStore(RedisOptions{URL: r.URL(), Now: clock.Now, GCInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewRedisStore(RedisOptions{URL: r.URL(), Now: clock.Now, GCInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if err := a.Update(ctx, Update{ClusterID: "c", AffiliateID: "x", Data: []byte("d"), TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	if err := a.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.GC(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats(ctx)
	if err != nil || st.Affiliates != 0 || st.Clusters != 0 {
		t.Fatalf("after GC: %+v %v", st, err)
	}
	ttl, _ := a.rdb.PTTL(ctx, a.prefix+"gc-lock").Result()
	if ttl <= 0 || ttl > 54*time.Second {
		t.Fatalf("gc lock TTL %s, want 90%% of the interval", ttl)
	}
}
