package dofake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// recorder remembers the status a handler wrote, for the request log.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// ServeHTTP answers the API under /v2/ and the admin endpoints under
// /_dofake/. API requests pass, in order: bearer token check, injected
// faults, the hourly rate limit, then the endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_dofake/") {
		s.mux.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &recorder{ResponseWriter: w}

	s.mu.Lock()
	s.nextReq++
	reqID := fmt.Sprintf("dofake-%08d", s.nextReq)
	w.Header().Set("x-request-id", reqID)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	s.mu.Unlock()

	s.serveAPI(rec, r, reqID)

	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: rec.status, Body: body})
	s.mu.Unlock()
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, reqID string) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || (token != s.opts.Token && (s.opts.ReadOnlyToken == "" || token != s.opts.ReadOnlyToken)):
		writeError(w, reqID, &apiError{401, "unauthorized", "Unable to authenticate you."})
		return
	case token == s.opts.ReadOnlyToken && r.Method != http.MethodGet:
		writeError(w, reqID, &apiError{403, "forbidden", "You do not have access for the attempted action."})
		return
	}

	s.mu.Lock()
	exhausted := s.rateHeaders(w.Header())
	fault, faulty := s.takeFault(r)
	s.mu.Unlock()
	if faulty {
		s.writeFault(w, reqID, fault)
		return
	}
	if exhausted {
		writeError(w, reqID, &apiError{429, "too_many_requests", "API rate limit exceeded."})
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		writeError(w, reqID, errNotFound)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) writeFault(w http.ResponseWriter, reqID string, f Fault) {
	if f.Status == http.StatusTooManyRequests {
		if f.RetryAfter > 0 {
			w.Header().Set("retry-after", strconv.Itoa(f.RetryAfter))
		} else {
			w.Header().Set("ratelimit-remaining", "0")
			w.Header().Set("ratelimit-reset", fmt.Sprint(s.opts.Now().Add(time.Duration(f.ResetIn)*time.Second).Unix()))
		}
		writeError(w, reqID, &apiError{429, "too_many_requests", "API rate limit exceeded."})
		return
	}
	writeError(w, reqID, &apiError{f.Status, "server_error", "Server was unable to give you a response."})
}

func writeError(w http.ResponseWriter, reqID string, e *apiError) {
	writeJSON(w, e.status, map[string]string{"id": e.id, "message": e.message, "request_id": reqID})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// handle adapts an endpoint that returns (status, body, error) to the mux.
func (s *Server) handle(pattern string, fn func(r *http.Request) (int, any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		status, v, err := fn(r)
		var ae *apiError
		switch {
		case errors.As(err, &ae):
			writeError(w, w.Header().Get("x-request-id"), ae)
		case err != nil:
			writeError(w, w.Header().Get("x-request-id"), &apiError{500, "server_error", err.Error()})
		case status == http.StatusNoContent:
			w.WriteHeader(status)
		default:
			writeJSON(w, status, v)
		}
	})
}

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.handle("GET /v2/firewalls", s.listFirewalls)
	s.handle("POST /v2/firewalls", s.createFirewall)
	s.handle("GET /v2/firewalls/{id}", s.getFirewall)
	s.handle("PUT /v2/firewalls/{id}", s.updateFirewall)
	s.handle("DELETE /v2/firewalls/{id}", s.deleteFirewall)
	s.handle("POST /v2/firewalls/{id}/droplets", s.changeDroplets(true))
	s.handle("DELETE /v2/firewalls/{id}/droplets", s.changeDroplets(false))
	s.handle("POST /v2/firewalls/{id}/tags", s.changeTags(true))
	s.handle("DELETE /v2/firewalls/{id}/tags", s.changeTags(false))
	s.handle("POST /v2/firewalls/{id}/rules", s.changeRules(true))
	s.handle("DELETE /v2/firewalls/{id}/rules", s.changeRules(false))
	s.handle("GET /v2/droplets/{id}", s.getDroplet)
	s.handle("GET /v2/droplets/{id}/firewalls", s.listDropletFirewalls)
	s.handle("POST /v2/tags", s.createTag)
	s.handle("GET /v2/tags/{name}", s.getTag)
	s.adminRoutes()
}

// errNotFound is the API's 404 for any unknown resource or path.
var errNotFound = &apiError{404, "not_found", "The resource you were accessing could not be found."}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return &apiError{400, "bad_request", "error parsing request body: " + err.Error()}
	}
	return nil
}

