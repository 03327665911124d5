package hcloudfake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
)

func start(t *testing.T, opts Options) (*Running, *hcloud.Client) {
	t.Helper()
	r, err := Start(New(opts), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c := hcloud.NewClient(hcloud.WithEndpoint(r.Endpoint), hcloud.WithToken(r.Token()),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(10 * time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(10 * time.Millisecond), MaxRetries: 3}))
	return r, c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func cidrs(s ...string) []net.IPNet {
	var out []net.IPNet
	for _, x := range s {
		_, n, err := net.ParseCIDR(x)
		if err != nil {
			panic(err)
		}
		out = append(out, *n)
	}
	return out
}

// rawGet fetches a /v1 path with the token and returns headers and decoded JSON.
func rawGet(t *testing.T, r *Running, path string) (http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.Endpoint+path, nil)
	req.Header.Set("Authorization", "Bearer "+r.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
	return resp.Header, m
}

func TestHcloudFakeCreateGetShapesAndActions(t *testing.T) {
	r, c := start(t, Options{ActionDelay: 150 * time.Millisecond})
	web := r.AddServer("web1", map[string]string{"role": "web"})
	db := r.AddServer("db1", map[string]string{"role": "db"})
	res, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{
		Name:   "mesh",
		Labels: map[string]string{"app": "meshspan"},
		Rules: []hcloud.FirewallRule{
			{Direction: hcloud.FirewallRuleDirectionIn, Protocol: hcloud.FirewallRuleProtocolUDP, Port: hcloud.Ptr("51820"), SourceIPs: cidrs("0.0.0.0/0", "::0/0")},
			{Direction: hcloud.FirewallRuleDirectionIn, Protocol: hcloud.FirewallRuleProtocolICMP, SourceIPs: cidrs("100.64.0.0/10")},
			{Direction: hcloud.FirewallRuleDirectionOut, Protocol: hcloud.FirewallRuleProtocolTCP, Port: hcloud.Ptr("any"), DestinationIPs: cidrs("2001:db8::/32")},
		},
		ApplyTo: []hcloud.FirewallResource{
			{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: web}},
			{Type: hcloud.FirewallResourceTypeLabelSelector, LabelSelector: &hcloud.FirewallResourceLabelSelector{Selector: "role in (db,cache)"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Actions) != 3 || res.Actions[0].Status != hcloud.ActionStatusRunning {
		t.Fatalf("create actions = %+v, want set_firewall_rules and two apply_firewall, running", res.Actions)
	}
	start := time.Now()
	if err := c.Action.WaitFor(ctx(t), res.Actions...); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("actions finished after %v, before the 150ms delay", el)
	}
	polled := false
	for _, q := range r.Requests() {
		if q.Path == "/actions" && strings.Contains(q.Query, "id=") {
			polled = true
		}
	}
	if !polled {
		t.Fatal("hcloud-go did not poll GET /actions?id=...")
	}

	fw, _, err := c.Firewall.GetByID(ctx(t), res.Firewall.ID)
	if err != nil || fw == nil {
		t.Fatalf("GetByID: %v %v", fw, err)
	}
	if got := fw.Rules[0].SourceIPs[1].String(); got != "::/0" {
		t.Errorf("IPv6 not canonicalised: %s", got)
	}
	if len(fw.AppliedTo) != 2 || fw.AppliedTo[1].LabelSelector.Selector != "role in (db,cache)" {
		t.Fatalf("applied_to = %+v", fw.AppliedTo)
	}
	if m := fw.AppliedTo[1].AppliedToResources; len(m) != 1 || m[0].Server.ID != db {
		t.Fatalf("selector matched %+v, want server %d", m, db)
	}

	_, raw := rawGet(t, r, "/firewalls/"+strconv.FormatInt(fw.ID, 10))
	rules := raw["firewall"].(map[string]any)["rules"].([]any)
	icmp := rules[1].(map[string]any)
	for _, k := range []string{"direction", "protocol", "port", "source_ips", "destination_ips", "description"} {
		if _, ok := icmp[k]; !ok {
			t.Errorf("rule key %q missing in %v", k, icmp)
		}
	}
	if icmp["port"] != nil || fmt.Sprint(icmp["destination_ips"]) != "[]" {
		t.Errorf("icmp rule = %v, want port null and destination_ips []", icmp)
	}

	// The server shows the firewall, and the action lists filter by firewall.
	srv, _, err := c.Server.GetByID(ctx(t), db)
	if err != nil || len(srv.PublicNet.Firewalls) != 1 || srv.PublicNet.Firewalls[0].Firewall.ID != fw.ID {
		t.Fatalf("server firewalls = %+v, %v", srv, err)
	}
	acts, err := c.Firewall.Action.AllFor(ctx(t), fw, hcloud.ActionListOpts{})
	if err != nil || len(acts) != 3 {
		t.Fatalf("firewall actions = %d, %v", len(acts), err)
	}
	if _, _, err := c.Firewall.Action.GetByID(ctx(t), acts[0].ID); err != nil {
		t.Fatal(err)
	}
}

func TestHcloudFakeErrors(t *testing.T) {
	r, c := start(t, Options{ReadOnlyToken: "ro"})
	srv := r.AddServer("s1", nil)
	fw, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "a",
		ApplyTo: []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: srv}}}})
	if err != nil {
		t.Fatal(err)
	}

	_, _, err = c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "a"})
	if !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Errorf("duplicate name: %v", err)
	}

	_, _, err = c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "b", Rules: []hcloud.FirewallRule{
		{Direction: hcloud.FirewallRuleDirectionIn, Protocol: hcloud.FirewallRuleProtocolTCP, SourceIPs: cidrs("0.0.0.0/0")}}})
	var herr hcloud.Error
	if !errors.As(err, &herr) || herr.Code != hcloud.ErrorCodeInvalidInput {
		t.Fatalf("tcp without port: %v", err)
	}
	det, ok := herr.Details.(hcloud.ErrorDetailsInvalidInput)
	if !ok || det.Fields[0].Name != "rules" || !strings.Contains(det.Fields[0].Messages[0], "port is required") {
		t.Errorf("details = %+v", herr.Details)
	}

	if _, err := c.Firewall.Delete(ctx(t), fw.Firewall); !hcloud.IsError(err, hcloud.ErrorCodeResourceInUse) {
		t.Errorf("delete while applied: %v", err)
	}
	_, _, err = c.Firewall.ApplyResources(ctx(t), fw.Firewall, []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: srv}}})
	if !hcloud.IsError(err, hcloud.ErrorCodeFirewallAlreadyApplied) {
		t.Errorf("apply twice: %v", err)
	}
	_, _, err = c.Firewall.ApplyResources(ctx(t), fw.Firewall, []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: 999999}}})
	if !hcloud.IsError(err, hcloud.ErrorCodeFirewallResourceNotFound) {
		t.Errorf("apply to missing server: %v", err)
	}
	// A read-back applied_to (with applied_to_resources) is accepted by remove_from.
	got, _, _ := c.Firewall.GetByID(ctx(t), fw.Firewall.ID)
	acts, _, err := c.Firewall.RemoveResources(ctx(t), got, got.AppliedTo)
	if err != nil || c.Action.WaitFor(ctx(t), acts...) != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := c.Firewall.Delete(ctx(t), got); err != nil {
		t.Fatal(err)
	}
	if gone, _, err := c.Firewall.GetByID(ctx(t), got.ID); gone != nil || err != nil {
		t.Fatalf("after delete: %v %v", gone, err)
	}

	bad := hcloud.NewClient(hcloud.WithEndpoint(r.Endpoint), hcloud.WithToken("wrong"))
	if _, err := bad.Firewall.All(ctx(t)); !hcloud.IsError(err, hcloud.ErrorCodeUnauthorized) {
		t.Errorf("wrong token: %v", err)
	}
	ro := hcloud.NewClient(hcloud.WithEndpoint(r.Endpoint), hcloud.WithToken("ro"))
	if _, err := ro.Firewall.All(ctx(t)); err != nil {
		t.Errorf("read-only token, GET: %v", err)
	}
	// The API answers a write with a read-only token 401 token_readonly
	// (hcloud-go's ErrorCodeTokenReadonly is a deprecated alias of forbidden).
	_, resp, err := ro.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "x"})
	if !hcloud.IsError(err, "token_readonly") || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("read-only token, POST: %v (response %v)", err, resp)
	}
}

