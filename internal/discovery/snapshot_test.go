package discovery

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
)

func listAll(t testing.TB, s Store, cluster string) []string {
	t.Helper()
	affs, err := s.List(context.Background(), cluster)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range affs {
		eps := make([]string, 0, len(a.Endpoints))
		for _, e := range a.Endpoints {
			eps = append(eps, string(e))
		}
		sort.Strings(eps)
		out = append(out, fmt.Sprintf("%s=%s%v", a.Id, a.Data, eps))
	}
	sort.Strings(out)
	return out
}

// TestRestartFromSnapshot: everything acknowledged before shutdown is back
// after a restart on the same snapshot path, expired data is not.
func TestRestartFromSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.binpb")
	cfg := ServiceConfig{Listen: "127.0.0.1:0", RateLimitRPS: -1, SnapshotPath: path, SnapshotInterval: time.Hour, GCInterval: time.Hour}
	svc, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	for cl := range 3 {
		for a := range 5 {
			_, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{
				ClusterId: fmt.Sprint("cluster-", cl), AffiliateId: fmt.Sprint("aff-", a), AffiliateData: []byte(fmt.Sprint("data-", cl, a)),
				AffiliateEndpoints: [][]byte{[]byte(fmt.Sprint("ep-", a)), []byte("shared")}, Ttl: durationpb.New(10 * time.Minute),
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// This one expires before the restart.
	if _, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "cluster-0", AffiliateId: "short",
		AffiliateData: []byte("x"), Ttl: durationpb.New(time.Nanosecond)}); err != nil {
		t.Fatal(err)
	}
	before := listAll(t, svc.Store(), "cluster-1")
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := svc.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	svc2 := startService(t, cfg)
	after := listAll(t, svc2.Store(), "cluster-1")
	if !slices.Equal(before, after) || len(after) != 5 {
		t.Fatalf("after restart\n got %v\nwant %v", after, before)
	}
	st, _ := svc2.Store().Stats(ctx)
	if st.Clusters != 3 || st.Affiliates != 15 {
		t.Fatalf("restored %+v, want 3 clusters / 15 affiliates (expired one dropped)", st)
	}
}

// TestSnapshotExpiry: the TTL written is the remaining lifetime; a restore
// later drops what has run out, endpoint by endpoint.
func TestSnapshotExpiry(t *testing.T) {
	clock := newFakeClock()
	m := NewMemoryStore(DefaultLimits(), clock.Now)
	ctx := context.Background()
	m.Update(ctx, Update{ClusterID: "c", AffiliateID: "a", Data: []byte("d"), Endpoints: [][]byte{[]byte("e1")}, TTL: 10 * time.Minute})
	m.Update(ctx, Update{ClusterID: "c", AffiliateID: "a", Endpoints: [][]byte{[]byte("e2")}, TTL: 2 * time.Minute})
	m.Update(ctx, Update{ClusterID: "c", AffiliateID: "b", Data: []byte("d"), TTL: time.Minute})
	var buf bytes.Buffer
	if err := m.encode(&buf); err != nil {
		t.Fatal(err)
	}
	clock.Advance(90 * time.Second)
	m2 := NewMemoryStore(DefaultLimits(), clock.Now)
	if rep, err := m2.restore(bytes.NewReader(buf.Bytes())); err != nil || rep.Restored != 1 {
		n := rep.Restored
		t.Fatalf("restored %d, %v; want 1 (b expired)", n, err)
	}
	if got := listAll(t, m2, "c"); !slices.Equal(got, []string{"a=d[e1 e2]"}) {
		t.Fatalf("after 90s: %v", got)
	}
	clock.Advance(time.Minute)
	if got := listAll(t, m2, "c"); !slices.Equal(got, []string{"a=d[e1]"}) {
		t.Fatalf("after 150s: %v", got)
	}
}

