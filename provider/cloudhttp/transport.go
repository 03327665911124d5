// Package cloudhttp is the HTTP plumbing the cloud resources share: a
// transport that retries what each cloud says is worth retrying, bounded in
// attempts and time, and logs every call and retry through tflog (visible
// with TF_LOG=debug).
package cloudhttp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"
)

// AttemptsHeader is set on the response the transport finally returns after
// it retried or wanted to, so error messages can say how often it tried.
const AttemptsHeader = "Meshspan-Attempts"

// Policy is how one cloud signals that an answer is worth retrying and how
// long to wait first. retry counts from 0 for the first retry.
type Policy interface {
	RetryAfter(req *http.Request, resp *http.Response, retry int) (wait time.Duration, ok bool)
}

// Transport resends a request, at most MaxAttempts times in all, while the
// cloud's Policy says so. A single wait longer than MaxWait is not attempted
// (the answer is returned, so the user hears when a limit resets); all waits
// together stay within Budget and the request's context. A zero MaxWait or
// Budget sets no bound. Timeouts are per attempt, on Base: an
// http.Client.Timeout would also cut the waits short.
type Transport struct {
	Cloud       string // names the cloud in errors and logs
	Base        http.RoundTripper
	Bearer      string // when set, sent as Authorization on every attempt
	MaxAttempts int
	MaxWait     time.Duration
	Budget      time.Duration
	Policy      Policy
	Sleep       func(context.Context, time.Duration) error // nil: Sleep
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	getBody := req.GetBody
	if req.Body != nil && getBody == nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: read request body: %w", t.Cloud, err)
		}
		getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	sleep := t.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		r := req.Clone(ctx)
		if getBody != nil {
			body, err := getBody()
			if err != nil {
				return nil, fmt.Errorf("%s: rewind request body: %w", t.Cloud, err)
			}
			r.Body = body
		}
		if t.Bearer != "" {
			r.Header.Set("Authorization", "Bearer "+t.Bearer)
		}
		fields := map[string]any{"cloud": t.Cloud, "method": req.Method, "path": req.URL.Path, "attempt": attempt}
		start := time.Now()
		resp, err := t.Base.RoundTrip(r)
		fields["duration_ms"] = time.Since(start).Milliseconds()
		if err != nil {
			fields["error"] = err.Error()
			tflog.Debug(ctx, "cloud API call failed", fields)
			return nil, err
		}
		fields["status"] = resp.StatusCode
		tflog.Debug(ctx, "cloud API call", fields)
		wait, retry := t.Policy.RetryAfter(req, resp, attempt-1)
		if !retry || attempt >= t.MaxAttempts || (t.MaxWait > 0 && wait > t.MaxWait) || (t.Budget > 0 && waited+wait > t.Budget) {
			if retry {
				tflog.Warn(ctx, "cloud API call not retried again", map[string]any{"cloud": t.Cloud, "method": req.Method,
					"path": req.URL.Path, "status": resp.StatusCode, "attempts": attempt, "would_wait": wait.String(), "waited": waited.String()})
			}
			if retry || attempt > 1 {
				resp.Header.Set(AttemptsHeader, strconv.Itoa(attempt))
			}
			return resp, nil
		}
		tflog.Info(ctx, "cloud API call will be retried", map[string]any{"cloud": t.Cloud, "method": req.Method,
			"path": req.URL.Path, "status": resp.StatusCode, "attempt": attempt, "wait": wait.String()})
		// Drain so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if err := sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("%s: waiting %s before retry %d of %s %s: %w", t.Cloud, wait, attempt, req.Method, req.URL.Path, err)
		}
		waited += wait
	}
}

// Sleep waits d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NewBase is the per-attempt transport: each attempt's wait for response
// headers is bounded; the whole call is bounded by the context.
func NewBase() *http.Transport {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = 60 * time.Second
	return base
}
