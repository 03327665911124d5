package hcloudfake

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

type firewall struct {
	ID        int64
	Name      string
	Labels    map[string]string
	Created   time.Time
	Rules     []FirewallRule
	AppliedTo []target
}

// target is one apply_to entry: a server (Server != 0) or a label selector.
type target struct {
	Server   int64
	Selector string
}

type server struct {
	ID      int64
	Name    string
	Labels  map[string]string
	Created time.Time
}

type action struct {
	ID        int64
	Command   string
	Resources []resourceRef
	Started   time.Time
	FinishAt  time.Time
	Fail      bool
	// effect runs once the action succeeds (nil when done or none).
	effect func()
}

type resourceRef struct {
	ID   int64  `json:"id"`
	Type string `json:"type"`
}

// --- JSON shapes (responses) ---

type jsonFirewall struct {
	ID        int64             `json:"id"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels"`
	Created   string            `json:"created"`
	Rules     []FirewallRule    `json:"rules"`
	AppliedTo []jsonResource    `json:"applied_to"`
}

type jsonResource struct {
	Type               string          `json:"type"`
	Server             *jsonServerRef  `json:"server,omitempty"`
	LabelSelector      *jsonSelector   `json:"label_selector,omitempty"`
	AppliedToResources *[]jsonResource `json:"applied_to_resources,omitempty"`
}

type jsonServerRef struct {
	ID int64 `json:"id"`
}

type jsonSelector struct {
	Selector string `json:"selector"`
}

