package discovery

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestClientDialer: ClientOptions.Dialer opens every connection to the
// service (the node agent marks those sockets).
func TestClientDialer(t *testing.T) {
	svc := startService(t, ServiceConfig{RateLimitRPS: -1})
	u := "http://" + svc.Addr().String() + "/"
	secret := newSecret(t)
	var mu sync.Mutex
	var dialled []string
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	a := runClient(t, ClientOptions{Endpoints: []string{u}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "a", TTL: time.Minute, Dialer: dialer})
	b := runClient(t, ClientOptions{Endpoints: []string{u}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "b", TTL: time.Minute})
	a.SetLocal(testAffiliate("", 1), nil)
	b.SetLocal(testAffiliate("", 2), nil)
	eventually(t, 10*time.Second, "a sees b through its dialer", func() bool {
		return slices.Equal(ids(a.Affiliates()), []string{"b"})
	})
	mu.Lock()
	defer mu.Unlock()
	if len(dialled) == 0 || dialled[0] != svc.Addr().String() {
		t.Errorf("dialer called with %q, want the service address %s", dialled, svc.Addr())
	}
}
