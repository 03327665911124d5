package digitalocean

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"

	"github.com/meshspan/terraform-provider-meshspan/internal/cloudfw"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/dofake"
	"github.com/meshspan/terraform-provider-meshspan/provider/cloudhttp"
)

const (
	testToken = "dop_v1_unit"
	testROnly = "dop_v1_unit_readonly"
)

func withInbound(req *godo.FirewallRequest, r godo.InboundRule) *godo.FirewallRequest {
	req.InboundRules = append(req.InboundRules, r)
	return req
}

// retryClient is a godo client on the stand-in whose retry transport
// records the waits instead of sleeping.
func retryClient(t *testing.T, now time.Time) (*dofake.Server, *godo.Client, *[]time.Duration) {
	t.Helper()
	srv := dofake.New(dofake.Options{Token: testToken, Now: func() time.Time { return now }})
	srv.AddDroplet(5, "n5")
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	c, err := NewClient(Config{Token: testToken, Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	tr := c.HTTPClient.Transport.(*cloudhttp.Transport)
	// A client-wide timeout would cut the waits below short.
	if c.HTTPClient.Timeout != 0 || tr.Base.(*http.Transport).ResponseHeaderTimeout == 0 {
		t.Fatalf("timeouts must be per attempt: client %v, transport %v", c.HTTPClient.Timeout, tr.Base.(*http.Transport).ResponseHeaderTimeout)
	}
	tr.Policy.(*retryPolicy).now = func() time.Time { return now }
	tr.Sleep = func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }
	return srv, c, &waits
}

func TestDigitalOceanRetryTransport(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	ctx := context.Background()
	srv, c, waits := retryClient(t, now)

	// Burst 429s: the retry-after header decides the wait.
	srv.InjectFault(dofake.Fault{Status: 429, Count: 2, RetryAfter: 3})
	fw, _, err := c.Firewalls.Create(ctx, firewallRequest("retry-fw", 51820, nil, nil, nil, nil))
	if err != nil {
		t.Fatalf("create through two 429s: %v", err)
	}
	if !slices.Equal(*waits, []time.Duration{3 * time.Second, 3 * time.Second}) {
		t.Fatalf("waits %v, want 3s twice (retry-after)", *waits)
	}

	// Exhausted window: wait until ratelimit-reset.
	*waits = nil
	srv.InjectFault(dofake.Fault{Status: 429, Count: 1, ResetIn: 5})
	if _, _, err := c.Firewalls.Get(ctx, fw.ID); err != nil {
		t.Fatal(err)
	}
	if len(*waits) != 1 || (*waits)[0] != 5*time.Second+100*time.Millisecond {
		t.Fatalf("waits %v, want 5.1s (until ratelimit-reset)", *waits)
	}

	// 5xx on an idempotent request: exponential backoff, and the body is
	// sent again intact.
	*waits = nil
	srv.InjectFault(dofake.Fault{Status: 502, Count: 2, Path: "/v2/firewalls/" + fw.ID + "/droplets"})
	if _, err := c.Firewalls.AddDroplets(ctx, fw.ID, 5); err != nil {
		t.Fatalf("add droplets through two 502s: %v", err)
	}
	if got, _ := srv.Firewall(fw.ID); !slices.Equal(got.DropletIDs, []int{5}) {
		t.Fatalf("droplets %v after retried POST, want [5]", got.DropletIDs)
	}
	if !slices.Equal(*waits, []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}) {
		t.Fatalf("waits %v, want 250ms then 500ms", *waits)
	}

	// 5xx on create is not retried: it might have created the firewall.
	*waits = nil
	srv.InjectFault(dofake.Fault{Status: 500, Count: 1, Method: http.MethodPost, Path: "/v2/firewalls"})
	if _, _, err := c.Firewalls.Create(ctx, firewallRequest("second", 51820, nil, nil, nil, nil)); err == nil || len(*waits) != 0 {
		t.Fatalf("create after a 500: err %v, waits %v; want the 500 and no retry", err, *waits)
	}

	// Bounded: a wait beyond maxWait is not attempted, and attempts are
	// capped; both say how many attempts were made.
	for _, f := range []dofake.Fault{{Status: 429, Count: 1, RetryAfter: 3600}, {Status: 503, Count: 6}} {
		*waits = nil
		srv.InjectFault(f)
		_, resp, err := c.Firewalls.List(ctx, nil)
		if err == nil || resp.Header.Get(cloudhttp.AttemptsHeader) == "" {
			t.Fatalf("fault %+v: err %v, attempts header %q", f, err, resp.Header.Get(cloudhttp.AttemptsHeader))
		}
		if srv.PendingFaults() != 0 {
			t.Fatalf("fault %+v: %d failures left unconsumed", f, srv.PendingFaults())
		}
	}
	if len(*waits) != 5 {
		t.Fatalf("503s waited %d times, want maxAttempts-1 = 5", len(*waits))
	}
}

