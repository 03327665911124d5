package hcloudfake

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// reply is what a route produces; ServeHTTP writes it.
type reply struct {
	status int
	body   any // nil: no body
	link   string
}

func errReply(status int, code, message string, details any) reply {
	return reply{status: status, body: map[string]any{
		"error": map[string]any{"code": code, "message": message, "details": details},
	}}
}

func invalidInput(field string, msgs ...string) reply {
	return errReply(http.StatusUnprocessableEntity, "invalid_input",
		fmt.Sprintf("invalid input in field '%s'", field),
		map[string]any{"fields": []fieldError{{Name: field, Messages: msgs}}})
}

func notFound(what string) reply {
	return errReply(http.StatusNotFound, "not_found", what+" not found", nil)
}

var codeForStatus = map[int]string{
	400: "json_error", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
	422: "invalid_input", 423: "locked", 429: "rate_limit_exceeded", 500: "server_error",
	502: "bad_gateway", 503: "unavailable", 504: "timeout",
}

// maxRecorded bounds the request log.
const maxRecorded = 10000

// ServeHTTP implements http.Handler.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_admin/") {
		f.serveAdmin(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()

	h := w.Header()
	rel, isAPI := strings.CutPrefix(r.URL.Path, "/v1/")
	var rep reply
	if !isAPI {
		rep = notFound("path " + r.URL.Path)
	} else {
		var rate rateHeaders
		rel = "/" + rel
		rep, rate = f.handle(r, rel, body)
		if len(f.requests) >= maxRecorded { // keep a long-running standalone fake bounded
			f.requests = f.requests[len(f.requests)-maxRecorded/2:]
		}
		f.requests = append(f.requests, Request{Method: r.Method, Path: rel, Query: r.URL.RawQuery, Body: string(body), Status: rep.status})
		h.Set("RateLimit-Limit", strconv.Itoa(rate.limit))
		h.Set("RateLimit-Remaining", strconv.Itoa(rate.remaining))
		h.Set("RateLimit-Reset", strconv.FormatInt((rate.reset.UnixNano()+int64(time.Second)-1)/int64(time.Second), 10))
	}

	corr := make([]byte, 8)
	_, _ = rand.Read(corr)
	h.Set("X-Correlation-Id", hex.EncodeToString(corr))
	if rep.link != "" {
		h.Set("Link", rep.link)
	}
	if rep.body == nil {
		w.WriteHeader(rep.status)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep.body)
}

// handle runs rate limiting, auth, fault injection and routing (f.mu held).
func (f *Fake) handle(r *http.Request, rel string, body []byte) (reply, rateHeaders) {
	f.settle()
	// Rate limiting: a bucket of RateLimit requests refilling one per second.
	now := f.now()
	f.tokens = math.Min(float64(f.opts.RateLimit), f.tokens+now.Sub(f.tokensAt).Seconds())
	f.tokensAt = now
	limited := f.tokens < 1
	if !limited {
		f.tokens--
	}
	reset := now.Add(time.Duration((float64(f.opts.RateLimit) - f.tokens) * float64(time.Second)))
	remaining := int(f.tokens)

	auth := r.Header.Get("Authorization")
	token, hasBearer := strings.CutPrefix(auth, "Bearer ")
	var rep reply
	switch {
	case !hasBearer || (token != f.opts.Token && (f.opts.ReadOnlyToken == "" || token != f.opts.ReadOnlyToken)):
		rep = errReply(http.StatusUnauthorized, "unauthorized", "unable to authenticate", nil)
	case token == f.opts.ReadOnlyToken && r.Method != http.MethodGet:
		rep = errReply(http.StatusUnauthorized, "token_readonly", "the token is read-only; use a Read & Write token for this request", nil)
	default:
		if ft, ok := f.takeFault(r.Method, rel); ok {
			code := ft.Code
			if code == "" {
				code = codeForStatus[ft.Status]
			}
			if ft.Status == http.StatusTooManyRequests {
				remaining = 0
				reset = now.Add(f.opts.RateLimitResetIn)
			}
			rep = errReply(ft.Status, code, fmt.Sprintf("injected fault: %s", code), nil)
		} else if limited {
			rep = errReply(http.StatusTooManyRequests, "rate_limit_exceeded", "limit of requests per hour reached", nil)
		} else {
			rep = f.route(r, rel, body)
		}
	}
	return rep, rateHeaders{limit: f.opts.RateLimit, remaining: remaining, reset: reset}
}

