package discovery

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientpb "github.com/siderolabs/discovery-api/api/v1alpha1/client/pb"
	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	dclient "github.com/siderolabs/discovery-client/pkg/client"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func newSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

type runningClient struct {
	*Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// crash stops the client without deleting its affiliate, as a power cut would.
func (r *runningClient) crash() {
	r.published.Store(false)
	r.stop()
}

func (r *runningClient) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
	})
}

func runClient(t *testing.T, opts ClientOptions) *runningClient {
	t.Helper()
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningClient{Client: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func ids(as []*Affiliate) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func testAffiliate(id string, n byte) Affiliate {
	return Affiliate{
		ID:              id,
		NodeName:        fmt.Sprintf("node-%d", n),
		Hostname:        fmt.Sprintf("node-%d.example.com", n),
		MachineType:     "worker",
		OperatingSystem: "meshspan",
		PublicKey:       base64.StdEncoding.EncodeToString(make([]byte, 32)),
		Address:         netip.AddrFrom16([16]byte{0xfd, 1, 2, 3, 4, 5, 6, 2, 0, 0, 0, 0, 0, 0, 0, n}),
		Addresses:       []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, n})},
		Networks:        []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", n))},
		ExcludeNetworks: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.99.0/24", n))},
		Endpoints:       []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, n}), 51820)},
	}
}

// TestClientsPublishWatchExpireDelete: three clients and a server on
// loopback; everyone sees everyone, observed endpoints merge in, a crashed
// client expires, a stopped one is deleted at once.
func TestClientsPublishWatchExpireDelete(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, GCInterval: 100 * time.Millisecond})
	secret := newSecret(t)
	url := "http://" + svc.Addr().String() + "/"
	var clients []*runningClient
	for i := range 3 {
		id, err := NewAffiliateID()
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, runClient(t, ClientOptions{
			Endpoints: []string{url}, ClusterID: "cluster-1", ClusterSecret: secret, AffiliateID: id, TTL: 2 * time.Second,
		}))
		_ = i
	}
	for i, c := range clients {
		c.SetLocal(testAffiliate("ignored: the client sets its own ID", byte(i+1)), nil)
	}
	for i, c := range clients {
		eventually(t, 10*time.Second, fmt.Sprintf("client %d sees 2 peers", i), func() bool { return len(c.Affiliates()) == 2 })
		if got := c.ObservedAddress(); got != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("client %d observed address %v", i, got)
		}
	}
	select {
	case <-clients[0].Changes():
	default:
		t.Fatal("Changes() was not signalled")
	}
	// Full decrypted contents round-trip.
	got := clients[0].Affiliates()
	want := testAffiliate(clients[1].opts.AffiliateID, 2)
	var b Affiliate
	for _, a := range got {
		if a.ID == want.ID {
			b = *a
		}
	}
	if fmt.Sprint(b) != fmt.Sprint(want) {
		t.Fatalf("decrypted affiliate\n got %+v\nwant %+v", b, want)
	}

	// Client 0 reports an endpoint it observed for client 1: it is merged
	// into client 1's list as everyone sees it.
	seen := netip.MustParseAddrPort("203.0.113.5:41000")
	clients[0].SetLocal(testAffiliate("", 1), map[string][]netip.AddrPort{clients[1].opts.AffiliateID: {seen}})
	eventually(t, 5*time.Second, "client 2 sees the observed endpoint of client 1", func() bool {
		for _, a := range clients[2].Affiliates() {
			if a.ID == clients[1].opts.AffiliateID && slices.Contains(a.Endpoints, seen) {
				return true
			}
		}
		return false
	})

	// Crash: no delete, the TTL (2 s) expires it.
	crashed := clients[2].opts.AffiliateID
	clients[2].crash()
	eventually(t, 10*time.Second, "crashed client expires", func() bool {
		return !slices.Contains(ids(clients[0].Affiliates()), crashed)
	})
	// Clean stop: Run deletes the affiliate before it returns.
	stopped := clients[1].opts.AffiliateID
	clients[1].stop()
	l, err := dial(t, svc.Addr().String()).List(context.Background(), &serverpb.ListRequest{ClusterId: "cluster-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range l.Affiliates {
		if a.Id == stopped {
			t.Fatal("a cleanly stopped client left its affiliate behind")
		}
	}
	eventually(t, 5*time.Second, "peers drop the stopped client", func() bool {
		return !slices.Contains(ids(clients[0].Affiliates()), stopped)
	})
	if n := clients[0].DecryptFailures(); n != 0 {
		t.Fatalf("%d decrypt failures within one cluster", n)
	}
}

