package discovery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if msgPart != "" && !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), msgPart)
	}
}

func TestValidation(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	long := strings.Repeat("x", 257)
	ttl := durationpb.New(time.Minute)
	upd := func(mut func(*serverpb.AffiliateUpdateRequest)) error {
		r := &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a", AffiliateData: []byte("d"), Ttl: ttl}
		mut(r)
		_, err := c.AffiliateUpdate(ctx, r)
		return err
	}
	cases := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"hello empty cluster", func() error { _, err := c.Hello(ctx, &serverpb.HelloRequest{}); return err }(), codes.InvalidArgument, "cluster_id is empty"},
		{"hello long cluster", func() error { _, err := c.Hello(ctx, &serverpb.HelloRequest{ClusterId: long}); return err }(), codes.InvalidArgument, "limit of 256"},
		{"list empty cluster", func() error { _, err := c.List(ctx, &serverpb.ListRequest{}); return err }(), codes.InvalidArgument, "cluster_id"},
		{"delete long cluster", func() error {
			_, err := c.AffiliateDelete(ctx, &serverpb.AffiliateDeleteRequest{ClusterId: long, AffiliateId: "a"})
			return err
		}(), codes.InvalidArgument, "cluster_id"},
		{"delete empty affiliate", func() error {
			_, err := c.AffiliateDelete(ctx, &serverpb.AffiliateDeleteRequest{ClusterId: "c"})
			return err
		}(), codes.InvalidArgument, "affiliate_id is empty"},
		{"delete unknown affiliate", func() error {
			_, err := c.AffiliateDelete(ctx, &serverpb.AffiliateDeleteRequest{ClusterId: "c", AffiliateId: "nobody"})
			return err
		}(), codes.OK, ""},
		{"update empty cluster", upd(func(r *serverpb.AffiliateUpdateRequest) { r.ClusterId = "" }), codes.InvalidArgument, "cluster_id"},
		{"update long affiliate", upd(func(r *serverpb.AffiliateUpdateRequest) { r.AffiliateId = long }), codes.InvalidArgument, "affiliate_id is 257 bytes"},
		{"update empty affiliate", upd(func(r *serverpb.AffiliateUpdateRequest) { r.AffiliateId = "" }), codes.InvalidArgument, "affiliate_id is empty"},
		{"oversized data", upd(func(r *serverpb.AffiliateUpdateRequest) { r.AffiliateData = make([]byte, 2049) }), codes.InvalidArgument, "limit of 2048"},
		{"max data", upd(func(r *serverpb.AffiliateUpdateRequest) { r.AffiliateData = make([]byte, 2048) }), codes.OK, ""},
		{"oversized endpoint", upd(func(r *serverpb.AffiliateUpdateRequest) { r.AffiliateEndpoints = [][]byte{make([]byte, 33)} }), codes.InvalidArgument, "affiliate_endpoints[0] is 33 bytes"},
		{"ttl too long", upd(func(r *serverpb.AffiliateUpdateRequest) { r.Ttl = durationpb.New(31 * time.Minute) }), codes.InvalidArgument, "ttl 31m0s is over the limit of 30m0s"},
		{"ttl negative", upd(func(r *serverpb.AffiliateUpdateRequest) { r.Ttl = durationpb.New(-time.Second) }), codes.InvalidArgument, "negative"},
		{"ttl max", upd(func(r *serverpb.AffiliateUpdateRequest) { r.Ttl = durationpb.New(30 * time.Minute) }), codes.OK, ""},
		{"ttl missing", upd(func(r *serverpb.AffiliateUpdateRequest) { r.Ttl = nil }), codes.OK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.err, tc.code, tc.msg) })
	}
}

func TestTooManyEndpointsKeepsData(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	eps := make([][]byte, 65)
	for i := range eps {
		eps[i] = []byte(fmt.Sprintf("endpoint-%02d", i))
	}
	_, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a",
		AffiliateData: []byte("data"), AffiliateEndpoints: eps, Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.ResourceExhausted, "maximum of 64 endpoints")
	l, err := c.List(ctx, &serverpb.ListRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Affiliates) != 1 || string(l.Affiliates[0].Data) != "data" || len(l.Affiliates[0].Endpoints) != 64 {
		t.Fatalf("after overflow: %v", l.Affiliates)
	}
	// A known endpoint is a refresh, not an append: still accepted.
	_, err = c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a",
		AffiliateEndpoints: eps[:1], Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.OK, "")
}