type rateHeaders struct {
	limit, remaining int
	reset            time.Time
}

func (f *Fake) takeFault(method, rel string) (Fault, bool) {
	for i := range f.faults {
		ft := &f.faults[i]
		if ft.Method != "" && !strings.EqualFold(ft.Method, method) {
			continue
		}
		if ft.Path != "" && !strings.HasPrefix(rel, ft.Path) {
			continue
		}
		ft.Count--
		out := *ft
		if ft.Count <= 0 {
			f.faults = append(f.faults[:i], f.faults[i+1:]...)
		}
		return out, true
	}
	return Fault{}, false
}

// allowedMethods is what a known path takes (nil: no such path). A known
// path asked with another method is 405 method_not_allowed, as the API says.
func allowedMethods(seg []string) []string {
	get := []string{http.MethodGet}
	switch {
	case len(seg) == 1 && seg[0] == "firewalls":
		return []string{http.MethodGet, http.MethodPost}
	case len(seg) == 2 && seg[0] == "firewalls" && seg[1] == "actions",
		len(seg) == 3 && seg[0] == "firewalls" && seg[1] == "actions",
		len(seg) == 3 && seg[0] == "firewalls" && seg[2] == "actions",
		len(seg) <= 2 && (seg[0] == "actions" || seg[0] == "servers"):
		return get
	case len(seg) == 2 && seg[0] == "firewalls":
		return []string{http.MethodGet, http.MethodPut, http.MethodDelete}
	case len(seg) == 4 && seg[0] == "firewalls" && seg[2] == "actions":
		switch seg[3] {
		case "set_rules", "apply_to_resources", "remove_from_resources":
			return []string{http.MethodPost}
		}
		return get
	}
	return nil
}

// route dispatches /v1 paths by segment (f.mu held).
func (f *Fake) route(r *http.Request, rel string, body []byte) reply {
	seg := strings.Split(strings.Trim(rel, "/"), "/")
	m := r.Method
	q := r.URL.Query()
	if ms := allowedMethods(seg); ms != nil && !slices.Contains(ms, m) {
		return errReply(http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("method %s is not allowed on %s", m, rel), nil)
	}
	switch {
	case len(seg) == 1 && seg[0] == "firewalls":
		switch m {
		case http.MethodGet:
			return f.listFirewalls(r, q)
		case http.MethodPost:
			return f.createFirewall(body)
		}
	case len(seg) == 2 && seg[0] == "firewalls" && seg[1] == "actions" && m == http.MethodGet:
		return f.listActions(r, q, func(a *action) bool { return hasRef(a, "firewall", 0) }, false)
	case len(seg) == 3 && seg[0] == "firewalls" && seg[1] == "actions" && m == http.MethodGet:
		return f.getAction(seg[2], func(a *action) bool { return hasRef(a, "firewall", 0) })
	case len(seg) >= 2 && seg[0] == "firewalls":
		id, err := strconv.ParseInt(seg[1], 10, 64)
		if err != nil || id < 1 {
			return invalidInput("id", fmt.Sprintf("%q is not a valid ID", seg[1]))
		}
		fw, ok := f.firewalls[id]
		if !ok {
			return notFound(fmt.Sprintf("firewall with ID %d", id))
		}
		switch {
		case len(seg) == 2 && m == http.MethodGet:
			return reply{status: 200, body: map[string]any{"firewall": f.firewallJSON(fw)}}
		case len(seg) == 2 && m == http.MethodPut:
			return f.updateFirewall(fw, body)
		case len(seg) == 2 && m == http.MethodDelete:
			if len(fw.AppliedTo) > 0 {
				return errReply(http.StatusUnprocessableEntity, "resource_in_use", fmt.Sprintf("firewall with ID %d is still in use", id), nil)
			}
			delete(f.firewalls, id)
			return reply{status: http.StatusNoContent}
		case len(seg) == 3 && seg[2] == "actions" && m == http.MethodGet:
			return f.listActions(r, q, func(a *action) bool { return hasRef(a, "firewall", id) }, false)
		case len(seg) == 4 && seg[2] == "actions" && m == http.MethodGet:
			return f.getAction(seg[3], func(a *action) bool { return hasRef(a, "firewall", id) })
		case len(seg) == 4 && seg[2] == "actions" && m == http.MethodPost:
			switch seg[3] {
			case "set_rules":
				return f.setRules(fw, body)
			case "apply_to_resources":
				return f.applyTo(fw, body)
			case "remove_from_resources":
				return f.removeFrom(fw, body)
			}
		}
	case len(seg) == 1 && seg[0] == "actions" && m == http.MethodGet:
		if len(q["id"]) == 0 {
			return invalidInput("id", "Missing data for required field.")
		}
		return f.listActions(r, q, func(*action) bool { return true }, true)
	case len(seg) == 2 && seg[0] == "actions" && m == http.MethodGet:
		return f.getAction(seg[1], func(*action) bool { return true })
	case len(seg) == 1 && seg[0] == "servers" && m == http.MethodGet:
		return f.listServers(r, q)
	case len(seg) == 2 && seg[0] == "servers" && m == http.MethodGet:
		id, err := strconv.ParseInt(seg[1], 10, 64)
		if err != nil {
			return invalidInput("id", fmt.Sprintf("%q is not a valid ID", seg[1]))
		}
		s, ok := f.servers[id]
		if !ok {
			return notFound(fmt.Sprintf("server with ID %d", id))
		}
		return reply{status: 200, body: map[string]any{"server": f.serverJSON(s)}}
	}
	return notFound("path " + rel)
}