// TestClientCountsForeignBlobs: a member of another cluster with the same
// cluster ID but another secret is ignored and counted.
func TestClientCountsForeignBlobs(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	url := "http://" + svc.Addr().String() + "/"
	ours := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "shared", ClusterSecret: newSecret(t), AffiliateID: "ours", TTL: time.Minute})
	theirs := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "shared", ClusterSecret: newSecret(t), AffiliateID: "theirs", TTL: time.Minute})
	ours.SetLocal(testAffiliate("", 1), nil)
	theirs.SetLocal(testAffiliate("", 2), nil)
	eventually(t, 10*time.Second, "foreign blob counted", func() bool { return ours.DecryptFailures() > 0 })
	if len(ours.Affiliates()) != 0 {
		t.Fatalf("foreign affiliate accepted: %v", ours.Affiliates())
	}
}

// TestClientTwoServicesMerged: with two discovery services, an affiliate
// known to either is seen, once.
func TestClientTwoServicesMerged(t *testing.T) {
	s1 := startService(t, ServiceConfig{RateLimitRPS: -1})
	s2 := startService(t, ServiceConfig{RateLimitRPS: -1})
	u1, u2 := "http://"+s1.Addr().String()+"/", "http://"+s2.Addr().String()+"/"
	secret := newSecret(t)
	both := runClient(t, ClientOptions{Endpoints: []string{u1, u2}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "both", TTL: time.Minute})
	only1 := runClient(t, ClientOptions{Endpoints: []string{u1}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "only1", TTL: time.Minute})
	only2 := runClient(t, ClientOptions{Endpoints: []string{u2}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "only2", TTL: time.Minute})
	both.SetLocal(testAffiliate("", 1), nil)
	only1.SetLocal(testAffiliate("", 2), nil)
	only2.SetLocal(testAffiliate("", 3), nil)
	eventually(t, 10*time.Second, "merged view", func() bool {
		return slices.Equal(ids(both.Affiliates()), []string{"only1", "only2"})
	})
	eventually(t, 10*time.Second, "only1 sees both", func() bool {
		return slices.Equal(ids(only1.Affiliates()), []string{"both"})
	})
}

