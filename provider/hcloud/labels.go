package hcloud

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// reservedLabelPrefix is Hetzner's own label namespace; the API
// refuses it on create and update.
const reservedLabelPrefix = "hetzner.cloud/"

// labelError checks one label as the Hetzner API does: Kubernetes
// label syntax, and not in the reserved namespace.
func labelError(key, value string) error {
	if strings.HasPrefix(key, reservedLabelPrefix) {
		return fmt.Errorf("label key %q uses the prefix %s, which Hetzner Cloud reserves; choose another prefix such as example.com/", key, reservedLabelPrefix)
	}
	return config.ValidateLabel(key, value)
}

// selectorError checks a label selector: requirements joined by
// commas, each `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)` or
// `k notin (a,b)`, with keys and values in label syntax.
func selectorError(s string) error {
	bad := func(why string) error {
		return fmt.Errorf("label selector %q: %s; write e.g. role=worker, env in (prod,staging) or !draining", s, why)
	}
	if strings.TrimSpace(s) == "" {
		return bad("it is empty")
	}
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch {
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ',' && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		case c < ' ' || c == 0x7f:
			return bad("it holds a control character")
		}
		if depth < 0 || depth > 1 {
			return bad("its parentheses do not match")
		}
	}
	if depth != 0 {
		return bad("its parentheses do not match")
	}
	for _, p := range append(parts, s[start:]) {
		p = strings.TrimSpace(p)
		key, values := p, []string(nil)
		switch {
		case p == "":
			return bad("a requirement is empty (two commas in a row?)")
		case strings.Contains(p, " in ") || strings.Contains(p, " notin "):
			op := " in "
			if strings.Contains(p, " notin ") {
				op = " notin "
			}
			k, rest, _ := strings.Cut(p, op)
			rest = strings.TrimSpace(rest)
			if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
				return bad(fmt.Sprintf("%q: put the values in parentheses", p))
			}
			key, values = k, strings.Split(rest[1:len(rest)-1], ",")
		case strings.Contains(p, "!="):
			k, v, _ := strings.Cut(p, "!=")
			key, values = k, []string{v}
		case strings.Contains(p, "=="):
			k, v, _ := strings.Cut(p, "==")
			key, values = k, []string{v}
		case strings.Contains(p, "="):
			k, v, _ := strings.Cut(p, "=")
			key, values = k, []string{v}
		case strings.HasPrefix(p, "!"):
			key = p[1:]
		}
		key = strings.TrimSpace(key)
		if err := config.ValidateLabel(key, ""); err != nil {
			return bad(err.Error())
		}
		for _, v := range values {
			if err := config.ValidateLabel("k", strings.TrimSpace(v)); err != nil {
				return bad(err.Error())
			}
		}
	}
	return nil
}

// labelsValidator refuses, at plan, labels the API would refuse at
// apply.
type labelsValidator struct{}

func (labelsValidator) Description(context.Context) string {
	return "Hetzner label syntax, without the reserved hetzner.cloud/ prefix"
}

func (v labelsValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (labelsValidator) ValidateMap(_ context.Context, req validator.MapRequest, resp *validator.MapResponse) {
	for k, e := range req.ConfigValue.Elements() {
		s, ok := e.(types.String)
		if !ok || s.IsUnknown() || s.IsNull() {
			continue
		}
		if err := labelError(k, s.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(req.Path.AtMapKey(k), "Invalid label", err.Error())
		}
	}
}

// selectorValidator refuses malformed label selectors at plan.
type selectorValidator struct{}

func (selectorValidator) Description(context.Context) string {
	return "a Hetzner label selector"
}

func (v selectorValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (selectorValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := selectorError(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid label selector", err.Error())
	}
}