func hasRef(a *action, typ string, id int64) bool {
	for _, r := range a.Resources {
		if r.Type == typ && (id == 0 || r.ID == id) {
			return true
		}
	}
	return false
}

func decode(body []byte, v any) *reply {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		rep := errReply(http.StatusBadRequest, "json_error", "invalid JSON in request body: "+err.Error(), nil)
		return &rep
	}
	return nil
}

// --- firewalls ---

func (f *Fake) listFirewalls(r *http.Request, q url.Values) reply {
	var sel selector
	if s := q.Get("label_selector"); s != "" {
		var err error
		if sel, err = parseSelector(s); err != nil {
			return invalidInput("label_selector", err.Error())
		}
	}
	var list []*firewall
	for _, fw := range f.sortedFirewalls() {
		if name := q.Get("name"); name != "" && fw.Name != name {
			continue
		}
		if sel != nil && !sel.matches(fw.Labels) {
			continue
		}
		list = append(list, fw)
	}
	keys := map[string]func(a, b *firewall) int{
		"id":      func(a, b *firewall) int { return cmpInt(a.ID, b.ID) },
		"name":    func(a, b *firewall) int { return strings.Compare(a.Name, b.Name) },
		"created": func(a, b *firewall) int { return a.Created.Compare(b.Created) },
	}
	if rep, ok := sortBy(list, q["sort"], keys); !ok {
		return rep
	}
	page, rep, ok := paginate(r, len(list))
	if !ok {
		return rep
	}
	out := []jsonFirewall{}
	for _, fw := range list[page.from:page.to] {
		out = append(out, f.firewallJSON(fw))
	}
	return reply{status: 200, body: map[string]any{"firewalls": out, "meta": page.meta()}, link: page.link}
}

type createRequest struct {
	Name    *string           `json:"name"`
	Labels  map[string]string `json:"labels"`
	Rules   []ruleRequest     `json:"rules"`
	ApplyTo []resourceRequest `json:"apply_to"`
}