// TestEndpointSlotsHostileReporter: a member reports 64 endpoints it says
// it observed for another affiliate before that one publishes: further
// reports are refused with a clear error, and the affiliate's own update
// still stores its endpoints.
func TestEndpointSlotsHostileReporter(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	junk := make([][]byte, 64)
	for i := range junk {
		junk[i] = []byte(fmt.Sprintf("junk-%02d", i))
	}
	_, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "honest",
		AffiliateEndpoints: junk, Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.OK, "")
	_, err = c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "honest",
		AffiliateEndpoints: [][]byte{[]byte("junk-more")}, Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.ResourceExhausted, "reported for it by others are refused")
	_, err = c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "honest",
		AffiliateData: []byte("data"), AffiliateEndpoints: [][]byte{[]byte("own")}, Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.OK, "")
	l, err := c.List(ctx, &serverpb.ListRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Affiliates) != 1 || len(l.Affiliates[0].Endpoints) != 64 || !slices.ContainsFunc(l.Affiliates[0].Endpoints, func(b []byte) bool { return string(b) == "own" }) {
		t.Fatalf("after the affiliate's own update: %v", l.Affiliates)
	}
}

func TestTooManyAffiliates(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	for i := range 1024 {
		if _, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: fmt.Sprint(i),
			Ttl: durationpb.New(time.Minute)}); err != nil {
			t.Fatalf("affiliate %d: %v", i, err)
		}
	}
	_, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "one-too-many", Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.ResourceExhausted, "maximum of 1024 affiliates")
	// Another cluster is unaffected; an existing affiliate may still update.
	_, err = c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "other", AffiliateId: "x", Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.OK, "")
	_, err = c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "7", AffiliateData: []byte("d"), Ttl: durationpb.New(time.Minute)})
	wantCode(t, err, codes.OK, "")
}

func TestRateLimit(t *testing.T) {
	svc := startService(t, ServiceConfig{})
	c := dial(t, svc.Addr().String())
	hello := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := c.Hello(ctx, &serverpb.HelloRequest{ClusterId: "c"})
		return err
	}
	ok, slow := 0, 0
	var err error
	start := time.Now()
	for range 500 {
		// 50 ms is less than one token's refill (66 ms): once the burst is
		// spent the limiter refuses at once instead of waiting.
		if err = hello(50 * time.Millisecond); status.Code(err) == codes.DeadlineExceeded {
			slow++ // a slow machine, not the limiter
			continue
		}
		if err != nil {
			break
		}
		ok++
	}
	wantCode(t, err, codes.ResourceExhausted, "rate limit of 15 requests/s (burst 60)")
	if most := 60 + int(15*time.Since(start).Seconds()) + 1; ok+slow < 60 || ok > most {
		t.Fatalf("%d requests passed before the limit, want the burst of 60 plus refill (at most %d)", ok, most)
	}
	// With a deadline the wait fits in, the request waits and passes.
	wantCode(t, hello(2*time.Second), codes.OK, "")
}

func TestAdmission(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, AllowedClusters: []string{"ours"}})
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	_, err := c.Hello(ctx, &serverpb.HelloRequest{ClusterId: "ours"})
	wantCode(t, err, codes.OK, "")
	_, err = c.Hello(ctx, &serverpb.HelloRequest{ClusterId: "theirs"})
	wantCode(t, err, codes.PermissionDenied, `cluster ID "theirs" is not admitted`)
	st, err := c.Watch(ctx, &serverpb.WatchRequest{ClusterId: "theirs"})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.PermissionDenied, "--allowed-clusters")
}

