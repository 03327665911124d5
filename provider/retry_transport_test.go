package provider

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A request whose body cannot be rewound (no GetBody) is still sent whole
// on every attempt, and the bearer token goes with each.
func TestRetryTransportResendsBodyWithoutGetBody(t *testing.T) {
	var bodies, auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		auths = append(auths, r.Header.Get("Authorization"))
		if len(bodies) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tr := &retryTransport{cloud: "test", base: http.DefaultTransport, bearer: "tok", maxAttempts: 5,
		policy: &doRetryPolicy{minBackoff: time.Millisecond, now: time.Now},
		sleep:  func(context.Context, time.Duration) error { return nil }}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/firewalls/x", nil)
	req.Body = io.NopCloser(strings.NewReader(`{"name":"x"}`))
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("RoundTrip = %v, %v", resp, err)
	}
	for i := range bodies {
		if bodies[i] != `{"name":"x"}` || auths[i] != "Bearer tok" {
			t.Errorf("attempt %d: body %q, Authorization %q", i+1, bodies[i], auths[i])
		}
	}
	if len(bodies) != 3 || resp.Header.Get(attemptsHeader) != "3" {
		t.Errorf("%d attempts, header %q; want 3", len(bodies), resp.Header.Get(attemptsHeader))
	}
}