// An unsupported method on a known path is 405 method_not_allowed; an
// unknown path stays 404 not_found.
func TestHcloudFakeMethodNotAllowed(t *testing.T) {
	r, c := start(t, Options{})
	fw, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodDelete, "/firewalls", 405, "method_not_allowed"},
		{http.MethodPatch, fmt.Sprintf("/firewalls/%d", fw.Firewall.ID), 405, "method_not_allowed"},
		{http.MethodGet, fmt.Sprintf("/firewalls/%d/actions/set_rules", fw.Firewall.ID), 405, "method_not_allowed"},
		{http.MethodPut, fmt.Sprintf("/firewalls/%d/actions/set_rules", fw.Firewall.ID), 405, "method_not_allowed"},
		{http.MethodPost, "/actions", 405, "method_not_allowed"},
		{http.MethodGet, "/nothing", 404, "not_found"},
	} {
		req, _ := http.NewRequest(tc.method, r.Endpoint+tc.path, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+r.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.status || body.Error.Code != tc.code {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body.Error.Code, tc.status, tc.code)
		}
	}
}

// set_rules returns set_firewall_rules plus one apply_firewall per server
// the firewall is applied to, directly or by selector.
func TestHcloudFakeSetRulesActions(t *testing.T) {
	r, c := start(t, Options{})
	s1 := r.AddServer("a", nil)
	r.AddServer("b", map[string]string{"role": "web"})
	r.AddServer("c", map[string]string{"role": "web"})
	fw, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "r", ApplyTo: []hcloud.FirewallResource{
		{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: s1}},
		{Type: hcloud.FirewallResourceTypeLabelSelector, LabelSelector: &hcloud.FirewallResourceLabelSelector{Selector: "role=web"}},
	}})
	if err != nil || c.Action.WaitFor(ctx(t), fw.Actions...) != nil {
		t.Fatal(err)
	}
	acts, _, err := c.Firewall.SetRules(ctx(t), fw.Firewall, hcloud.FirewallSetRulesOpts{Rules: []hcloud.FirewallRule{}})
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, a := range acts {
		cmds = append(cmds, a.Command)
	}
	want := []string{"set_firewall_rules", "apply_firewall", "apply_firewall", "apply_firewall"}
	if !slices.Equal(cmds, want) {
		t.Fatalf("set_rules actions %v, want %v", cmds, want)
	}
	if err := c.Action.WaitFor(ctx(t), acts...); err != nil {
		t.Fatal(err)
	}
}

