package hcloud

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
	"github.com/meshspan/terraform-provider-meshspan/provider/cloudhttp"
)

// A 429 waits until RateLimit-Reset (capped), bodies are resent, and the
// total wait stays within the budget.
func TestHcloudRetryTransportHonoursRateLimitReset(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var bodies []string
	fails := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if fails > 0 {
			fails--
			w.Header().Set("RateLimit-Reset", strconv.FormatInt(now.Unix()+3, 10))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	var waits []time.Duration
	tr := &cloudhttp.Transport{
		Cloud: "hcloud", Base: http.DefaultTransport, MaxAttempts: 6, Budget: time.Minute,
		Policy: &retryPolicy{
			maxWait: 10 * time.Second,
			backoff: func(int) time.Duration { return time.Second },
			now:     func() time.Time { return now },
		},
		Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil },
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"name":"x"}`))
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("RoundTrip = %v, %v", resp, err)
	}
	if len(waits) != 2 || waits[0] != 3*time.Second {
		t.Errorf("waits = %v, want two of 3s (until RateLimit-Reset)", waits)
	}
	if len(bodies) != 3 || bodies[2] != `{"name":"x"}` {
		t.Errorf("bodies = %q, want the body resent each time", bodies)
	}
	if got := resp.Header.Get(cloudhttp.AttemptsHeader); got != "3" {
		t.Errorf("attempts header = %q", got)
	}

	// Bounded: a server that always answers 429 is given up on within the budget.
	fails, waits = 1000, nil
	tr.Budget = 7 * time.Second
	resp, err = tr.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("RoundTrip = %v, %v", resp, err)
	}
	var total time.Duration
	for _, w := range waits {
		total += w
	}
	if total > tr.Budget || len(waits) != 2 {
		t.Errorf("waited %v in %d sleeps, budget %v", total, len(waits), tr.Budget)
	}
}

func TestHcloudRetryTransportSkipsUniqueness(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":{"code":"uniqueness_error","message":"name is already used"}}`)
	}))
	defer srv.Close()
	tr := &cloudhttp.Transport{Cloud: "hcloud", Base: http.DefaultTransport, MaxAttempts: 6, Budget: time.Minute,
		Policy: &retryPolicy{maxWait: time.Second, backoff: func(int) time.Duration { return time.Millisecond }, now: time.Now}}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil || calls != 1 {
		t.Fatalf("calls = %d, err %v; uniqueness_error must not be retried", calls, err)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "uniqueness_error") {
		t.Errorf("body lost after peeking: %q", b)
	}
}

// Errors from the stand-in, through hcloud-go, become the diagnostics users see.
func TestHcloudErrorDiagnostics(t *testing.T) {
	r, err := hcloudfake.Start(hcloudfake.New(hcloudfake.Options{}), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, _, err := newClient(&Config{Token: r.Token(), Endpoint: r.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := c.Firewall.Create(ctx, hcloud.FirewallCreateOpts{Name: "taken"}); err != nil {
		t.Fatal(err)
	}
	check := func(name string, err error, wantPath path.Path, want string) {
		t.Helper()
		var d diag.Diagnostics
		addError(&d, "test", "create", err)
		if len(d) == 0 {
			t.Fatalf("%s: no diagnostics", name)
		}
		got := d[0].Summary() + " " + d[0].Detail()
		if !strings.Contains(got, want) {
			t.Errorf("%s: %q does not contain %q", name, got, want)
		}
		if wp, ok := d[0].(diag.DiagnosticWithPath); wantPath.String() != "" && (!ok || !wp.Path().Equal(wantPath)) {
			t.Errorf("%s: diagnostic not on %s: %#v", name, wantPath, d[0])
		}
	}
	_, _, err = c.Firewall.Create(ctx, hcloud.FirewallCreateOpts{Name: "taken"})
	check("uniqueness", err, path.Root("name"), "already exists")
	_, _, err = c.Firewall.Create(ctx, hcloud.FirewallCreateOpts{Name: "x", Labels: map[string]string{"bad key": "v"}})
	check("invalid labels", err, path.Root("labels"), `rejected field "labels"`)
	r.Inject(hcloudfake.Fault{Status: 500, Count: 1})
	_, err = c.Firewall.All(ctx)
	check("500", err, path.Empty(), "HTTP 500 server_error")
	bad, _, _ := newClient(&Config{Token: "nope", Endpoint: r.Endpoint})
	_, err = bad.Firewall.All(ctx)
	check("401", err, path.Empty(), "token is invalid or lacks write scope")
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-short.Done()
	_, err = c.Firewall.All(short)
	check("timeout", err, path.Empty(), "timeouts.create")

	if _, _, err := newClient(&Config{}); err == nil || !strings.Contains(err.Error(), "HCLOUD_TOKEN") {
		t.Errorf("missing token: %v", err)
	}
}

func TestHcloudRuleConversionRoundTrip(t *testing.T) {
	rules := []cloudfw.Rule{
		cloudfw.WireGuard(51820),
		{Direction: "in", Protocol: "tcp", Port: "6443", CIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}, Description: "k8s"},
		{Direction: "out", Protocol: "tcp", CIDRs: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}},
		{Direction: "in", Protocol: "icmp", CIDRs: cloudfw.Anywhere},
	}
	api := toAPIRules(rules)
	if p := api[2].Port; p == nil || *p != "any" {
		t.Errorf("all ports sent as %v, want any", p)
	}
	if api[3].Port != nil {
		t.Errorf("icmp sent with port %q", *api[3].Port)
	}
	back := fromAPIRules(api)
	if !sameRules(rules, back) {
		t.Fatalf("round trip changed rules:\n%+v\n%+v", rules, back)
	}
	back[1].Description = "changed"
	if sameRules(rules, back) {
		t.Error("a changed description must count as drift")
	}
}
