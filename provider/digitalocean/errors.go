package digitalocean

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"

	"github.com/meshspan/terraform-provider-meshspan/provider/cloudhttp"
)

// isNotFound reports whether err is the API's 404.
func isNotFound(err error) bool {
	var er *godo.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound
}

// addError turns any error from a godo call into diagnostics:
// the one place that knows what each status means for the user. step says
// what was being done, e.g. "create firewall \"mesh\"".
func addError(diags *diag.Diagnostics, step string, err error) {
	var er *godo.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil {
		diags.AddError("DigitalOcean: "+step+" failed", err.Error())
		return
	}
	msg := er.Message
	if er.RequestID != "" {
		msg += fmt.Sprintf(" (request %s)", er.RequestID)
	}
	status := er.Response.StatusCode
	summary := fmt.Sprintf("DigitalOcean: %s failed (HTTP %d)", step, status)
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		diags.AddError(summary,
			fmt.Sprintf("The DigitalOcean API rejected the token: it is invalid, expired, or lacks write scope. "+
				"Set digitalocean_token in the provider block (or DIGITALOCEAN_TOKEN) to a token with read and write scope. API said: %s", msg))
	case status == http.StatusConflict:
		diags.AddAttributeError(path.Root("name"), summary,
			fmt.Sprintf("A firewall with this name already exists in the account; choose another name or import the existing one (terraform import ... <uuid>). API said: %s", msg))
	case status == http.StatusUnprocessableEntity || status == http.StatusBadRequest:
		if p := attributeFor(er.Message); !p.Equal(path.Empty()) {
			diags.AddAttributeError(p, summary, "The API refused the request: "+msg)
		} else {
			diags.AddError(summary, "The API refused the request: "+msg)
		}
	case status == http.StatusTooManyRequests:
		detail := "The DigitalOcean API rate limit (5000 requests/hour, 250/minute per token) is exhausted"
		if n := er.Response.Header.Get(cloudhttp.AttemptsHeader); n != "" {
			detail += "; gave up after " + n + " attempt(s)"
		}
		if reset := er.Response.Header.Get("ratelimit-reset"); reset != "" {
			var sec int64
			if _, err := fmt.Sscan(reset, &sec); err == nil {
				detail += "; the limit resets at " + time.Unix(sec, 0).UTC().Format(time.RFC3339)
			}
		}
		diags.AddError(summary, detail+". Run terraform again later. API said: "+msg)
	default:
		detail := msg
		if n := er.Response.Header.Get(cloudhttp.AttemptsHeader); n != "" {
			detail += "; gave up after " + n + " attempt(s)"
		}
		diags.AddError(summary, detail)
	}
}

// attributeFor guesses which attribute a 422 message concerns, so the
// diagnostic points at the right line of the configuration.
func attributeFor(msg string) path.Path {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "destination") || strings.Contains(m, "outbound"):
		return path.Root("extra_outbound_rules")
	case strings.Contains(m, "address") || strings.Contains(m, "source") || strings.Contains(m, "port") ||
		strings.Contains(m, "protocol") || strings.Contains(m, "inbound") || strings.Contains(m, "rule"):
		return path.Root("extra_inbound_rules")
	case strings.Contains(m, "droplet"):
		return path.Root("droplet_ids")
	case strings.Contains(m, "tag"):
		return path.Root("tags")
	case strings.Contains(m, "name"):
		return path.Root("name")
	}
	return path.Empty()
}