// TestSnapshotLegacyExpiration: records with only the absolute expiration
// (older reference snapshots) load too.
func TestSnapshotLegacyExpiration(t *testing.T) {
	clock := newFakeClock()
	exp := clock.Now().Add(5 * time.Minute)
	var ep, aff, cl, file []byte
	ep = appendTimestamp(ep, 1, exp)
	ep = protowire.AppendTag(ep, 2, protowire.BytesType)
	ep = protowire.AppendBytes(ep, []byte("blob"))
	aff = protowire.AppendTag(aff, 1, protowire.BytesType)
	aff = protowire.AppendString(aff, "a")
	aff = appendTimestamp(aff, 2, exp)
	aff = protowire.AppendTag(aff, 3, protowire.BytesType)
	aff = protowire.AppendBytes(aff, []byte("d"))
	aff = protowire.AppendTag(aff, 4, protowire.BytesType)
	aff = protowire.AppendBytes(aff, ep)
	cl = protowire.AppendTag(cl, 1, protowire.BytesType)
	cl = protowire.AppendString(cl, "c")
	cl = protowire.AppendTag(cl, 2, protowire.BytesType)
	cl = protowire.AppendBytes(cl, aff)
	file = protowire.AppendTag(file, 1, protowire.BytesType)
	file = protowire.AppendBytes(file, cl)
	m := NewMemoryStore(DefaultLimits(), clock.Now)
	if rep, err := m.restore(bytes.NewReader(file)); err != nil || rep.Restored != 1 {
		t.Fatalf("restore: %+v %v", rep, err)
	}
	if got := listAll(t, m, "c"); !slices.Equal(got, []string{"a=d[blob]"}) {
		t.Fatalf("got %v", got)
	}
}

func TestSnapshotCorrupt(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"truncated": {0x0a, 0x10, 0x0a},
		"wire type": {0x08, 0x01},
		"huge":      {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		if _, err := NewMemoryStore(DefaultLimits(), nil).LoadSnapshot(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if rep, err := NewMemoryStore(DefaultLimits(), nil).LoadSnapshot(filepath.Join(dir, "missing")); err != nil || rep.Restored != 0 {
		t.Fatalf("missing file: %+v %v", rep, err)
	}
}

// FuzzSnapshot: no input makes the decoder panic or restore data past the
// limits, and what a store writes reads back the same.
func FuzzSnapshot(f *testing.F) {
	clock := newFakeClock()
	m := NewMemoryStore(DefaultLimits(), clock.Now)
	m.Update(context.Background(), Update{ClusterID: "c", AffiliateID: "a", Data: []byte("d"), Endpoints: [][]byte{[]byte("e")}, TTL: time.Minute})
	var seed bytes.Buffer
	m.encode(&seed)
	f.Add(seed.Bytes())
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := NewMemoryStore(DefaultLimits(), clock.Now)
		if _, err := m.restore(bytes.NewReader(data)); err != nil {
			return
		}
		var out bytes.Buffer
		if err := m.encode(&out); err != nil {
			t.Fatal(err)
		}
		m2 := NewMemoryStore(DefaultLimits(), clock.Now)
		if _, err := m2.restore(bytes.NewReader(out.Bytes())); err != nil {
			t.Fatalf("re-read of our own snapshot: %v", err)
		}
		st1, _ := m.Stats(context.Background())
		st2, _ := m2.Stats(context.Background())
		if st1.Affiliates != st2.Affiliates {
			t.Fatalf("round trip: %d affiliates became %d", st1.Affiliates, st2.Affiliates)
		}
	})
}

// TestPeriodicSnapshot: the timer writes snapshots while serving, so a
// crash (no shutdown flush) loses at most one interval.
func TestPeriodicSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.binpb")
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, SnapshotPath: path, SnapshotInterval: 50 * time.Millisecond})
	c := dial(t, svc.Addr().String())
	if _, err := c.AffiliateUpdate(context.Background(), &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a",
		AffiliateData: []byte("d"), Ttl: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "periodic snapshot holds the update", func() bool {
		m := NewMemoryStore(DefaultLimits(), nil)
		rep, err := m.LoadSnapshot(path)
		return err == nil && rep.Restored == 1
	})
}