// page slices a collection per page/per_page and builds links and meta the
// way the API does: absolute URLs, only the meaningful keys (spec B6).
func page[T any](r *http.Request, key string, items []T) (map[string]any, error) {
	q := r.URL.Query()
	pg, per := 1, defaultPerPge
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, &apiError{400, "bad_request", fmt.Sprintf("page %q is not a number", v)}
		}
		pg = max(n, 1)
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, &apiError{400, "bad_request", fmt.Sprintf("per_page %q is not a number", v)}
		}
		per = min(max(n, 1), maxPerPage)
	}
	last := max((len(items)+per-1)/per, 1)
	lo, hi := min((pg-1)*per, len(items)), min(pg*per, len(items))
	link := func(n int) string {
		return fmt.Sprintf("http://%s%s?page=%d&per_page=%d", r.Host, r.URL.Path, n, per)
	}
	pages := map[string]string{}
	if pg > 1 {
		pages["first"], pages["prev"] = link(1), link(min(pg-1, last))
	}
	if pg < last {
		pages["next"], pages["last"] = link(pg+1), link(last)
	}
	links := map[string]any{}
	if len(pages) > 0 {
		links["pages"] = pages
	}
	return map[string]any{key: slices.Clone(items[lo:hi]), "links": links, "meta": map[string]int{"total": len(items)}}, nil
}

// view returns what a GET shows, counting down a slow status.
func (s *Server) view(st *stored) Firewall {
	if st.waitReads > 0 {
		st.waitReads--
	} else if st.fw.Status == "waiting" {
		st.fw.Status, st.fw.PendingChanges = "succeeded", []PendingChange{}
	}
	return st.fw.clone()
}

// touch marks a firewall as being applied: "waiting" with pending changes.
func (s *Server) touch(st *stored) {
	st.fw.Status = "waiting"
	st.fw.PendingChanges = []PendingChange{}
	for _, id := range st.fw.DropletIDs {
		st.fw.PendingChanges = append(st.fw.PendingChanges, PendingChange{DropletID: id, Status: "waiting"})
	}
	st.waitReads = s.slowReads
}

func (s *Server) listFirewalls(r *http.Request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]Firewall, 0, len(s.order))
	for _, id := range s.order {
		all = append(all, s.view(s.firewalls[id]))
	}
	body, err := page(r, "firewalls", all)
	return http.StatusOK, body, err
}

func (s *Server) lookup(r *http.Request) (*stored, error) {
	st, ok := s.firewalls[r.PathValue("id")]
	if !ok {
		return nil, errNotFound
	}
	return st, nil
}

func (s *Server) getFirewall(r *http.Request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.lookup(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"firewall": s.view(st)}, nil
}

// validate checks a create/update body against the API's rules and returns
// the firewall it describes (without id, status and timestamps).
func (s *Server) validate(req firewallRequest, selfID string) (Firewall, error) {
	var fw Firewall
	if req.Name == nil || *req.Name == "" {
		return fw, unprocessable("You must specify a name.")
	}
	if !nameRE.MatchString(*req.Name) {
		return fw, unprocessable("Name %q is invalid: use letters, digits, dots and dashes, starting with a letter or digit.", *req.Name)
	}
	for id, st := range s.firewalls {
		if id != selfID && st.fw.Name == *req.Name {
			return fw, &apiError{409, "conflict", "duplicate name"}
		}
	}
	fw.Name = *req.Name
	if len(req.InboundRules)+len(req.OutboundRules) == 0 {
		return fw, unprocessable("You must specify at least one inbound or outbound rule.")
	}
	in, out, err := s.normalizeRules(req.InboundRules, req.OutboundRules)
	if err != nil {
		return fw, err
	}
	fw.InboundRules, fw.OutboundRules = in, out
	if err := s.checkDroplets(req.DropletIDs); err != nil {
		return fw, err
	}
	if err := s.checkTags(req.Tags); err != nil {
		return fw, err
	}
	fw.DropletIDs = dedupe(req.DropletIDs)
	fw.Tags = dedupe(req.Tags)
	if len(fw.DropletIDs) > maxDroplets {
		return fw, unprocessable("A firewall may be applied to at most %d droplets directly; use tags for more.", maxDroplets)
	}
	if len(fw.Tags) > maxTags {
		return fw, unprocessable("A firewall may have at most %d tags.", maxTags)
	}
	return fw, nil
}

