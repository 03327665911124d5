package provider

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"
)

// newDigitalOceanClient builds the godo client for the configured token and
// endpoint. Retries are done by doRetryTransport rather than godo's own
// retry option: godo's needs an oauth2 transport (a plain client panics, see
// spec B7), ignores ratelimit-reset and would retry a create after a 5xx,
// which can leave a duplicate firewall.
func newDigitalOceanClient(data *providerData) (*godo.Client, error) {
	if data.DigitalOceanToken == "" {
		return nil, fmt.Errorf("no DigitalOcean token: set digitalocean_token in the provider block or the DIGITALOCEAN_TOKEN environment variable")
	}
	// Timeouts are per attempt, on the transport: an http.Client.Timeout
	// would also cover the retry waits and cut a wait for ratelimit-reset.
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = 60 * time.Second
	hc := &http.Client{
		Transport: &doRetryTransport{
			base:        base,
			token:       strings.TrimSpace(data.DigitalOceanToken),
			maxAttempts: 6,
			maxWait:     90 * time.Second,
			minBackoff:  250 * time.Millisecond,
			now:         time.Now,
			sleep:       doSleep,
		},
	}
	c, err := godo.New(hc,
		godo.SetBaseURL(data.DigitalOceanEndpoint),
		godo.SetUserAgent("terraform-provider-meshspan/"+data.Version))
	if err != nil {
		return nil, fmt.Errorf("digitalocean client: endpoint %q: %w", data.DigitalOceanEndpoint, err)
	}
	return c, nil
}

// doAttemptsHeader carries the number of attempts on a response the
// transport gave up retrying.
const doAttemptsHeader = "X-Meshspan-Attempts"

func doSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// doRetryTransport adds the bearer token and retries, a bounded number of
// times, requests the API refused for rate limiting (429) or failed with a
// transient server error. A 429 waits as the API says: retry-after seconds
// (burst limit) or until ratelimit-reset when the hourly window is spent;
// otherwise it backs off exponentially. A wait longer than maxWait is not
// attempted: the 429 is returned so the user hears when the limit resets.
type doRetryTransport struct {
	base        http.RoundTripper
	token       string
	maxAttempts int
	maxWait     time.Duration
	minBackoff  time.Duration
	now         func() time.Time
	sleep       func(context.Context, time.Duration) error
}

func (t *doRetryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		r := req.Clone(req.Context())
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("digitalocean: rewind request body: %w", err)
			}
			r.Body = body
		}
		r.Header.Set("Authorization", "Bearer "+t.token)
		resp, err := t.base.RoundTrip(r)
		if err != nil || !doRetryable(req, resp.StatusCode) {
			return resp, err
		}
		wait := t.delay(resp, attempt)
		if attempt >= t.maxAttempts || wait > t.maxWait {
			// Tell the error helper how hard we tried.
			resp.Header.Set(doAttemptsHeader, strconv.Itoa(attempt))
			return resp, nil
		}
		// Drain so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err := t.sleep(req.Context(), wait); err != nil {
			return nil, fmt.Errorf("digitalocean: waiting %s to retry %s %s: %w", wait, req.Method, req.URL.Path, err)
		}
	}
}

// retryable: 429 always (the request was not processed); 5xx except 501
// only when repeating the request cannot create a second firewall.
func doRetryable(req *http.Request, status int) bool {
	switch {
	case status == http.StatusTooManyRequests:
		return true
	case status >= 500 && status != http.StatusNotImplemented:
		return !(req.Method == http.MethodPost && strings.TrimSuffix(req.URL.Path, "/") == "/v2/firewalls")
	}
	return false
}

// delay is how long to wait before the next attempt.
func (t *doRetryTransport) delay(resp *http.Response, attempt int) time.Duration {
	backoff := t.minBackoff << (attempt - 1)
	if resp.StatusCode != http.StatusTooManyRequests {
		return backoff
	}
	if s := resp.Header.Get("retry-after"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			return time.Duration(n) * time.Second
		}
		if at, err := http.ParseTime(s); err == nil {
			return max(at.Sub(t.now()), 0)
		}
	}
	if resp.Header.Get("ratelimit-remaining") == "0" {
		if n, err := strconv.ParseInt(resp.Header.Get("ratelimit-reset"), 10, 64); err == nil {
			return max(time.Unix(n, 0).Sub(t.now()), 0) + 100*time.Millisecond
		}
	}
	return backoff
}
