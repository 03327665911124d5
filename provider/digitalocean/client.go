package digitalocean

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"

	"github.com/meshspan/terraform-provider-meshspan/provider/cloudhttp"
)

// Config is what the provider block (or the environment) says about
// DigitalOcean.
type Config struct {
	Token, Endpoint, Version string
}

// ConfigSource is implemented by the provider data handed to Configure.
type ConfigSource interface {
	DigitalOceanConfig() Config
}

// NewClient builds the godo client for the configured token and endpoint.
// Retries are done by cloudhttp.Transport with retryPolicy rather than
// godo's own retry option: godo's needs an oauth2 transport (a plain
// client panics, see spec B7), ignores ratelimit-reset and would retry a
// create after a 5xx, which can leave a duplicate firewall.
func NewClient(data Config) (*godo.Client, error) {
	if data.Token == "" {
		return nil, fmt.Errorf("no DigitalOcean token: set digitalocean_token in the provider block or the DIGITALOCEAN_TOKEN environment variable")
	}
	hc := &http.Client{
		Transport: &cloudhttp.Transport{
			Cloud:       "digitalocean",
			Base:        cloudhttp.NewBase(),
			Bearer:      strings.TrimSpace(data.Token),
			MaxAttempts: 6,
			MaxWait:     90 * time.Second,
			Policy:      &retryPolicy{minBackoff: 250 * time.Millisecond, now: time.Now},
		},
	}
	c, err := godo.New(hc,
		godo.SetBaseURL(data.Endpoint),
		godo.SetUserAgent("terraform-provider-meshspan/"+data.Version))
	if err != nil {
		return nil, fmt.Errorf("digitalocean client: endpoint %q: %w", data.Endpoint, err)
	}
	return c, nil
}

// retryPolicy retries requests the API refused for rate limiting (429)
// or failed with a transient server error. A 429 waits as the API says:
// retry-after seconds (burst limit) or until ratelimit-reset when the hourly
// window is spent; otherwise it backs off exponentially from minBackoff.
type retryPolicy struct {
	minBackoff time.Duration
	now        func() time.Time
}

func (p *retryPolicy) RetryAfter(req *http.Request, resp *http.Response, retry int) (time.Duration, bool) {
	if !retryable(req, resp.StatusCode) {
		return 0, false
	}
	return p.delay(resp, retry), true
}

// retryable: 429 always (the request was not processed); 5xx except 501
// only when repeating the request cannot create a second firewall (the
// endpoint may sit under a path, so the create is matched by suffix).
func retryable(req *http.Request, status int) bool {
	switch {
	case status == http.StatusTooManyRequests:
		return true
	case status >= 500 && status != http.StatusNotImplemented:
		return !(req.Method == http.MethodPost && strings.HasSuffix(strings.TrimSuffix(req.URL.Path, "/"), "/v2/firewalls"))
	}
	return false
}

// delay is how long to wait before the next attempt.
func (p *retryPolicy) delay(resp *http.Response, retry int) time.Duration {
	backoff := p.minBackoff << retry
	if resp.StatusCode != http.StatusTooManyRequests {
		return backoff
	}
	if s := resp.Header.Get("retry-after"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			return time.Duration(n) * time.Second
		}
		if at, err := http.ParseTime(s); err == nil {
			return max(at.Sub(p.now()), 0)
		}
	}
	if resp.Header.Get("ratelimit-remaining") == "0" {
		if n, err := strconv.ParseInt(resp.Header.Get("ratelimit-reset"), 10, 64); err == nil {
			return max(time.Unix(n, 0).Sub(p.now()), 0) + 100*time.Millisecond
		}
	}
	return backoff
}