// A server takes at most five firewalls, selector-applied ones included.
func TestHcloudFakeFirewallsPerServer(t *testing.T) {
	r, c := start(t, Options{})
	s := r.AddServer("busy", map[string]string{"role": "web"})
	onServer := []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: s}}}
	bySelector := []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeLabelSelector, LabelSelector: &hcloud.FirewallResourceLabelSelector{Selector: "role=web"}}}
	for i := range 5 {
		to := onServer
		if i%2 == 1 {
			to = bySelector
		}
		if _, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: fmt.Sprint("fw", i), ApplyTo: to}); err != nil {
			t.Fatalf("firewall %d: %v", i, err)
		}
	}
	_, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "sixth", ApplyTo: bySelector})
	if !hcloud.IsError(err, hcloud.ErrorCodeResourceLimitExceeded) {
		t.Fatalf("sixth firewall on a server by selector: %v; want resource_limit_exceeded", err)
	}
	sixth, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "sixth"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Firewall.ApplyResources(ctx(t), sixth.Firewall, onServer); !hcloud.IsError(err, hcloud.ErrorCodeResourceLimitExceeded) {
		t.Fatalf("sixth firewall applied to the server: %v; want resource_limit_exceeded", err)
	}
}

func TestHcloudFakePaginationAndSelectors(t *testing.T) {
	r, c := start(t, Options{})
	for i := range 60 {
		env := "dev"
		if i%3 == 0 {
			env = "prod"
		}
		if _, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: fmt.Sprintf("fw-%02d", i), Labels: map[string]string{"env": env}}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := c.Firewall.All(ctx(t))
	if err != nil || len(all) != 60 {
		t.Fatalf("All = %d, %v", len(all), err)
	}
	prod, err := c.Firewall.AllWithOpts(ctx(t), hcloud.FirewallListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "env=prod"}})
	if err != nil || len(prod) != 20 {
		t.Fatalf("env=prod = %d, %v", len(prod), err)
	}
	byName, _, err := c.Firewall.GetByName(ctx(t), "fw-42")
	if err != nil || byName == nil || byName.Name != "fw-42" {
		t.Fatalf("GetByName: %v %v", byName, err)
	}

	h, raw := rawGet(t, r, "/firewalls?page=2&per_page=100&sort=name:desc")
	p := raw["meta"].(map[string]any)["pagination"].(map[string]any)
	if p["per_page"].(float64) != 50 || p["last_page"].(float64) != 2 || p["next_page"] != nil || p["previous_page"].(float64) != 1 {
		t.Errorf("pagination = %v", p)
	}
	if fws := raw["firewalls"].([]any); len(fws) != 10 || fws[0].(map[string]any)["name"] != "fw-09" {
		t.Errorf("page 2 sorted by name desc starts with %v", fws[0].(map[string]any)["name"])
	}
	if !strings.Contains(h.Get("Link"), `rel="prev"`) || !strings.Contains(h.Get("Link"), `rel="last"`) {
		t.Errorf("Link = %q", h.Get("Link"))
	}
	if h.Get("RateLimit-Limit") != "3600" || h.Get("RateLimit-Remaining") == "" || h.Get("RateLimit-Reset") == "" {
		t.Errorf("rate limit headers: %v", h)
	}
}