func TestHelloClientIP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		md      []string
		want    string
	}{
		{"peer", nil, nil, "127.0.0.1"},
		{"untrusted headers ignored", nil, []string{"x-real-ip", "203.0.113.9", "x-forwarded-for", "203.0.113.8"}, "127.0.0.1"},
		{"trusted x-real-ip", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []string{"x-real-ip", "203.0.113.9"}, "203.0.113.9"},
		{"trusted xff nearest untrusted hop", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("198.51.100.0/24")},
			[]string{"x-forwarded-for", "192.0.2.66, 203.0.113.8, 198.51.100.1"}, "203.0.113.8"},
		{"trusted xff v6", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, []string{"x-forwarded-for", "2001:db8::7"}, "2001:db8::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := startService(t, ServiceConfig{RateLimitRPS: -1, TrustedProxies: tc.trusted})
			c := dial(t, svc.Addr().String())
			ctx := context.Background()
			if tc.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
			}
			resp, err := c.Hello(ctx, &serverpb.HelloRequest{ClusterId: "c", ClientVersion: "v1.15.0"})
			if err != nil {
				t.Fatal(err)
			}
			var got netip.Addr
			if err := got.UnmarshalBinary(resp.ClientIp); err != nil {
				t.Fatal(err)
			}
			want := netip.MustParseAddr(tc.want)
			if got != want || len(resp.ClientIp) != want.BitLen()/8 {
				t.Fatalf("client_ip %v (%d bytes), want %v", got, len(resp.ClientIp), want)
			}
		})
	}
}

