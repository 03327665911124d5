package cloudhttp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflogtest"
)

type retry5xx struct{}

func (retry5xx) RetryAfter(_ *http.Request, resp *http.Response, _ int) (time.Duration, bool) {
	return time.Millisecond, resp.StatusCode >= 500
}

// A request whose body cannot be rewound (no GetBody) is still sent whole
// on every attempt, and the bearer token goes with each.
func TestTransportResendsBodyWithoutGetBody(t *testing.T) {
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
	tr := &Transport{Cloud: "test", Base: http.DefaultTransport, Bearer: "tok", MaxAttempts: 5, Policy: retry5xx{},
		Sleep: func(context.Context, time.Duration) error { return nil }}
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
	if len(bodies) != 3 || resp.Header.Get(AttemptsHeader) != "3" {
		t.Errorf("%d attempts, header %q; want 3", len(bodies), resp.Header.Get(AttemptsHeader))
	}
}

// MaxAttempts bounds the attempts and the last answer is returned.
func TestTransportGivesUpAfterMaxAttempts(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	tr := &Transport{Cloud: "test", Base: http.DefaultTransport, MaxAttempts: 4, Policy: retry5xx{},
		Sleep: func(context.Context, time.Duration) error { return nil }}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusBadGateway || n != 4 || resp.Header.Get(AttemptsHeader) != "4" {
		t.Fatalf("RoundTrip = %v, %v after %d attempts", resp, err, n)
	}
}

// Every call and every retry is logged through tflog (TF_LOG=debug shows
// them), with the cloud, method, path and status.
func TestTransportLogsCallsAndRetries(t *testing.T) {
	var buf bytes.Buffer
	ctx := tflogtest.RootLogger(context.Background(), &buf)
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n++; n == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tr := &Transport{Cloud: "test", Base: http.DefaultTransport, MaxAttempts: 3, Policy: retry5xx{},
		Sleep: func(context.Context, time.Duration) error { return nil }}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/firewalls", nil)
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	entries, err := tflogtest.MultilineJSONDecode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range entries {
		if e["cloud"] != "test" || e["path"] != "/v1/firewalls" {
			t.Errorf("entry without cloud and path: %v", e)
		}
		msgs = append(msgs, fmt.Sprintf("%s %v", e["@message"], e["status"]))
	}
	want := []string{"cloud API call 502", "cloud API call will be retried 502", "cloud API call 200"}
	if strings.Join(msgs, "; ") != strings.Join(want, "; ") {
		t.Errorf("logged %q, want %q", msgs, want)
	}
}
