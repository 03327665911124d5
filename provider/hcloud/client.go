package hcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/meshspan/terraform-provider-meshspan/provider/cloudhttp"
)

// PollIntervalEnv shortens action polling (default 500ms), for tests.
const PollIntervalEnv = "MESHSPAN_HCLOUD_POLL_INTERVAL"

// Config is what the provider block (or the environment) says about
// Hetzner Cloud.
type Config struct {
	Token, Endpoint, Version string
}

// ConfigSource is implemented by the provider data handed to Configure.
type ConfigSource interface {
	HcloudConfig() Config
}

// newClient builds a client from the provider configuration. Retries are
// done by cloudhttp.Transport with retryPolicy (which honours
// RateLimit-Reset; the transport bounds the total wait), so hcloud-go's own
// retry loop is switched off.
func newClient(data *Config) (*hcloud.Client, time.Duration, error) {
	if data == nil || data.Token == "" {
		return nil, 0, errors.New("no Hetzner Cloud token: set hcloud_token in the provider block or the HCLOUD_TOKEN environment variable (a Read & Write API token from the Cloud Console, Security -> API Tokens)")
	}
	poll := 500 * time.Millisecond
	if s := os.Getenv(PollIntervalEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, 0, fmt.Errorf("%s=%q is not a positive duration; write e.g. 200ms", PollIntervalEnv, s)
		}
		poll = d
	}
	// Each attempt is bounded by ResponseHeaderTimeout, the whole call by
	// the resource's timeout (the context).
	transport := &cloudhttp.Transport{
		Cloud:       "hcloud",
		Base:        cloudhttp.NewBase(),
		MaxAttempts: 7,
		Budget:      90 * time.Second,
		Policy: &retryPolicy{
			maxWait: 15 * time.Second,
			backoff: func(n int) time.Duration { return min(250*time.Millisecond<<n, 8*time.Second) },
			now:     time.Now,
		},
	}
	c := hcloud.NewClient(
		hcloud.WithToken(data.Token),
		hcloud.WithEndpoint(data.Endpoint),
		hcloud.WithApplication("terraform-provider-meshspan", data.Version),
		hcloud.WithHTTPClient(&http.Client{Transport: transport}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{MaxRetries: 0}),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(poll)}),
	)
	return c, poll, nil
}

// retryPolicy retries what the Hetzner API says is worth retrying
// (429 rate_limit_exceeded, 409 conflict, 502, 504). A 429 waits until
// RateLimit-Reset: at least the backoff, at most maxWait.
type retryPolicy struct {
	maxWait time.Duration
	backoff func(retry int) time.Duration
	now     func() time.Time
}

// RetryAfter decides whether resp is retried and how long to wait first.
func (t *retryPolicy) RetryAfter(_ *http.Request, resp *http.Response, retry int) (time.Duration, bool) {
	wait := t.backoff(retry)
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		if s := resp.Header.Get("RateLimit-Reset"); s != "" {
			if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
				wait = max(wait, time.Unix(sec, 0).Sub(t.now()))
			}
		}
		return min(wait, t.maxWait), true
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return wait, true
	case http.StatusConflict:
		// 409 is also uniqueness_error, which must not be retried.
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		return wait, err == nil && json.Unmarshal(b, &e) == nil && e.Error.Code == string(hcloud.ErrorCodeConflict)
	}
	return 0, false
}

// attributeFor maps an invalid_input field name to the resource
// attribute it concerns.
func attributeFor(field string, messages []string) (path.Path, bool) {
	switch {
	case field == "name":
		return path.Root("name"), true
	case field == "labels":
		return path.Root("labels"), true
	case strings.HasPrefix(field, "rules"):
		return path.Root("extra_rules"), true
	case strings.HasPrefix(field, "apply_to") || strings.HasPrefix(field, "remove_from"):
		if strings.Contains(strings.Join(messages, " "), "label_selector") {
			return path.Root("label_selectors"), true
		}
		return path.Root("server_ids"), true
	}
	return path.Empty(), false
}

