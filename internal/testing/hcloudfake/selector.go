package hcloudfake

import (
	"fmt"
	"strings"
)

// selector is a parsed Hetzner label selector: requirements joined by
// commas, each `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)` or `k notin (a,b)`.
type selector []requirement

type requirement struct {
	key    string
	op     string // exists, !exists, =, !=, in, notin
	values []string
}

func parseSelector(s string) (selector, error) {
	var sel selector
	for _, part := range splitTopLevel(s) {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("label selector %q has an empty requirement", s)
		}
		r, err := parseRequirement(part)
		if err != nil {
			return nil, fmt.Errorf("label selector %q: %w", s, err)
		}
		sel = append(sel, r)
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("label selector is empty")
	}
	return sel, nil
}

// splitTopLevel splits on commas outside parentheses.
func splitTopLevel(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseRequirement(p string) (requirement, error) {
	for _, op := range []string{" notin ", " in "} {
		if k, rest, ok := strings.Cut(p, op); ok {
			rest = strings.TrimSpace(rest)
			if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
				return requirement{}, fmt.Errorf("%q: values must be in parentheses", p)
			}
			var vals []string
			for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
				vals = append(vals, strings.TrimSpace(v))
			}
			return checkKey(requirement{key: strings.TrimSpace(k), op: strings.TrimSpace(op), values: vals}, p)
		}
	}
	if k, v, ok := strings.Cut(p, "!="); ok {
		return checkKey(requirement{key: strings.TrimSpace(k), op: "!=", values: []string{strings.TrimSpace(v)}}, p)
	}
	if k, v, ok := strings.Cut(p, "=="); ok {
		return checkKey(requirement{key: strings.TrimSpace(k), op: "=", values: []string{strings.TrimSpace(v)}}, p)
	}
	if k, v, ok := strings.Cut(p, "="); ok {
		return checkKey(requirement{key: strings.TrimSpace(k), op: "=", values: []string{strings.TrimSpace(v)}}, p)
	}
	if strings.HasPrefix(p, "!") {
		return checkKey(requirement{key: strings.TrimSpace(p[1:]), op: "!exists"}, p)
	}
	return checkKey(requirement{key: p, op: "exists"}, p)
}

func checkKey(r requirement, p string) (requirement, error) {
	if r.key == "" || strings.ContainsAny(r.key, " ()!=") {
		return requirement{}, fmt.Errorf("%q has an invalid key", p)
	}
	return r, nil
}

func (s selector) matches(labels map[string]string) bool {
	for _, r := range s {
		v, has := labels[r.key]
		ok := false
		switch r.op {
		case "exists":
			ok = has
		case "!exists":
			ok = !has
		case "=":
			ok = has && v == r.values[0]
		case "!=":
			ok = !has || v != r.values[0]
		case "in":
			ok = has && contains(r.values, v)
		case "notin":
			ok = !has || !contains(r.values, v)
		}
		if !ok {
			return false
		}
	}
	return true
}