// TestClientKeepsViewWhileServiceDown: the last view survives an outage.
func TestClientKeepsViewWhileServiceDown(t *testing.T) {
	svc, err := Start(ServiceConfig{Listen: "127.0.0.1:0", RateLimitRPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + svc.Addr().String() + "/"
	secret := newSecret(t)
	a := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "a", TTL: time.Minute})
	b := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "b", TTL: time.Minute})
	a.SetLocal(testAffiliate("", 1), nil)
	b.SetLocal(testAffiliate("", 2), nil)
	eventually(t, 10*time.Second, "a sees b", func() bool { return len(a.Affiliates()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Give the client time to notice the outage and fail a reconnect.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if len(a.Affiliates()) != 1 {
			t.Fatalf("view lost while the service is down: %v", a.Affiliates())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNewClientErrors(t *testing.T) {
	good := ClientOptions{Endpoints: []string{"https://discovery.example.com/"}, ClusterID: "c", ClusterSecret: newSecret(t), AffiliateID: "a"}
	for name, mut := range map[string]func(*ClientOptions){
		"no endpoints": func(o *ClientOptions) { o.Endpoints = nil },
		"bad scheme":   func(o *ClientOptions) { o.Endpoints = []string{"grpc://x:1"} },
		"bare host":    func(o *ClientOptions) { o.Endpoints = []string{"x:1"} },
		"short secret": func(o *ClientOptions) { o.ClusterSecret = base64.StdEncoding.EncodeToString([]byte("short")) },
		"no cluster":   func(o *ClientOptions) { o.ClusterID = "" },
		"no affiliate": func(o *ClientOptions) { o.AffiliateID = "" },
		"ttl":          func(o *ClientOptions) { o.TTL = time.Hour },
		"bad CA":       func(o *ClientOptions) { o.CACertificatePEM = "nope" },
	} {
		o := good
		mut(&o)
		if _, err := NewClient(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := NewClient(good); err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]string{
		"https://discovery.talos.dev/": "discovery.talos.dev:443",
		"http://127.0.0.1:3000/":       "127.0.0.1:3000",
		"http://[2001:db8::1]/":        "[2001:db8::1]:80",
	} {
		if got, _, err := ParseEndpoint(raw); err != nil || got != want {
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	id, _ := NewAffiliateID()
	if len(id) < 40 || len(id) > 43 {
		t.Fatalf("affiliate ID %q has %d characters", id, len(id))
	}
}

// TestInteropDiscoveryClient: the discovery-client Talos runs, used
// directly, against our server: it publishes, sees its peer decrypted with
// endpoints, and learns its public IP.
func TestInteropDiscoveryClient(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	mk := func(id string) *dclient.Client {
		c, err := dclient.NewClient(dclient.Options{Cipher: block, Endpoint: svc.Addr().String(), ClusterID: "talos-cluster",
			AffiliateID: id, ClientVersion: "v1.15.0", TTL: 30 * time.Minute, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := mk("node-a"), mk("node-b")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, c := range []*dclient.Client{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx, zap.NewNop(), make(chan struct{}, 1)) }()
	}
	pubA := &dclient.Affiliate{Affiliate: &clientpb.Affiliate{NodeId: "node-a", Hostname: "a", MachineType: "controlplane",
		Kubespan: &clientpb.KubeSpan{PublicKey: "pk-a", Address: netip.MustParseAddr("fd7f:175a:b97c:5602::1").AsSlice()}},
		Endpoints: []*clientpb.Endpoint{{Ip: []byte{192, 0, 2, 1}, Port: 51820}, {Ip: netip.MustParseAddr("2001:db8::1").AsSlice(), Port: 51820}}}
	if err := a.SetLocalData(pubA, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.SetLocalData(&dclient.Affiliate{Affiliate: &clientpb.Affiliate{NodeId: "node-b"}},
		[]dclient.Endpoint{{AffiliateID: "node-a", Endpoints: []*clientpb.Endpoint{{Ip: []byte{203, 0, 113, 1}, Port: 40000}}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "talos client b sees a with 3 endpoints", func() bool {
		for _, x := range b.GetAffiliates() {
			if x.Affiliate.NodeId == "node-a" && x.Affiliate.Kubespan.GetPublicKey() == "pk-a" && len(x.Endpoints) == 3 {
				return true
			}
		}
		return false
	})
	var ip netip.Addr
	if err := ip.UnmarshalBinary(a.GetPublicIP()); err != nil || ip != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("public IP %v %v", ip, err)
	}
	// The server only ever held ciphertext of the right sizes.
	l, err := dial(t, svc.Addr().String()).List(context.Background(), &serverpb.ListRequest{ClusterId: "talos-cluster"})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range l.Affiliates {
		for _, ep := range x.Endpoints {
			if len(ep) != 16 && len(ep) != 32 {
				t.Fatalf("endpoint blob of %d bytes", len(ep))
			}
		}
	}
	// Our wrapper in the same cluster decodes Talos' blobs too.
	ours := runClient(t, ClientOptions{Endpoints: []string{"http://" + svc.Addr().String()}, ClusterID: "talos-cluster",
		ClusterSecret: base64.StdEncoding.EncodeToString(key), AffiliateID: "meshspan-1", TTL: time.Minute})
	eventually(t, 10*time.Second, "wrapper sees the Talos nodes", func() bool {
		for _, x := range ours.Affiliates() {
			if x.ID == "node-a" && x.PublicKey == "pk-a" && len(x.Endpoints) == 3 && x.Address == netip.MustParseAddr("fd7f:175a:b97c:5602::1") {
				return true
			}
		}
		return false
	})
	// A meshspan node's traversal data rides in the sealed blob: Talos
	// decodes everything else, and meshspan nodes read it back.
	self := testAffiliate("meshspan-1", 9)
	self.Traversal = Traversal{RelayPort: 51821, Rendezvous: []Rendezvous{{Peer: [32]byte{7}, At: time.UnixMilli(1_800_000_000_000)}}}
	ours.SetLocal(self, nil)
	eventually(t, 10*time.Second, "talos client b decodes the meshspan affiliate", func() bool {
		for _, x := range b.GetAffiliates() {
			if x.Affiliate.NodeId == "meshspan-1" && x.Affiliate.Nodename == "node-9" && x.Affiliate.Kubespan.GetPublicKey() == self.PublicKey &&
				len(x.Affiliate.Kubespan.GetAdditionalAddresses()) == 1 {
				return true
			}
		}
		return false
	})
	peer := runClient(t, ClientOptions{Endpoints: []string{"http://" + svc.Addr().String()}, ClusterID: "talos-cluster",
		ClusterSecret: base64.StdEncoding.EncodeToString(key), AffiliateID: "meshspan-2", TTL: time.Minute})
	eventually(t, 10*time.Second, "a meshspan peer reads the traversal data", func() bool {
		for _, x := range peer.Affiliates() {
			if x.ID == "meshspan-1" && x.Traversal.RelayPort == 51821 && len(x.Traversal.Rendezvous) == 1 &&
				x.Traversal.Rendezvous[0].Peer == [32]byte{7} && x.Traversal.Rendezvous[0].At.Equal(time.UnixMilli(1_800_000_000_000)) {
				return true
			}
		}
		return false
	})
	_ = durationpb.New
}

// Affiliates returns the same view until a change arrives, then a new one
// holding the change: the agent keeps what it derived from the view for as
// long as it is the same slice.
func TestClientAffiliatesViewFollowsChanges(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	secret := newSecret(t)
	url := "http://" + svc.Addr().String() + "/"
	var cs []*runningClient
	for range 2 {
		id, err := NewAffiliateID()
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "cluster-view", ClusterSecret: secret, AffiliateID: id}))
	}
	watcher, mover := cs[0], cs[1]
	watcher.SetLocal(testAffiliate("", 1), nil)
	mover.SetLocal(testAffiliate("", 2), nil)
	eventually(t, 10*time.Second, "the watcher sees the mover", func() bool { return len(watcher.Affiliates()) == 1 })
	v1, v2 := watcher.Affiliates(), watcher.Affiliates()
	if &v1[0] != &v2[0] {
		t.Error("two calls without a change built two views")
	}
	moved := testAffiliate("", 2)
	ep := netip.MustParseAddrPort("198.51.100.9:51820")
	moved.Endpoints = []netip.AddrPort{ep}
	mover.SetLocal(moved, nil)
	eventually(t, 10*time.Second, "the watcher sees the new endpoint", func() bool {
		v := watcher.Affiliates()
		return len(v) == 1 && slices.Contains(v[0].Endpoints, ep) // the service adds endpoints to those it holds
	})
	if v3 := watcher.Affiliates(); &v3[0] == &v1[0] {
		t.Error("the view after a change is the old slice")
	}
	if !slices.Equal(v1[0].Endpoints, testAffiliate("", 2).Endpoints) {
		t.Errorf("the old view changed in place: %v", v1[0].Endpoints)
	}
}

// TestClientRepublishesAfterFailedPublish: a service that fails a node's
// first publish (as a loaded one does, past the client's 30 s deadline).
// discovery-client then drops its watch and waits for new local data or
// its TTL/2 refresh, 15 min here; the client hands it its data again, so
// it reconnects, watches and publishes after its backoff.
func TestClientRepublishesAfterFailedPublish(t *testing.T) {
	srv, err := NewServer(ServerOptions{Store: NewMemoryStore(DefaultLimits(), time.Now), RateLimitRPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int32
	failures.Store(1)
	failFirst := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == serverpb.Cluster_AffiliateUpdate_FullMethodName && failures.Add(-1) >= 0 {
			return nil, status.Error(codes.DeadlineExceeded, "test: the first publish times out")
		}
		return h(ctx, req)
	}
	g := grpc.NewServer(append(srv.GRPCOptions(), grpc.ChainUnaryInterceptor(failFirst))...)
	srv.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)

	secret := newSecret(t)
	var clients []*runningClient
	for range 2 {
		id, err := NewAffiliateID()
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, runClient(t, ClientOptions{
			Endpoints: []string{"http://" + l.Addr().String() + "/"}, ClusterID: "cluster-1", ClusterSecret: secret, AffiliateID: id,
		}))
	}
	// Connected and watching with nothing to publish yet: the publish that
	// fails is then the one the data below starts.
	for i, c := range clients {
		eventually(t, 10*time.Second, fmt.Sprintf("client %d said Hello", i), func() bool { return c.ObservedAddress().IsValid() })
	}
	time.Sleep(200 * time.Millisecond)
	for i, c := range clients {
		c.SetLocal(testAffiliate("", byte(i+1)), nil)
	}
	for i, c := range clients {
		eventually(t, 20*time.Second, fmt.Sprintf("client %d sees its peer", i), func() bool { return len(c.Affiliates()) == 1 })
	}
	if n := failures.Load(); n >= 0 {
		t.Fatalf("no publish failed (%d failures left): the test did not test the retry", n+1)
	}
}

// The one-service view sorts only the client's new values and merges them
// with the others in their last order: over random changes (values kept,
// replaced, gone, new) it is the sorted conversion of what the client
// holds, and the memo holds exactly the values listed.
func TestSortedViewFollowsRandomChanges(t *testing.T) {
	c := &Client{memo: map[*dclient.Affiliate]*memoEntry{}}
	value := func(id string, n byte) *dclient.Affiliate {
		a := testAffiliate(id, n)
		return &dclient.Affiliate{Affiliate: toProto(a), Endpoints: endpointsProto(a.Endpoints)}
	}
	rng := mrand.New(mrand.NewPCG(7, 8))
	var list []*dclient.Affiliate
	var last map[*dclient.Affiliate]*Affiliate // the last view's, by value
	for step := range 300 {
		next := slices.Clone(list)
		for range 1 + rng.IntN(5) {
			switch i := rng.IntN(len(next) + 1); {
			case i == len(next) || rng.IntN(3) == 0: // a new member
				next = append(next, value(fmt.Sprintf("m%03d", rng.IntN(400)), byte(step)))
			case rng.IntN(2) == 0: // one replaced: a new value, same ID
				next[i] = value(next[i].Affiliate.NodeId, byte(step))
			default: // one gone
				next = slices.Delete(next, i, i+1)
			}
		}
		seen := map[string]bool{} // a service holds one value per ID
		next = slices.DeleteFunc(next, func(da *dclient.Affiliate) bool {
			dup := seen[da.Affiliate.NodeId]
			seen[da.Affiliate.NodeId] = true
			return dup
		})
		rng.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
		list = next
		c.builds++
		got := c.sortedView(list)
		var want []Affiliate
		for _, da := range list {
			a, _ := affiliateFromProto(da)
			want = append(want, a)
		}
		slices.SortStableFunc(want, func(x, y Affiliate) int { return strings.Compare(x.ID, y.ID) })
		var values []Affiliate
		for _, a := range got {
			values = append(values, *a)
		}
		if fmt.Sprint(values) != fmt.Sprint(want) {
			t.Fatalf("step %d: view\n%v\nwant\n%v", step, values, want)
		}
		// A value the client kept is the same affiliate, at the same
		// address, as in the last view (the agent takes that for unchanged).
		for _, da := range list {
			if a, ok := last[da]; ok && !slices.Contains(got, a) {
				t.Fatalf("step %d: %s kept its value but not its affiliate", step, a.ID)
			}
		}
		last = map[*dclient.Affiliate]*Affiliate{}
		for i, e := range c.order {
			last[e.da] = got[i]
		}
		if len(c.memo) != len(list) {
			t.Fatalf("step %d: memo holds %d values for %d listed", step, len(c.memo), len(list))
		}
	}
}
