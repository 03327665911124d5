package dofake

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Firewall is the firewall object as the API returns it (spec B3).
type Firewall struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	Status         string          `json:"status"`
	CreatedAt      string          `json:"created_at"`
	PendingChanges []PendingChange `json:"pending_changes"`
	InboundRules   []InboundRule   `json:"inbound_rules"`
	OutboundRules  []OutboundRule  `json:"outbound_rules"`
	DropletIDs     []int           `json:"droplet_ids"`
	Tags           []string        `json:"tags"`
}

// PendingChange is one droplet the firewall is still being applied to or
// removed from.
type PendingChange struct {
	DropletID int    `json:"droplet_id"`
	Removing  bool   `json:"removing"`
	Status    string `json:"status"`
}

// Targets is the sources object of an inbound rule or the destinations
// object of an outbound rule. The object itself is always emitted (the
// official Terraform provider dereferences it without a nil check); empty
// lists inside it are left out, as the API does.
type Targets struct {
	Addresses        []string `json:"addresses,omitempty"`
	DropletIDs       []int    `json:"droplet_ids,omitempty"`
	LoadBalancerUIDs []string `json:"load_balancer_uids,omitempty"`
	KubernetesIDs    []string `json:"kubernetes_ids,omitempty"`
	Tags             []string `json:"tags,omitempty"`
}

func (t *Targets) size() int {
	if t == nil {
		return 0
	}
	return len(t.Addresses) + len(t.DropletIDs) + len(t.LoadBalancerUIDs) + len(t.KubernetesIDs) + len(t.Tags)
}

// InboundRule is one inbound rule (spec B4).
type InboundRule struct {
	Protocol string   `json:"protocol"`
	Ports    string   `json:"ports"`
	Sources  *Targets `json:"sources"`
	Action   string   `json:"action,omitempty"` // allow (default) or deny; always emitted in replies
}

// OutboundRule is one outbound rule (spec B4).
type OutboundRule struct {
	Protocol     string   `json:"protocol"`
	Ports        string   `json:"ports"`
	Destinations *Targets `json:"destinations"`
	Action       string   `json:"action,omitempty"` // allow (default) or deny; always emitted in replies
}

// firewallRequest is the body of POST /v2/firewalls and PUT
// /v2/firewalls/{id}. godo sends the lists without omitempty, so any of them
// may arrive as null.
type firewallRequest struct {
	Name          *string        `json:"name"`
	InboundRules  []InboundRule  `json:"inbound_rules"`
	OutboundRules []OutboundRule `json:"outbound_rules"`
	DropletIDs    []int          `json:"droplet_ids"`
	Tags          []string       `json:"tags"`
}

// rulesRequest is the body of POST/DELETE /v2/firewalls/{id}/rules.
type rulesRequest struct {
	InboundRules  []InboundRule  `json:"inbound_rules"`
	OutboundRules []OutboundRule `json:"outbound_rules"`
}

// apiError is an error reply: HTTP status plus the body's id and message.
type apiError struct {
	status  int
	id      string
	message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.id, e.message) }

func unprocessable(format string, a ...any) *apiError {
	return &apiError{status: 422, id: "unprocessable_entity", message: fmt.Sprintf(format, a...)}
}

// Limits of the real service (spec B3, D; DO-LIM).
const (
	maxRules      = 50
	maxDroplets   = 10
	maxTags       = 5
	maxTargets    = 1000
	maxPerPage    = 200
	defaultPerPge = 20
)