type jsonAction struct {
	ID        int64         `json:"id"`
	Command   string        `json:"command"`
	Status    string        `json:"status"`
	Progress  int           `json:"progress"`
	Started   string        `json:"started"`
	Finished  *string       `json:"finished"`
	Resources []resourceRef `json:"resources"`
	Error     *apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// --- JSON shapes (requests) ---

type ruleRequest struct {
	Direction      string   `json:"direction"`
	Protocol       string   `json:"protocol"`
	Port           *string  `json:"port"`
	SourceIPs      []string `json:"source_ips"`
	DestinationIPs []string `json:"destination_ips"`
	Description    *string  `json:"description"`
}

type resourceRequest struct {
	Type          string         `json:"type"`
	Server        *jsonServerRef `json:"server"`
	LabelSelector *jsonSelector  `json:"label_selector"`
	// applied_to_resources is ignored, as the real API does when clients
	// echo a read-back applied_to into remove_from.
}

// fieldError is one invalid_input detail.
type fieldError struct {
	Name     string   `json:"name"`
	Messages []string `json:"messages"`
}

func timeString(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func (f *Fake) firewallJSON(fw *firewall) jsonFirewall {
	out := jsonFirewall{
		ID: fw.ID, Name: fw.Name, Labels: cloneMap(fw.Labels), Created: timeString(fw.Created),
		Rules: make([]FirewallRule, len(fw.Rules)), AppliedTo: []jsonResource{},
	}
	copy(out.Rules, fw.Rules)
	for _, t := range fw.AppliedTo {
		if t.Server != 0 {
			out.AppliedTo = append(out.AppliedTo, jsonResource{Type: "server", Server: &jsonServerRef{ID: t.Server}})
			continue
		}
		matched := []jsonResource{}
		sel, _ := parseSelector(t.Selector)
		for _, s := range f.sortedServers() {
			if sel.matches(s.Labels) {
				matched = append(matched, jsonResource{Type: "server", Server: &jsonServerRef{ID: s.ID}})
			}
		}
		out.AppliedTo = append(out.AppliedTo, jsonResource{
			Type: "label_selector", LabelSelector: &jsonSelector{Selector: t.Selector}, AppliedToResources: &matched,
		})
	}
	return out
}

func (f *Fake) actionJSON(a *action) jsonAction {
	out := jsonAction{ID: a.ID, Command: a.Command, Started: timeString(a.Started), Resources: a.Resources, Status: "running"}
	if out.Resources == nil {
		out.Resources = []resourceRef{}
	}
	now := f.now()
	if !now.Before(a.FinishAt) {
		fin := timeString(a.FinishAt)
		out.Finished = &fin
		out.Progress = 100
		out.Status = "success"
		if a.Fail {
			out.Status = "error"
			out.Error = &apiErrorBody{Code: "action_failed", Message: "Action failed"}
		}
	} else if total := a.FinishAt.Sub(a.Started); total > 0 {
		out.Progress = int(100 * now.Sub(a.Started) / total)
	}
	return out
}

func (f *Fake) newAction(command string, refs ...resourceRef) *action {
	f.nextID++
	now := f.now()
	a := &action{ID: f.nextID, Command: command, Resources: refs, Started: now, FinishAt: now.Add(f.actionDelay)}
	if f.failActions > 0 {
		f.failActions--
		a.Fail = true
	}
	f.actions[a.ID] = a
	return a
}

// settle applies the effects of actions that have finished successfully
// (f.mu held): a firewall stays applied until its remove_firewall action
// succeeds, as the real API counts it.
func (f *Fake) settle() {
	now := f.now()
	for _, a := range f.actions {
		if a.effect != nil && !now.Before(a.FinishAt) {
			if !a.Fail {
				a.effect()
			}
			a.effect = nil
		}
	}
}

func (f *Fake) sortedFirewalls() []*firewall {
	out := make([]*firewall, 0, len(f.firewalls))
	for _, fw := range f.firewalls {
		out = append(out, fw)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (f *Fake) sortedServers() []*server {
	out := make([]*server, 0, len(f.servers))
	for _, s := range f.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// firewallsOf lists the firewalls applied to a server, directly or through
// a label selector.
func (f *Fake) firewallsOf(s *server) []int64 {
	var ids []int64
	for _, fw := range f.sortedFirewalls() {
		for _, t := range fw.AppliedTo {
			if t.Server == s.ID {
				ids = append(ids, fw.ID)
				break
			}
			if t.Server == 0 {
				if sel, err := parseSelector(t.Selector); err == nil && sel.matches(s.Labels) {
					ids = append(ids, fw.ID)
					break
				}
			}
		}
	}
	return ids
}

// --- validation (messages in the API's style; field names as in requests) ---

var protocols = []string{"tcp", "udp", "icmp", "esp", "gre"}

// validateRules checks rules and returns them in response form (CIDRs
// canonical, all six keys set).
func validateRules(in []ruleRequest) ([]FirewallRule, []string) {
	var msgs []string
	bad := func(i int, format string, args ...any) {
		msgs = append(msgs, fmt.Sprintf("rules[%d]: ", i)+fmt.Sprintf(format, args...))
	}
	if len(in) > 50 {
		msgs = append(msgs, fmt.Sprintf("at most 50 rules are allowed, got %d", len(in)))
	}
	out := make([]FirewallRule, 0, len(in))
	for i, r := range in {
		rule := FirewallRule{Direction: r.Direction, Protocol: r.Protocol, SourceIPs: []string{}, DestinationIPs: []string{}}
		if r.Direction != "in" && r.Direction != "out" {
			bad(i, "direction %q is not one of in, out", r.Direction)
		}
		if !contains(protocols, r.Protocol) {
			bad(i, "protocol %q is not one of %s", r.Protocol, strings.Join(protocols, ", "))
		}
		switch {
		case r.Protocol == "tcp" || r.Protocol == "udp":
			if r.Port == nil || *r.Port == "" {
				bad(i, "port is required for protocol %s", r.Protocol)
			} else if !validPort(*r.Port) {
				bad(i, "port %q is invalid; use a port, a range like 80-85, or any", *r.Port)
			} else {
				p := *r.Port
				rule.Port = &p
			}
		case r.Port != nil && *r.Port != "":
			bad(i, "port is only allowed for protocols tcp and udp")
		}
		src, srcMsgs := canonicalCIDRs(r.SourceIPs)
		dst, dstMsgs := canonicalCIDRs(r.DestinationIPs)
		for _, m := range srcMsgs {
			bad(i, "source_ips: %s", m)
		}
		for _, m := range dstMsgs {
			bad(i, "destination_ips: %s", m)
		}
		switch r.Direction {
		case "in":
			if len(src) == 0 {
				bad(i, "source_ips is required for direction in")
			}
			if len(dst) > 0 {
				bad(i, "destination_ips is not allowed for direction in")
			}
		case "out":
			if len(dst) == 0 {
				bad(i, "destination_ips is required for direction out")
			}
			if len(src) > 0 {
				bad(i, "source_ips is not allowed for direction out")
			}
		}
		rule.SourceIPs, rule.DestinationIPs = src, dst
		if r.Description != nil {
			if len(*r.Description) > 255 {
				bad(i, "description is longer than 255 characters")
			}
			d := *r.Description
			rule.Description = &d
		}
		out = append(out, rule)
	}
	return out, msgs
}

func canonicalCIDRs(list []string) ([]string, []string) {
	out := []string{}
	var msgs []string
	if len(list) > 100 {
		msgs = append(msgs, fmt.Sprintf("at most 100 entries are allowed, got %d", len(list)))
	}
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			msgs = append(msgs, fmt.Sprintf("%q is not a valid CIDR", s))
			continue
		}
		if p.Masked() != p {
			msgs = append(msgs, fmt.Sprintf("%q has host bits set", s))
			continue
		}
		out = append(out, p.String())
	}
	return out, msgs
}

func validPort(s string) bool {
	if s == "any" {
		return true
	}
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := lo, error(nil)
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	return err1 == nil && err2 == nil && lo >= 1 && hi <= 65535 && lo <= hi
}

var (
	labelNameRe   = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?)$`)
	labelPrefixRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

func validateLabels(labels map[string]string) []string {
	var msgs []string
	for k, v := range labels {
		name := k
		if prefix, rest, ok := strings.Cut(k, "/"); ok {
			name = rest
			if len(prefix) > 253 || !labelPrefixRe.MatchString(prefix) {
				msgs = append(msgs, fmt.Sprintf("label key %q has an invalid prefix", k))
			}
			if prefix == "hetzner.cloud" || strings.HasSuffix(prefix, ".hetzner.cloud") {
				msgs = append(msgs, fmt.Sprintf("label key %q uses the reserved prefix hetzner.cloud/", k))
			}
		}
		if !labelNameRe.MatchString(name) {
			msgs = append(msgs, fmt.Sprintf("label key %q is invalid", k))
		}
		if v != "" && !labelNameRe.MatchString(v) {
			msgs = append(msgs, fmt.Sprintf("label value %q of key %q is invalid", v, k))
		}
	}
	sort.Strings(msgs)
	return msgs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