// normalizeRules validates rules as the API does and returns them as it
// stores them. The caller holds s.mu: targets naming a droplet or tag that
// does not exist are refused with 422, as the real API does.
func (s *Server) normalizeRules(inbound []InboundRule, outbound []OutboundRule) ([]InboundRule, []OutboundRule, error) {
	if len(inbound)+len(outbound) > maxRules {
		return nil, nil, unprocessable("A firewall may have at most %d rules.", maxRules)
	}
	in := make([]InboundRule, 0, len(inbound))
	for _, rule := range inbound {
		ports, err := normalizeRule("inbound", rule.Protocol, rule.Ports, rule.Sources)
		if err != nil {
			return nil, nil, err
		}
		if err := s.checkRuleTargets("sources", rule.Sources); err != nil {
			return nil, nil, err
		}
		action, err := normalizeAction("inbound", rule.Action)
		if err != nil {
			return nil, nil, err
		}
		in = append(in, InboundRule{Protocol: rule.Protocol, Ports: ports, Sources: rule.Sources.clone(), Action: action})
	}
	out := make([]OutboundRule, 0, len(outbound))
	for _, rule := range outbound {
		ports, err := normalizeRule("outbound", rule.Protocol, rule.Ports, rule.Destinations)
		if err != nil {
			return nil, nil, err
		}
		if err := s.checkRuleTargets("destinations", rule.Destinations); err != nil {
			return nil, nil, err
		}
		action, err := normalizeAction("outbound", rule.Action)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, OutboundRule{Protocol: rule.Protocol, Ports: ports, Destinations: rule.Destinations.clone(), Action: action})
	}
	return in, out, nil
}

// checkRuleTargets refuses rule targets naming droplets or tags the account
// does not have (422, as the API answers).
func (s *Server) checkRuleTargets(kind string, t *Targets) error {
	if t == nil {
		return nil
	}
	for _, id := range t.DropletIDs {
		if _, ok := s.droplets[id]; !ok {
			return unprocessable("droplet %d in %s does not exist.", id, kind)
		}
	}
	for _, tag := range t.Tags {
		if !s.tags[tag] {
			return unprocessable("tag %q in %s does not exist; create it first.", tag, kind)
		}
	}
	return nil
}

func (s *Server) checkDroplets(ids []int) error {
	for _, id := range ids {
		if _, ok := s.droplets[id]; !ok {
			return unprocessable("droplet %d does not exist.", id)
		}
	}
	return nil
}

func (s *Server) checkTags(tags []string) error {
	for _, t := range tags {
		if !s.tags[t] {
			return unprocessable("tag %q does not exist; create it first.", t)
		}
	}
	return nil
}

func dedupe[T comparable](in []T) []T {
	out := []T{}
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func (s *Server) createFirewall(r *http.Request) (int, any, error) {
	var req firewallRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fw, err := s.validate(req, "")
	if err != nil {
		return 0, nil, err
	}
	fw.ID = newUUID()
	fw.CreatedAt = s.opts.Now().UTC().Format(time.RFC3339)
	st := &stored{fw: fw}
	s.touch(st)
	s.firewalls[fw.ID] = st
	s.order = append(s.order, fw.ID)
	return http.StatusAccepted, map[string]any{"firewall": st.fw.clone()}, nil
}

func (s *Server) updateFirewall(r *http.Request) (int, any, error) {
	var req firewallRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.lookup(r)
	if err != nil {
		return 0, nil, err
	}
	fw, err := s.validate(req, st.fw.ID)
	if err != nil {
		return 0, nil, err
	}
	fw.ID, fw.CreatedAt = st.fw.ID, st.fw.CreatedAt
	st.fw = fw
	s.touch(st)
	return http.StatusOK, map[string]any{"firewall": st.fw.clone()}, nil
}

func (s *Server) deleteFirewall(r *http.Request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.lookup(r)
	if err != nil {
		return 0, nil, err
	}
	delete(s.firewalls, st.fw.ID)
	s.order = slices.DeleteFunc(s.order, func(id string) bool { return id == st.fw.ID })
	return http.StatusNoContent, nil, nil
}

// listChange describes one of a firewall's lists that POST adds to and
// DELETE removes from: the field, the check on added items and the cap,
// with the API's messages.
type listChange[T comparable] struct {
	field   func(*Firewall) *[]T
	check   func([]T) error
	max     int
	empty   string // message when the request names none
	tooMany string // message when the cap is passed; %d is the cap
}

// changeList adds or removes items on the list of the firewall r names,
// keeping it free of duplicates and within its cap.
func changeList[T comparable](s *Server, r *http.Request, add bool, items []T, c listChange[T]) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.lookup(r)
	if err != nil {
		return 0, nil, err
	}
	if len(items) == 0 {
		return 0, nil, unprocessable("%s", c.empty)
	}
	list := c.field(&st.fw)
	have := slices.Clone(*list)
	if add {
		if err := c.check(items); err != nil {
			return 0, nil, err
		}
		have = dedupe(append(have, items...))
		if len(have) > c.max {
			return 0, nil, unprocessable(c.tooMany, c.max)
		}
	} else {
		have = slices.DeleteFunc(have, func(v T) bool { return slices.Contains(items, v) })
	}
	*list = have
	s.touch(st)
	return http.StatusNoContent, nil, nil
}