func TestHcloudFakeFaults(t *testing.T) {
	r, c := start(t, Options{})
	r.Inject(Fault{Status: 429, Count: 2, Method: "POST", Path: "/firewalls"})
	if _, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "retried"}); err != nil {
		t.Fatalf("hcloud-go should retry 429s: %v", err)
	}
	n429 := 0
	for _, q := range r.Requests() {
		if q.Status == 429 {
			n429++
		}
	}
	if n429 != 2 {
		t.Errorf("saw %d 429s, want 2", n429)
	}

	r.Inject(Fault{Status: 500, Count: 1})
	if _, err := c.Firewall.All(ctx(t)); !hcloud.IsError(err, hcloud.ErrorCodeServerError) {
		t.Errorf("500: %v", err)
	}

	r.FailActions(1)
	res, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "failing"})
	if err != nil {
		t.Fatal(err)
	}
	var aerr hcloud.ActionError
	if err := c.Action.WaitFor(ctx(t), res.Actions...); !errors.As(err, &aerr) {
		t.Errorf("failed action: %v", err)
	}

	// A real rate limit: a bucket of 3 runs dry.
	r2, _ := start(t, Options{RateLimit: 3})
	c2 := hcloud.NewClient(hcloud.WithEndpoint(r2.Endpoint), hcloud.WithToken(r2.Token()), hcloud.WithRetryOpts(hcloud.RetryOpts{MaxRetries: 0}))
	var last error
	for range 5 {
		_, last = c2.Firewall.All(ctx(t))
	}
	if !hcloud.IsError(last, hcloud.ErrorCodeRateLimitExceeded) {
		t.Errorf("exhausted bucket: %v", last)
	}
}

func TestHcloudFakeAdminEndpoints(t *testing.T) {
	r, c := start(t, Options{})
	post := func(path, body string) {
		resp, err := http.Post("http://"+strings.TrimSuffix(strings.TrimPrefix(r.Endpoint, "http://"), "/v1")+path, "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode >= 300 {
			t.Fatalf("POST %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	post("/_admin/servers", `{"name":"n1","labels":{"pool":"a"}}`)
	post("/_admin/faults", `{"status":500,"count":1,"path":"/servers"}`)
	if _, err := c.Server.All(ctx(t)); !hcloud.IsError(err, hcloud.ErrorCodeServerError) {
		t.Fatalf("injected 500 via admin: %v", err)
	}
	srvs, err := c.Server.AllWithOpts(ctx(t), hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "pool=a"}})
	if err != nil || len(srvs) != 1 || srvs[0].Name != "n1" {
		t.Fatalf("servers = %v, %v", srvs, err)
	}
}

func TestHcloudFakeSelectorParse(t *testing.T) {
	labels := map[string]string{"env": "prod", "tier": "web"}
	cases := map[string]bool{
		"env=prod": true, "env==prod": true, "env!=prod": false, "env": true, "!env": false,
		"env=prod,tier=web": true, "env in (dev,prod)": true, "tier notin (web)": false, "missing!=x": true,
	}
	for s, want := range cases {
		sel, err := parseSelector(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := sel.matches(labels); got != want {
			t.Errorf("%q matches = %v, want %v", s, got, want)
		}
	}
	for _, bad := range []string{"", "a,,b", "env in dev", "=x"} {
		if _, err := parseSelector(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A firewall stays applied, and cannot be deleted, until its remove_firewall
// action has succeeded.
func TestHcloudFakeRemovalSettlesWithAction(t *testing.T) {
	r, c := start(t, Options{ActionDelay: 200 * time.Millisecond})
	srv := r.AddServer("s1", nil)
	res, _, err := c.Firewall.Create(ctx(t), hcloud.FirewallCreateOpts{Name: "a",
		ApplyTo: []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: srv}}}})
	if err != nil || c.Action.WaitFor(ctx(t), res.Actions...) != nil {
		t.Fatal(err)
	}
	acts, _, err := c.Firewall.RemoveResources(ctx(t), res.Firewall, []hcloud.FirewallResource{{Type: hcloud.FirewallResourceTypeServer, Server: &hcloud.FirewallResourceServer{ID: srv}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Firewall.Delete(ctx(t), res.Firewall); !hcloud.IsError(err, hcloud.ErrorCodeResourceInUse) {
		t.Fatalf("delete while removal runs: %v", err)
	}
	if err := c.Action.WaitFor(ctx(t), acts...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Firewall.Delete(ctx(t), res.Firewall); err != nil {
		t.Fatalf("delete after removal: %v", err)
	}
}