func (f *Fake) createFirewall(body []byte) reply {
	var req createRequest
	if rep := decode(body, &req); rep != nil {
		return *rep
	}
	if req.Name == nil || *req.Name == "" {
		return invalidInput("name", "Missing data for required field.")
	}
	if rep, ok := f.checkName(*req.Name, 0); !ok {
		return rep
	}
	if msgs := validateLabels(req.Labels); len(msgs) > 0 {
		return invalidInput("labels", msgs...)
	}
	rules, msgs := validateRules(req.Rules)
	if len(msgs) > 0 {
		return invalidInput("rules", msgs...)
	}
	targets, rep, ok := f.resolveTargets(req.ApplyTo, "apply_to", http.StatusUnprocessableEntity)
	if !ok {
		return rep
	}
	if rep, ok := f.checkFirewallsPerServer(0, targets); !ok {
		return rep
	}
	f.nextID++
	labels := req.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	fw := &firewall{ID: f.nextID, Name: *req.Name, Labels: labels, Created: f.now(), Rules: rules}
	for _, t := range targets {
		if containsTarget(fw.AppliedTo, t) {
			return errReply(http.StatusUnprocessableEntity, "server_already_added", "resource added more than once", nil)
		}
		fw.AppliedTo = append(fw.AppliedTo, t)
	}
	f.firewalls[fw.ID] = fw
	actions := []jsonAction{f.actionJSON(f.newAction("set_firewall_rules", resourceRef{ID: fw.ID, Type: "firewall"}))}
	for _, t := range targets {
		actions = append(actions, f.actionJSON(f.applyAction(fw, t)))
	}
	return reply{status: http.StatusCreated, body: map[string]any{"firewall": f.firewallJSON(fw), "actions": actions}}
}

func (f *Fake) checkName(name string, self int64) (reply, bool) {
	if len(name) > 128 {
		return invalidInput("name", "name must be at most 128 characters"), false
	}
	for _, other := range f.firewalls {
		if other.Name == name && other.ID != self {
			return errReply(http.StatusConflict, "uniqueness_error", "firewall name is already used",
				map[string]any{"fields": []map[string]string{{"name": "name"}}}), false
		}
	}
	return reply{}, true
}

func (f *Fake) updateFirewall(fw *firewall, body []byte) reply {
	var req struct {
		Name   *string            `json:"name"`
		Labels *map[string]string `json:"labels"`
	}
	if rep := decode(body, &req); rep != nil {
		return *rep
	}
	if req.Name != nil {
		if *req.Name == "" {
			return invalidInput("name", "name must not be empty")
		}
		if rep, ok := f.checkName(*req.Name, fw.ID); !ok {
			return rep
		}
	}
	if req.Labels != nil {
		if msgs := validateLabels(*req.Labels); len(msgs) > 0 {
			return invalidInput("labels", msgs...)
		}
	}
	if req.Name != nil {
		fw.Name = *req.Name
	}
	if req.Labels != nil {
		fw.Labels = cloneMap(*req.Labels)
	}
	return reply{status: 200, body: map[string]any{"firewall": f.firewallJSON(fw)}}
}

func (f *Fake) setRules(fw *firewall, body []byte) reply {
	var req struct {
		Rules *[]ruleRequest `json:"rules"`
	}
	if rep := decode(body, &req); rep != nil {
		return *rep
	}
	if req.Rules == nil {
		return invalidInput("rules", "Missing data for required field.")
	}
	rules, msgs := validateRules(*req.Rules)
	if len(msgs) > 0 {
		return invalidInput("rules", msgs...)
	}
	fw.Rules = rules
	actions := []jsonAction{f.actionJSON(f.newAction("set_firewall_rules", resourceRef{ID: fw.ID, Type: "firewall"}))}
	// Besides set_firewall_rules, one apply_firewall per server the
	// firewall is applied to, directly or through a selector.
	for _, id := range f.serversOf(fw.AppliedTo) {
		actions = append(actions, f.actionJSON(f.applyAction(fw, target{Server: id})))
	}
	return reply{status: http.StatusCreated, body: map[string]any{"actions": actions}}
}

// resolveTargets checks apply_to / remove_from entries. Unknown servers
// give firewall_resource_not_found with missingStatus (422 on create, 404 on
// the actions).
func (f *Fake) resolveTargets(in []resourceRequest, field string, missingStatus int) ([]target, reply, bool) {
	var out []target
	for i, rr := range in {
		switch rr.Type {
		case "server":
			if rr.Server == nil || rr.Server.ID < 1 {
				return nil, invalidInput(field, fmt.Sprintf("%s[%d]: server.id is required for type server", field, i)), false
			}
			if _, ok := f.servers[rr.Server.ID]; !ok {
				return nil, errReply(missingStatus, "firewall_resource_not_found",
					fmt.Sprintf("server with ID %d not found", rr.Server.ID), nil), false
			}
			out = append(out, target{Server: rr.Server.ID})
		case "label_selector":
			if rr.LabelSelector == nil || rr.LabelSelector.Selector == "" {
				return nil, invalidInput(field, fmt.Sprintf("%s[%d]: label_selector.selector is required for type label_selector", field, i)), false
			}
			if _, err := parseSelector(rr.LabelSelector.Selector); err != nil {
				return nil, invalidInput(field, fmt.Sprintf("%s[%d]: %v", field, i, err)), false
			}
			out = append(out, target{Selector: rr.LabelSelector.Selector})
		default:
			return nil, invalidInput(field, fmt.Sprintf("%s[%d]: type %q is not one of server, label_selector", field, i, rr.Type)), false
		}
	}
	return out, reply{}, true
}

