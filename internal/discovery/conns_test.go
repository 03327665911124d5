package discovery

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// dialFrom is a gRPC client whose connection comes from the loopback
// address src (Linux answers on all of 127/8).
func dialFrom(t *testing.T, addr, src string) serverpb.ClusterClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			return d.DialContext(ctx, "tcp", a)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return serverpb.NewClusterClient(conn)
}

func hello(ctx context.Context, c serverpb.ClusterClient) error {
	_, err := c.Hello(ctx, &serverpb.HelloRequest{ClusterId: "c"})
	return err
}

// TestIdleConnectionsClosed: a connection with nothing open goes after the
// idle timeout; one holding a watch stays.
func TestIdleConnectionsClosed(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, Conn: ConnLimits{IdleTimeout: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watcher := dialFrom(t, svc.Addr().String(), "127.0.0.1")
	w, err := watcher.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	idle := dialFrom(t, svc.Addr().String(), "127.0.0.1")
	if err := hello(ctx, idle); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "both connections open", func() bool { return svc.Conns() == 2 })
	eventually(t, 15*time.Second, "the idle connection closed, the watching one kept", func() bool { return svc.Conns() == 1 })
	// The watch still delivers.
	if _, err := dial(t, svc.Addr().String()).AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: "c", AffiliateId: "a", AffiliateData: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.Affiliates[0].Id != "a" {
		t.Fatalf("watch after idle sweep: %v %v", m, err)
	}
	// The idle client reconnects on its own when it needs to.
	if err := hello(ctx, idle); err != nil {
		t.Fatalf("idle client's next call: %v", err)
	}
}

// TestPerAddressLimits: one address over its connection or watch limit gets
// ResourceExhausted naming the limit, and other clients are still answered.
func TestPerAddressLimits(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, Conn: ConnLimits{PerAddress: 2, WatchersPerAddress: 3}})
	addr := svc.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1, c2 := dialFrom(t, addr, "127.0.0.1"), dialFrom(t, addr, "127.0.0.1")
	for _, c := range []serverpb.ClusterClient{c1, c2} {
		if err := hello(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	err := hello(ctx, dialFrom(t, addr, "127.0.0.1"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "connection limit of 2 per client address") {
		t.Fatalf("third connection from one address: %v, want ResourceExhausted naming the limit", err)
	}
	other := dialFrom(t, addr, "127.0.0.2")
	start := time.Now()
	if err := hello(ctx, other); err != nil {
		t.Fatalf("another address while one is at its limit: %v", err)
	}
	t.Logf("another client answered in %s", time.Since(start))

	var streams []context.CancelFunc
	for i := range 3 {
		wctx, wcancel := context.WithCancel(ctx)
		streams = append(streams, wcancel)
		w, err := c1.Watch(wctx, &serverpb.WatchRequest{ClusterId: "c"})
		if err == nil {
			_, err = w.Recv()
		}
		if err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
	}
	w, err := c2.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "watch limit of 3") {
		t.Fatalf("fourth watch from one address: %v, want ResourceExhausted naming the limit", err)
	}
	if w, err := other.Watch(ctx, &serverpb.WatchRequest{ClusterId: "c"}); err != nil {
		t.Fatal(err)
	} else if _, err := w.Recv(); err != nil {
		t.Fatalf("watch from another address: %v", err)
	}
	streams[0]()
	eventually(t, 10*time.Second, "a closed watch frees its slot", func() bool {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		w, err := c2.Watch(wctx, &serverpb.WatchRequest{ClusterId: "c"})
		if err == nil {
			_, err = w.Recv()
		}
		return err == nil
	})
	for _, c := range streams {
		c()
	}
}