// sideroRecord encodes one StateSnapshot.clusters record field by field as
// the reference's writer lays it out (ttl in whole seconds, no legacy
// expiration), independently of appendClusterRecord.
func sideroRecord(cluster string, affs map[string]string, ttl time.Duration) []byte {
	dur := func(d time.Duration) []byte {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.VarintType)
		return protowire.AppendVarint(m, uint64(d/time.Second))
	}
	var cl []byte
	cl = protowire.AppendTag(cl, 1, protowire.BytesType)
	cl = protowire.AppendString(cl, cluster)
	ids := make([]string, 0, len(affs))
	for id := range affs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		var ep, aff []byte
		ep = protowire.AppendTag(ep, 2, protowire.BytesType)
		ep = protowire.AppendBytes(ep, []byte("ep-"+affs[id]))
		ep = protowire.AppendTag(ep, 3, protowire.BytesType)
		ep = protowire.AppendBytes(ep, dur(ttl))
		aff = protowire.AppendTag(aff, 1, protowire.BytesType)
		aff = protowire.AppendString(aff, id)
		aff = protowire.AppendTag(aff, 3, protowire.BytesType)
		aff = protowire.AppendBytes(aff, []byte(affs[id]))
		aff = protowire.AppendTag(aff, 4, protowire.BytesType)
		aff = protowire.AppendBytes(aff, ep)
		aff = protowire.AppendTag(aff, 5, protowire.BytesType)
		aff = protowire.AppendBytes(aff, dur(ttl))
		cl = protowire.AppendTag(cl, 2, protowire.BytesType)
		cl = protowire.AppendBytes(cl, aff)
	}
	var rec []byte
	rec = protowire.AppendTag(rec, 1, protowire.BytesType)
	return protowire.AppendBytes(rec, cl)
}

// TestSnapshotInvalidUTF8: the reference accepts affiliate IDs that are not
// valid UTF-8 and writes them to its snapshot. Restored as they are, one
// such ID would make every List and Watch of its cluster fail to marshal.
// They are skipped with a warning; the rest of the cluster is served.
func TestSnapshotInvalidUTF8(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.binpb")
	var file []byte
	file = append(file, sideroRecord("c", map[string]string{"good-a": "da", "bad-\xff\xfe": "dx", "good-b": "db"}, 10*time.Minute)...)
	file = append(file, sideroRecord("bad-cluster-\xc3\x28", map[string]string{"x": "dx"}, 10*time.Minute)...)
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, SnapshotPath: path, SnapshotInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := dial(t, svc.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.List(ctx, &serverpb.ListRequest{ClusterId: "c"})
	if err != nil {
		t.Fatalf("List of the cluster that held an invalid ID: %v", err)
	}
	var ids []string
	for _, a := range resp.Affiliates {
		ids = append(ids, a.Id)
	}
	sort.Strings(ids)
	if !slices.Equal(ids, []string{"good-a", "good-b"}) {
		t.Fatalf("listed %q, want the two valid affiliates", ids)
	}
	w, err := c.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || len(m.Affiliates) != 2 {
		t.Fatalf("watch snapshot: %v %v", m, err)
	}
	out := logs.String()
	for _, want := range []string{`entry skipped`, `bad-\\xff\\xfe`, `bad-cluster-\\xc3(`, "not valid UTF-8", "snapshot restored", "affiliates=2", "skipped=2"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestSnapshotTruncatedReportsCount: a snapshot cut off in its second
// record keeps the first, and the log says how many affiliates came back.
func TestSnapshotTruncatedReportsCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.binpb")
	first := sideroRecord("c1", map[string]string{"a": "1", "b": "2", "c": "3"}, 10*time.Minute)
	second := sideroRecord("c2", map[string]string{"d": "4"}, 10*time.Minute)
	if err := os.WriteFile(path, append(first, second[:len(second)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, SnapshotPath: path, SnapshotInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got := listAll(t, svc.Store(), "c1"); len(got) != 3 {
		t.Fatalf("first record: %v", got)
	}
	out := logs.String()
	if !strings.Contains(out, "snapshot partly restored") || !strings.Contains(out, "affiliates=3") || strings.Contains(out, "not restored") {
		t.Fatalf("log should say 3 affiliates were restored from the damaged file:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