func containsTarget(list []target, t target) bool {
	for _, x := range list {
		if x == t {
			return true
		}
	}
	return false
}

func (f *Fake) applyAction(fw *firewall, t target) *action {
	refs := []resourceRef{{ID: fw.ID, Type: "firewall"}}
	if t.Server != 0 {
		refs = append([]resourceRef{{ID: t.Server, Type: "server"}}, refs...)
	}
	return f.newAction("apply_firewall", refs...)
}

func (f *Fake) applyTo(fw *firewall, body []byte) reply {
	var req struct {
		ApplyTo *[]resourceRequest `json:"apply_to"`
	}
	if rep := decode(body, &req); rep != nil {
		return *rep
	}
	if req.ApplyTo == nil {
		return invalidInput("apply_to", "Missing data for required field.")
	}
	targets, rep, ok := f.resolveTargets(*req.ApplyTo, "apply_to", http.StatusNotFound)
	if !ok {
		return rep
	}
	for i, t := range targets {
		if containsTarget(fw.AppliedTo, t) || containsTarget(targets[:i], t) {
			return errReply(http.StatusUnprocessableEntity, "firewall_already_applied", "firewall is already applied to this resource", nil)
		}
	}
	if rep, ok := f.checkFirewallsPerServer(fw.ID, targets); !ok {
		return rep
	}
	actions := []jsonAction{}
	for _, t := range targets {
		fw.AppliedTo = append(fw.AppliedTo, t)
		actions = append(actions, f.actionJSON(f.applyAction(fw, t)))
	}
	return reply{status: http.StatusCreated, body: map[string]any{"actions": actions}}
}

func (f *Fake) removeFrom(fw *firewall, body []byte) reply {
	var req struct {
		RemoveFrom *[]resourceRequest `json:"remove_from"`
	}
	if rep := decode(body, &req); rep != nil {
		return *rep
	}
	if req.RemoveFrom == nil {
		return invalidInput("remove_from", "Missing data for required field.")
	}
	targets, rep, ok := f.resolveTargets(*req.RemoveFrom, "remove_from", http.StatusNotFound)
	if !ok {
		return rep
	}
	actions := []jsonAction{}
	for _, t := range targets {
		idx := -1
		for i, x := range fw.AppliedTo {
			if x == t {
				idx = i
			}
		}
		if idx < 0 && t.Server != 0 && f.matchedBySelector(fw, t.Server) {
			return errReply(http.StatusUnprocessableEntity, "firewall_managed_by_label_selector",
				fmt.Sprintf("firewall is applied to server with ID %d through a label selector; remove the label selector instead", t.Server), nil)
		}
		refs := []resourceRef{{ID: fw.ID, Type: "firewall"}}
		if t.Server != 0 {
			refs = append([]resourceRef{{ID: t.Server, Type: "server"}}, refs...)
		}
		a := f.newAction("remove_firewall", refs...)
		if idx >= 0 {
			t := t
			a.effect = func() {
				for i, x := range fw.AppliedTo {
					if x == t {
						fw.AppliedTo = append(fw.AppliedTo[:i], fw.AppliedTo[i+1:]...)
						return
					}
				}
			}
		}
		actions = append(actions, f.actionJSON(a))
	}
	f.settle()
	return reply{status: http.StatusCreated, body: map[string]any{"actions": actions}}
}

// maxFirewallsPerServer counts firewalls applied directly and through
// label selectors (spec A10).
const maxFirewallsPerServer = 5