var (
	nameRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9\.-]+$`)
	tagNameRE = regexp.MustCompile(`^[a-zA-Z0-9:\-_]{1,255}$`)
)

// normalizeAction checks a rule's action; the API's default is allow (godo
// v1.237.0 FirewallRuleAction), and replies name it.
func normalizeAction(dir, action string) (string, error) {
	switch action {
	case "", "allow":
		return "allow", nil
	case "deny":
		return "deny", nil
	}
	return "", unprocessable("%q is not a valid action for an %s rule; use allow or deny.", action, dir)
}

// normalizeRule validates one rule and returns its ports as the API stores
// them: "all" and icmp become "0", anything else is echoed unchanged.
func normalizeRule(dir string, protocol, ports string, t *Targets) (string, error) {
	switch protocol {
	case "tcp", "udp":
	case "icmp":
		// The API ignores ports on icmp and replies "0" (spec D).
		return "0", checkTargets(dir, t)
	case "":
		return "", unprocessable("You must specify a protocol for each %s rule.", dir)
	default:
		return "", unprocessable("%q is not a valid protocol; use tcp, udp or icmp.", protocol)
	}
	switch {
	case ports == "all":
		ports = "0"
	case ports == "" || ports == "0":
		return "", unprocessable("You must specify a positive value for ports.")
	default:
		if err := checkPorts(ports); err != nil {
			return "", err
		}
	}
	return ports, checkTargets(dir, t)
}

func checkPorts(ports string) error {
	lo, hi, isRange := strings.Cut(ports, "-")
	a, err1 := strconv.Atoi(lo)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.Atoi(hi)
	}
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return unprocessable("%q is not a valid port range; use a port, a range like 8000-9000 or \"all\".", ports)
	}
	return nil
}

func checkTargets(dir string, t *Targets) error {
	kind := "sources"
	if dir == "outbound" {
		kind = "destinations"
	}
	if t.size() == 0 {
		return unprocessable("You must specify at least one of the %s for each %s rule.", kind, dir)
	}
	if t.size() > maxTargets {
		return unprocessable("A rule may have at most %d %s.", maxTargets, kind)
	}
	for _, a := range t.Addresses {
		if _, err := netip.ParsePrefix(a); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(a); err == nil {
			continue
		}
		return unprocessable("invalid address %q in %s", a, kind)
	}
	for _, id := range t.DropletIDs {
		if id <= 0 {
			return unprocessable("You specified an invalid type for one of the %s.", kind)
		}
	}
	return nil
}

// clone returns a deep copy so callers never share slices with the store.
func (f *Firewall) clone() Firewall {
	c := *f
	c.PendingChanges = slices.Clone(f.PendingChanges)
	c.DropletIDs = slices.Clone(f.DropletIDs)
	c.Tags = slices.Clone(f.Tags)
	c.InboundRules = make([]InboundRule, len(f.InboundRules))
	for i, r := range f.InboundRules {
		r.Sources = r.Sources.clone()
		c.InboundRules[i] = r
	}
	c.OutboundRules = make([]OutboundRule, len(f.OutboundRules))
	for i, r := range f.OutboundRules {
		r.Destinations = r.Destinations.clone()
		c.OutboundRules[i] = r
	}
	return c
}

func (t *Targets) clone() *Targets {
	if t == nil {
		return &Targets{}
	}
	return &Targets{
		Addresses:        slices.Clone(t.Addresses),
		DropletIDs:       slices.Clone(t.DropletIDs),
		LoadBalancerUIDs: slices.Clone(t.LoadBalancerUIDs),
		KubernetesIDs:    slices.Clone(t.KubernetesIDs),
		Tags:             slices.Clone(t.Tags),
	}
}

// sameTargets compares two target objects as sets, for DELETE /rules.
func sameTargets(a, b *Targets) bool {
	a, b = a.clone(), b.clone()
	for _, t := range []*Targets{a, b} {
		slices.Sort(t.Addresses)
		slices.Sort(t.DropletIDs)
		slices.Sort(t.LoadBalancerUIDs)
		slices.Sort(t.KubernetesIDs)
		slices.Sort(t.Tags)
	}
	return slices.Equal(a.Addresses, b.Addresses) && slices.Equal(a.DropletIDs, b.DropletIDs) &&
		slices.Equal(a.LoadBalancerUIDs, b.LoadBalancerUIDs) && slices.Equal(a.KubernetesIDs, b.KubernetesIDs) &&
		slices.Equal(a.Tags, b.Tags)
}