func TestWatchSnapshotThenDeltas(t *testing.T) {
	clock := newFakeClock()
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, Now: clock.Now, GCInterval: time.Hour})
	c := dial(t, svc.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil || first.Deleted || len(first.Affiliates) != 0 {
		t.Fatalf("first message on an empty cluster: %v %v", first, err)
	}
	ttl := durationpb.New(time.Minute)
	update := func(r *serverpb.AffiliateUpdateRequest) {
		r.ClusterId, r.Ttl = "c", ttl
		if _, err := c.AffiliateUpdate(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *serverpb.WatchResponse {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	update(&serverpb.AffiliateUpdateRequest{AffiliateId: "a", AffiliateData: []byte("1"), AffiliateEndpoints: [][]byte{[]byte("e1")}})
	if m := recv(); m.Deleted || m.Affiliates[0].Id != "a" || len(m.Affiliates[0].Endpoints) != 1 {
		t.Fatalf("create: %v", m)
	}
	// Endpoint refresh alone: no message. A new endpoint: one.
	update(&serverpb.AffiliateUpdateRequest{AffiliateId: "a", AffiliateEndpoints: [][]byte{[]byte("e1")}})
	clock.Advance(30 * time.Second)
	update(&serverpb.AffiliateUpdateRequest{AffiliateId: "a", AffiliateEndpoints: [][]byte{[]byte("e2")}})
	if m := recv(); len(m.Affiliates[0].Endpoints) != 2 {
		t.Fatalf("append: %v", m)
	}
	// e1 expires at +60s, e2 at +90s: GC at +70s drops e1 only, and the
	// watcher gets the affiliate's new state, not deleted=true.
	clock.Advance(40 * time.Second)
	if err := svc.Store().GC(ctx); err != nil {
		t.Fatal(err)
	}
	if m := recv(); m.Deleted || len(m.Affiliates[0].Endpoints) != 1 || string(m.Affiliates[0].Endpoints[0]) != "e2" {
		t.Fatalf("partial expiry: %v", m)
	}
	clock.Advance(time.Minute)
	if err := svc.Store().GC(ctx); err != nil {
		t.Fatal(err)
	}
	if m := recv(); !m.Deleted || m.Affiliates[0].Id != "a" {
		t.Fatalf("expiry: %v", m)
	}
	update(&serverpb.AffiliateUpdateRequest{AffiliateId: "b", AffiliateData: []byte("1")})
	recv()
	if _, err := c.AffiliateDelete(ctx, &serverpb.AffiliateDeleteRequest{ClusterId: "c", AffiliateId: "b"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(); !m.Deleted || m.Affiliates[0].Id != "b" {
		t.Fatalf("delete: %v", m)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, MetricsListen: "127.0.0.1:0"})
	c := dial(t, svc.Addr().String())
	ctx := context.Background()
	if _, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a", AffiliateData: make([]byte, 4096)}); status.Code(err) != codes.InvalidArgument {
		t.Fatal(err)
	}
	if _, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a", AffiliateData: []byte("x"), Ttl: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	conn := dialConn(t, svc.Addr().String())
	eventually(t, 5*time.Second, "health SERVING", func() bool {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
	})
	resp, err := http.Get("http://" + svc.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"meshspan_discovery_affiliates 1",
		"meshspan_discovery_clusters 1",
		`meshspan_discovery_rejections_total{reason="affiliate_data_size"} 1`,
		`meshspan_discovery_rpcs_total{code="OK",method="AffiliateUpdate"} 1`,
		"meshspan_discovery_rpc_duration_seconds_bucket",
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestSubscriptionCoalesces(t *testing.T) {
	s := newSubscription(3, nil)
	s.push("a", &serverpb.Affiliate{Id: "a", Data: []byte("1")})
	s.push("b", &serverpb.Affiliate{Id: "b"})
	s.push("a", &serverpb.Affiliate{Id: "a", Data: []byte("2")})
	s.push("b", nil)
	msgs, err := s.Next(context.Background())
	if err != nil || len(msgs) != 2 {
		t.Fatalf("got %v %v", msgs, err)
	}
	if string(msgs[0].Affiliates[0].Data) != "2" || !msgs[1].Deleted || msgs[1].Affiliates[0].Id != "b" {
		t.Fatalf("coalesced: %v", msgs)
	}
	for _, id := range []string{"x", "y", "z", "overflow"} {
		s.push(id, nil)
	}
	if _, err := s.Next(context.Background()); err != ErrLostUpdates {
		t.Fatalf("overflow: %v", err)
	}
}

func TestVersionLabel(t *testing.T) {
	for in, want := range map[string]string{"v1.15.0": "v1.15", "v1.16.0-alpha.1": "v1.16-pre", "meshspan": "unknown", "": "unknown"} {
		if got := versionLabel(in); got != want {
			t.Errorf("versionLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSlowWatcherGetsLatestState: a watcher that stops reading while far
// more changes happen than any buffer holds still ends up with every
// affiliate's latest state once it reads again: coalesced, never dropped.
func TestSlowWatcherGetsLatestState(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	c := dial(t, svc.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	// 20 affiliates x 100 rounds of 2 KB: ~4 MB, past HTTP/2 windows and
	// the reference's 32-message buffer, while nobody reads.
	const affiliates, rounds = 20, 100
	data := func(round int) []byte {
		b := make([]byte, 2048)
		copy(b, fmt.Sprintf("round-%03d", round))
		return b
	}
	for r := range rounds {
		for a := range affiliates {
			if _, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: fmt.Sprint("a", a),
				AffiliateData: data(r), Ttl: durationpb.New(time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	latest := map[string]string{}
	received := 0
	for len(latest) < affiliates || !allEqual(latest, fmt.Sprintf("round-%03d", rounds-1)) {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("watch ended after %d messages: %v", received, err)
		}
		received++
		// A message may carry several affiliates: changes that queued up
		// while the watcher did not read.
		for _, a := range m.Affiliates {
			if len(a.Data) < 9 {
				t.Fatalf("message %d: affiliate %q without its data", received, a.Id)
			}
			latest[a.Id] = string(a.Data[:9])
		}
		if received > affiliates*rounds {
			t.Fatalf("more messages than changes: %v", latest)
		}
	}
	t.Logf("%d changes reached the slow watcher as %d messages", affiliates*rounds, received)
}

func allEqual(m map[string]string, v string) bool {
	for _, x := range m {
		if x != v {
			return false
		}
	}
	return true
}

func TestHelloRedirect(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, RedirectEndpoint: "discovery-2.example.com:443"})
	c := dial(t, svc.Addr().String())
	resp, err := c.Hello(context.Background(), &serverpb.HelloRequest{ClusterId: "c"})
	if err != nil || resp.GetRedirect().GetEndpoint() != "discovery-2.example.com:443" {
		t.Fatalf("redirect: %v %v", resp, err)
	}
	// Other calls keep working on the redirecting server.
	if _, err := c.List(context.Background(), &serverpb.ListRequest{ClusterId: "c"}); err != nil {
		t.Fatal(err)
	}
}

// TestWatchCloseDuringUpdates: watches ending while their cluster's
// changes are being fanned out must not stall the cluster (a watch's
// cleanup and the store's notification take the same two locks).
func TestWatchCloseDuringUpdates(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	c := dial(t, svc.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				uctx, ucancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.AffiliateUpdate(uctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: fmt.Sprint("a", w, "-", i%50),
					AffiliateData: []byte("data"), Ttl: durationpb.New(time.Minute)})
				ucancel()
				if err != nil {
					t.Errorf("update stalled or failed: %v", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				st, err := c.Watch(wctx, &serverpb.WatchRequest{ClusterId: "c"})
				if err == nil {
					_, err = st.Recv()
				}
				wcancel()
				if err != nil {
					t.Errorf("watch stalled or failed: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