// addError turns any error from an hcloud-go call into diagnostics:
// the one place that knows what each API error means for the user. step says
// what was being done, e.g. `create firewall "mesh"`; timeoutAttr names the
// timeouts attribute that bounds it.
func addError(diags *diag.Diagnostics, step, timeoutAttr string, err error) {
	summary := "Hetzner Cloud: " + step + " failed"
	var herr hcloud.Error
	var aerr hcloud.ActionError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		diags.AddError(summary, fmt.Sprintf("It did not finish within the resource's timeout (timeouts.%s). "+
			"Raise timeouts { %s = \"...\" } or run terraform again: %v", timeoutAttr, timeoutAttr, err))
	case errors.As(err, &aerr):
		diags.AddError(summary, fmt.Sprintf("The API accepted the request but its action %q ended in error %s: %s",
			actionCommand(aerr), aerr.Code, aerr.Message))
	case errors.As(err, &herr):
		status, attempts := 0, ""
		if resp := herr.Response(); resp != nil && resp.Response != nil {
			status = resp.StatusCode
			attempts = resp.Header.Get(cloudhttp.AttemptsHeader)
		}
		if status != 0 {
			summary += fmt.Sprintf(" (HTTP %d %s)", status, herr.Code)
		}
		said := fmt.Sprintf("API said: %s", herr.Error())
		switch herr.Code {
		// hcloud-go's ErrorCodeTokenReadonly is a deprecated alias of
		// forbidden; the API answers token_readonly.
		case hcloud.ErrorCodeUnauthorized, hcloud.ErrorCodeForbidden, "token_readonly":
			diags.AddError(summary, "The Hetzner Cloud token is invalid or lacks write scope. Set hcloud_token in the provider "+
				"block (or HCLOUD_TOKEN) to an API token with Read & Write permission for this project. "+said)
		case hcloud.ErrorCodeInvalidInput:
			det, _ := herr.Details.(hcloud.ErrorDetailsInvalidInput)
			if len(det.Fields) == 0 {
				diags.AddError(summary, said)
			}
			for _, f := range det.Fields {
				detail := fmt.Sprintf("The API rejected field %q: %s. %s", f.Name, strings.Join(f.Messages, "; "), said)
				if p, ok := attributeFor(f.Name, f.Messages); ok {
					diags.AddAttributeError(p, summary, detail)
				} else {
					diags.AddError(summary, detail)
				}
			}
		case hcloud.ErrorCodeUniquenessError:
			diags.AddAttributeError(path.Root("name"), summary, "A firewall with this name already exists in the Hetzner Cloud "+
				"project; names are unique per project. Choose another name, or import the existing firewall "+
				"(terraform import meshspan_hcloud_firewall.<name> <id>). "+said)
		case hcloud.ErrorCodeRateLimitExceeded:
			diags.AddError(summary, fmt.Sprintf("The Hetzner Cloud rate limit (3600 requests/hour, refilled 1/s) is exhausted; "+
				"gave up after %s attempt(s), waiting for RateLimit-Reset between them. Run terraform again later or lower -parallelism. %s", orUnknown(attempts), said))
		case hcloud.ErrorCodeFirewallResourceNotFound:
			diags.AddAttributeError(path.Root("server_ids"), summary, "A server in server_ids does not exist in this project. "+said)
		default:
			detail := said
			if status >= 500 {
				detail = fmt.Sprintf("The Hetzner Cloud API failed on its side (after %s attempt(s)); run terraform again. %s", orUnknown(attempts), said)
			}
			diags.AddError(summary, detail)
		}
	case errors.Is(err, hcloud.ErrStatusCode):
		diags.AddError(summary, "The API answered with an error and no JSON body (is hcloud_endpoint right?): "+err.Error())
	default:
		diags.AddError(summary, err.Error())
	}
}

func actionCommand(e hcloud.ActionError) string {
	if a := e.Action(); a != nil {
		return a.Command
	}
	return "?"
}

func orUnknown(s string) string {
	if s == "" {
		return "1"
	}
	return s
}