// serversOf is every server the targets reach, directly or by selector,
// in ID order.
func (f *Fake) serversOf(targets []target) []int64 {
	var ids []int64
	for _, t := range targets {
		if t.Server != 0 {
			ids = append(ids, t.Server)
			continue
		}
		sel, err := parseSelector(t.Selector)
		if err != nil {
			continue
		}
		for id, s := range f.servers {
			if sel.matches(s.Labels) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// checkFirewallsPerServer refuses to apply firewall self (0: one being
// created) where a server would end up with more than five firewalls. The
// real error code is undocumented; resource_limit_exceeded (403) is the
// closest documented one.
func (f *Fake) checkFirewallsPerServer(self int64, targets []target) (reply, bool) {
	for _, id := range f.serversOf(targets) {
		n := 1
		for _, other := range f.firewalls {
			if other.ID != self && slices.Contains(f.serversOf(other.AppliedTo), id) {
				n++
			}
		}
		if n > maxFirewallsPerServer {
			return errReply(http.StatusForbidden, "resource_limit_exceeded",
				fmt.Sprintf("server with ID %d would have %d firewalls; at most %d can be applied to a server", id, n, maxFirewallsPerServer), nil), false
		}
	}
	return reply{}, true
}

func (f *Fake) matchedBySelector(fw *firewall, serverID int64) bool {
	s := f.servers[serverID]
	for _, t := range fw.AppliedTo {
		if t.Server == 0 {
			if sel, err := parseSelector(t.Selector); err == nil && sel.matches(s.Labels) {
				return true
			}
		}
	}
	return false
}

// --- actions ---

func (f *Fake) listActions(r *http.Request, q url.Values, keep func(*action) bool, byID bool) reply {
	var ids map[int64]bool
	if byID {
		ids = map[int64]bool{}
		for _, s := range q["id"] {
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return invalidInput("id", fmt.Sprintf("%q is not a valid ID", s))
			}
			ids[id] = true
		}
	}
	statuses := q["status"]
	var list []jsonAction
	for _, a := range f.actions {
		if !keep(a) || (ids != nil && !ids[a.ID]) {
			continue
		}
		j := f.actionJSON(a)
		if len(statuses) > 0 && !contains(statuses, j.Status) {
			continue
		}
		list = append(list, j)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	keys := map[string]func(a, b jsonAction) int{
		"id":       func(a, b jsonAction) int { return cmpInt(a.ID, b.ID) },
		"command":  func(a, b jsonAction) int { return strings.Compare(a.Command, b.Command) },
		"status":   func(a, b jsonAction) int { return strings.Compare(a.Status, b.Status) },
		"progress": func(a, b jsonAction) int { return cmpInt(int64(a.Progress), int64(b.Progress)) },
		"started":  func(a, b jsonAction) int { return strings.Compare(a.Started, b.Started) },
		"finished": func(a, b jsonAction) int { return strings.Compare(deref(a.Finished), deref(b.Finished)) },
	}
	if rep, ok := sortBy(list, q["sort"], keys); !ok {
		return rep
	}
	page, rep, ok := paginate(r, len(list))
	if !ok {
		return rep
	}
	out := append([]jsonAction{}, list[page.from:page.to]...)
	return reply{status: 200, body: map[string]any{"actions": out, "meta": page.meta()}, link: page.link}
}

func (f *Fake) getAction(idStr string, keep func(*action) bool) reply {
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil {
		return invalidInput("id", fmt.Sprintf("%q is not a valid ID", idStr))
	}
	a, ok := f.actions[id]
	if !ok || !keep(a) {
		return notFound(fmt.Sprintf("action with ID %d", id))
	}
	return reply{status: 200, body: map[string]any{"action": f.actionJSON(a)}}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// --- servers (just enough for apply_to and the CLI's name lookups) ---

func (f *Fake) serverJSON(s *server) map[string]any {
	fws := []map[string]any{}
	for _, id := range f.firewallsOf(s) {
		fws = append(fws, map[string]any{"id": id, "status": "applied"})
	}
	ip := fmt.Sprintf("203.0.113.%d", s.ID%250+1)
	return map[string]any{
		"id": s.ID, "name": s.Name, "status": "running", "created": timeString(s.Created),
		"labels": s.Labels,
		"public_net": map[string]any{
			"ipv4":         map[string]any{"id": s.ID, "ip": ip, "blocked": false, "dns_ptr": "static.example"},
			"ipv6":         nil,
			"floating_ips": []int64{},
			"firewalls":    fws,
		},
		"private_net": []any{}, "volumes": []int64{}, "load_balancers": []int64{},
		"included_traffic": 0, "outgoing_traffic": nil, "ingoing_traffic": nil,
		"backup_window": nil, "rescue_enabled": false, "locked": false, "iso": nil, "image": nil,
		"protection":        map[string]bool{"delete": false, "rebuild": false},
		"primary_disk_size": 20, "placement_group": nil,
	}
}

func (f *Fake) listServers(r *http.Request, q url.Values) reply {
	var sel selector
	if s := q.Get("label_selector"); s != "" {
		var err error
		if sel, err = parseSelector(s); err != nil {
			return invalidInput("label_selector", err.Error())
		}
	}
	var list []*server
	for _, s := range f.sortedServers() {
		if name := q.Get("name"); name != "" && s.Name != name {
			continue
		}
		if sel != nil && !sel.matches(s.Labels) {
			continue
		}
		list = append(list, s)
	}
	page, rep, ok := paginate(r, len(list))
	if !ok {
		return rep
	}
	out := []map[string]any{}
	for _, s := range list[page.from:page.to] {
		out = append(out, f.serverJSON(s))
	}
	return reply{status: 200, body: map[string]any{"servers": out, "meta": page.meta()}, link: page.link}
}

// --- sorting and pagination ---

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sortBy applies the repeatable sort parameter (key, key:asc, key:desc).
func sortBy[T any](list []T, sorts []string, keys map[string]func(a, b T) int) (reply, bool) {
	type order struct {
		cmp  func(a, b T) int
		desc bool
	}
	var orders []order
	for _, s := range sorts {
		key, dir, _ := strings.Cut(s, ":")
		cmp, ok := keys[key]
		if !ok || (dir != "" && dir != "asc" && dir != "desc") {
			return invalidInput("sort", fmt.Sprintf("%q is not a valid sort; use one of the fields, optionally with :asc or :desc", s)), false
		}
		orders = append(orders, order{cmp, dir == "desc"})
	}
	sort.SliceStable(list, func(i, j int) bool {
		for _, o := range orders {
			c := o.cmp(list[i], list[j])
			if o.desc {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		return false
	})
	return reply{}, true
}

type pageInfo struct {
	page, perPage, last, total, from, to int
	link                                 string
}

func (p pageInfo) meta() map[string]any {
	var prev, next any
	if p.page > 1 {
		prev = p.page - 1
	}
	if p.page < p.last {
		next = p.page + 1
	}
	return map[string]any{"pagination": map[string]any{
		"page": p.page, "per_page": p.perPage, "previous_page": prev, "next_page": next,
		"last_page": p.last, "total_entries": p.total,
	}}
}

// paginate reads page (from 1) and per_page (default 25, at most 50).
func paginate(r *http.Request, total int) (pageInfo, reply, bool) {
	q := r.URL.Query()
	p := pageInfo{page: 1, perPage: 25, total: total}
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, invalidInput("page", fmt.Sprintf("%q is not a page number (from 1)", s)), false
		}
		p.page = n
	}
	if s := q.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, invalidInput("per_page", fmt.Sprintf("%q is not a page size (1 to 50)", s)), false
		}
		p.perPage = min(n, 50)
	}
	p.last = max(1, (total+p.perPage-1)/p.perPage)
	p.from = min(total, (p.page-1)*p.perPage)
	p.to = min(total, p.from+p.perPage)

	pageURL := func(n int) string {
		u := *r.URL
		u.Scheme, u.Host = "http", r.Host
		v := u.Query()
		v.Set("page", strconv.Itoa(n))
		v.Set("per_page", strconv.Itoa(p.perPage))
		u.RawQuery = v.Encode()
		return u.String()
	}
	var links []string
	if p.page > 1 {
		links = append(links, fmt.Sprintf(`<%s>; rel="prev"`, pageURL(p.page-1)))
	}
	if p.page < p.last {
		links = append(links, fmt.Sprintf(`<%s>; rel="next"`, pageURL(p.page+1)))
	}
	links = append(links, fmt.Sprintf(`<%s>; rel="last"`, pageURL(p.last)))
	p.link = strings.Join(links, ", ")
	return p, reply{}, true
}