func (s *Server) changeDroplets(add bool) func(*http.Request) (int, any, error) {
	return func(r *http.Request) (int, any, error) {
		var req struct {
			DropletIDs []int `json:"droplet_ids"`
		}
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		return changeList(s, r, add, req.DropletIDs, listChange[int]{
			field: func(fw *Firewall) *[]int { return &fw.DropletIDs },
			check: s.checkDroplets, max: maxDroplets,
			empty:   "You must specify at least one droplet id.",
			tooMany: "A firewall may be applied to at most %d droplets directly; use tags for more.",
		})
	}
}

func (s *Server) changeTags(add bool) func(*http.Request) (int, any, error) {
	return func(r *http.Request) (int, any, error) {
		var req struct {
			Tags []string `json:"tags"`
		}
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		return changeList(s, r, add, req.Tags, listChange[string]{
			field: func(fw *Firewall) *[]string { return &fw.Tags },
			check: s.checkTags, max: maxTags,
			empty:   "You must specify at least one tag.",
			tooMany: "A firewall may have at most %d tags.",
		})
	}
}

// changeRules adds or removes rules. Removal matches protocol, ports (as
// stored) and targets compared as sets; the real matching is undocumented
// (spec B2).
func (s *Server) changeRules(add bool) func(*http.Request) (int, any, error) {
	return func(r *http.Request) (int, any, error) {
		var req rulesRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		if len(req.InboundRules)+len(req.OutboundRules) == 0 {
			return 0, nil, unprocessable("You must specify at least one inbound or outbound rule.")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		in, out, err := s.normalizeRules(req.InboundRules, req.OutboundRules)
		if err != nil {
			return 0, nil, err
		}
		st, err := s.lookup(r)
		if err != nil {
			return 0, nil, err
		}
		if add {
			if len(st.fw.InboundRules)+len(st.fw.OutboundRules)+len(in)+len(out) > maxRules {
				return 0, nil, unprocessable("A firewall may have at most %d rules.", maxRules)
			}
			st.fw.InboundRules = append(st.fw.InboundRules, in...)
			st.fw.OutboundRules = append(st.fw.OutboundRules, out...)
		} else {
			st.fw.InboundRules = slices.DeleteFunc(st.fw.InboundRules, func(have InboundRule) bool {
				return slices.ContainsFunc(in, func(del InboundRule) bool {
					return have.Protocol == del.Protocol && have.Ports == del.Ports && have.Action == del.Action && sameTargets(have.Sources, del.Sources)
				})
			})
			st.fw.OutboundRules = slices.DeleteFunc(st.fw.OutboundRules, func(have OutboundRule) bool {
				return slices.ContainsFunc(out, func(del OutboundRule) bool {
					return have.Protocol == del.Protocol && have.Ports == del.Ports && have.Action == del.Action && sameTargets(have.Destinations, del.Destinations)
				})
			})
		}
		s.touch(st)
		return http.StatusNoContent, nil, nil
	}
}

// droplet is the minimal droplet object: enough for clients that look one
// up before attaching a firewall.
func (s *Server) droplet(id int) map[string]any {
	tags := []string{}
	return map[string]any{"id": id, "name": s.droplets[id], "status": "active", "tags": tags,
		"networks": map[string]any{"v4": []any{}, "v6": []any{}}}
}

func (s *Server) dropletID(r *http.Request) (int, error) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if _, ok := s.droplets[id]; err != nil || !ok {
		return 0, errNotFound
	}
	return id, nil
}

func (s *Server) getDroplet(r *http.Request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.dropletID(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"droplet": s.droplet(id)}, nil
}

func (s *Server) listDropletFirewalls(r *http.Request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.dropletID(r)
	if err != nil {
		return 0, nil, err
	}
	var hits []Firewall
	for _, fid := range s.order {
		if st := s.firewalls[fid]; slices.Contains(st.fw.DropletIDs, id) {
			hits = append(hits, s.view(st))
		}
	}
	body, err := page(r, "firewalls", hits)
	return http.StatusOK, body, err
}

func (s *Server) createTag(r *http.Request) (int, any, error) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if !tagNameRE.MatchString(req.Name) {
		return 0, nil, unprocessable("tag name %q is invalid: use up to 255 letters, digits, colons, dashes and underscores.", req.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tags[req.Name] = true
	return http.StatusCreated, map[string]any{"tag": tagBody(req.Name)}, nil
}

func (s *Server) getTag(r *http.Request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("name")
	if !s.tags[name] {
		return 0, nil, errNotFound
	}
	return http.StatusOK, map[string]any{"tag": tagBody(name)}, nil
}

func tagBody(name string) map[string]any {
	return map[string]any{"name": name, "resources": map[string]any{"count": 0}}
}