func TestDigitalOceanErrorDiagnostics(t *testing.T) {
	srv := dofake.New(dofake.Options{Token: testToken, ReadOnlyToken: testROnly})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	ctx := context.Background()
	cl := func(tok string) *godo.Client {
		c, err := NewClient(Config{Token: tok, Endpoint: ts.URL})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := cl(testToken)
	if _, _, err := c.Firewalls.Create(ctx, firewallRequest("dup", 51820, nil, nil, nil, nil)); err != nil {
		t.Fatal(err)
	}
	errOf := func(_ any, _ *godo.Response, err error) error { return err }
	cases := []struct {
		name      string
		err       error
		attr      path.Path
		summary   string
		detailHas string
	}{
		{"401", errOf(cl("bad").Firewalls.List(ctx, nil)), path.Empty(), "HTTP 401", "digitalocean_token"},
		{"403", errOf(cl(testROnly).Firewalls.Create(ctx, firewallRequest("x1", 51820, nil, nil, nil, nil))), path.Empty(), "HTTP 403", "write scope"},
		{"409", errOf(c.Firewalls.Create(ctx, firewallRequest("dup", 51820, nil, nil, nil, nil))), path.Root("name"), "HTTP 409", "already exists"},
		{"422 tag", errOf(c.Firewalls.Create(ctx, firewallRequest("t1", 51820, nil, nil, nil, []string{"ghost"}))), path.Root("tags"), "HTTP 422", "ghost"},
		{"422 droplet", errOf(c.Firewalls.Create(ctx, firewallRequest("d1", 51820, nil, nil, []int64{9}, nil))), path.Root("droplet_ids"), "HTTP 422", "droplet 9"},
		{"422 address", errOf(c.Firewalls.Create(ctx, withInbound(firewallRequest("a1", 51820, nil, nil, nil, nil),
			godo.InboundRule{Protocol: "tcp", PortRange: "22", Sources: &godo.Sources{Addresses: []string{"not-an-ip"}}}))), path.Root("extra_inbound_rules"), "HTTP 422", "invalid address"},
		{"422 outbound", errOf(c.Firewalls.Create(ctx, firewallRequest("o1", 51820, nil,
			[]cloudfw.Rule{{Direction: cloudfw.Out, Protocol: "tcp", Port: "22"}}, nil, nil))), path.Root("extra_outbound_rules"), "HTTP 422", "destinations"},
		{"422 name", errOf(c.Firewalls.Create(ctx, firewallRequest("-bad", 51820, nil, nil, nil, nil))), path.Root("name"), "HTTP 422", "Name"},
	}
	for _, tc := range cases {
		var diags diag.Diagnostics
		addError(&diags, "create firewall", tc.err)
		if len(diags) != 1 {
			t.Fatalf("%s: %d diagnostics", tc.name, len(diags))
		}
		d := diags[0]
		var at path.Path
		if wp, ok := d.(diag.DiagnosticWithPath); ok {
			at = wp.Path()
		}
		if at.String() != tc.attr.String() || !strings.Contains(d.Summary(), tc.summary) || !strings.Contains(d.Detail(), tc.detailHas) {
			t.Errorf("%s: diagnostic at %q %q: %q; want at %q, %q, containing %q", tc.name, at, d.Summary(), d.Detail(), tc.attr, tc.summary, tc.detailHas)
		}
		if !strings.Contains(d.Detail(), "request dofake-") {
			t.Errorf("%s: request id missing from %q", tc.name, d.Detail())
		}
	}
	if _, _, err := c.Firewalls.Get(ctx, "0d7d9d4c-0000-4000-8000-000000000000"); !isNotFound(err) {
		t.Fatalf("404 not recognised: %v", err)
	}
}

// A create is never retried after a 5xx, also when the endpoint sits under
// a path (an API gateway or proxy): it may have created the firewall.
func TestDigitalOceanCreateNotRetriedBehindPathPrefix(t *testing.T) {
	for _, u := range []string{"https://api.digitalocean.com/v2/firewalls", "https://proxy.example.com/do/v2/firewalls/"} {
		req, _ := http.NewRequest(http.MethodPost, u, nil)
		if retryable(req, http.StatusBadGateway) {
			t.Errorf("POST %s: a 502 is retried", u)
		}
		if !retryable(req, http.StatusTooManyRequests) {
			t.Errorf("POST %s: a 429 is not retried", u)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "https://proxy.example.com/do/v2/firewalls/abc/droplets", nil)
	if !retryable(req, http.StatusBadGateway) {
		t.Error("POST to a firewall's droplets: a 502 is not retried")
	}
}
