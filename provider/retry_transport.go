package provider

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// attemptsHeader is set on the response the retry transport finally returns
// after it retried or wanted to, so error messages can say how often it tried.
const attemptsHeader = "Meshspan-Attempts"

// retryPolicy is how one cloud signals that an answer is worth retrying and
// how long to wait first. retry counts from 0 for the first retry.
type retryPolicy interface {
	retryAfter(req *http.Request, resp *http.Response, retry int) (wait time.Duration, ok bool)
}

// retryTransport resends a request, at most maxAttempts times in all, while
// the cloud's policy says so. A single wait longer than maxWait is not
// attempted (the answer is returned, so the user hears when a limit resets);
// all waits together stay within budget and the request's context. A zero
// maxWait or budget sets no bound. Timeouts are per attempt, on base: an
// http.Client.Timeout would also cut the waits short.
type retryTransport struct {
	cloud       string // names the cloud in errors
	base        http.RoundTripper
	bearer      string // when set, sent as Authorization on every attempt
	maxAttempts int
	maxWait     time.Duration
	budget      time.Duration
	policy      retryPolicy
	sleep       func(context.Context, time.Duration) error
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	getBody := req.GetBody
	if req.Body != nil && getBody == nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: read request body: %w", t.cloud, err)
		}
		getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		r := req.Clone(req.Context())
		if getBody != nil {
			body, err := getBody()
			if err != nil {
				return nil, fmt.Errorf("%s: rewind request body: %w", t.cloud, err)
			}
			r.Body = body
		}
		if t.bearer != "" {
			r.Header.Set("Authorization", "Bearer "+t.bearer)
		}
		resp, err := t.base.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		wait, retry := t.policy.retryAfter(req, resp, attempt-1)
		if !retry || attempt >= t.maxAttempts || (t.maxWait > 0 && wait > t.maxWait) || (t.budget > 0 && waited+wait > t.budget) {
			if retry || attempt > 1 {
				resp.Header.Set(attemptsHeader, strconv.Itoa(attempt))
			}
			return resp, nil
		}
		// Drain so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if err := t.sleep(req.Context(), wait); err != nil {
			return nil, fmt.Errorf("%s: waiting %s before retry %d of %s %s: %w", t.cloud, wait, attempt, req.Method, req.URL.Path, err)
		}
		waited += wait
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
