package dofake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"golang.org/x/oauth2"
)

const token = "dop_v1_test"

// start serves a fresh stand-in on loopback and returns it with a godo
// client configured like a user would: oauth2 transport, base URL override.
func start(t *testing.T, opts Options, godoOpts ...godo.ClientOpt) (*Server, *godo.Client, *httptest.Server) {
	t.Helper()
	if opts.Token == "" {
		opts.Token = token
	}
	srv := New(opts)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return srv, client(t, ts.URL, opts.Token, godoOpts...), ts
}

func client(t *testing.T, url, tok string, opts ...godo.ClientOpt) *godo.Client {
	t.Helper()
	hc := oauth2.NewClient(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}))
	c, err := godo.New(hc, append([]godo.ClientOpt{godo.SetBaseURL(url)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func anywhere() *godo.Sources { return &godo.Sources{Addresses: []string{"0.0.0.0/0", "::/0"}} }

func wgRequest(name string) *godo.FirewallRequest {
	return &godo.FirewallRequest{
		Name:         name,
		InboundRules: []godo.InboundRule{{Protocol: "udp", PortRange: "51820", Sources: anywhere()}},
		OutboundRules: []godo.OutboundRule{
			{Protocol: "tcp", PortRange: "all", Destinations: &godo.Destinations{Addresses: []string{"0.0.0.0/0", "::/0"}}},
			{Protocol: "icmp", Destinations: &godo.Destinations{Addresses: []string{"0.0.0.0/0", "::/0"}}},
		},
	}
}

func statusOf(err error) int {
	var er *godo.ErrorResponse
	if errors.As(err, &er) {
		return er.Response.StatusCode
	}
	return 0
}

func TestDigitalOceanFakeCreateGetShapes(t *testing.T) {
	srv, c, ts := start(t, Options{})
	srv.AddDroplet(101, "web-1")
	srv.AddTag("mesh")
	ctx := context.Background()
	req := wgRequest("mesh-fw")
	req.DropletIDs, req.Tags = []int{101}, []string{"mesh"}
	fw, resp, err := c.Firewalls.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || fw.Status != "waiting" || len(fw.ID) != 36 {
		t.Fatalf("create: status %d, firewall %+v; want 202, waiting, uuid", resp.StatusCode, fw)
	}
	if len(fw.PendingChanges) != 1 || fw.PendingChanges[0].DropletID != 101 {
		t.Fatalf("pending changes %+v, want droplet 101 waiting", fw.PendingChanges)
	}
	got, _, err := c.Firewalls.Get(ctx, fw.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "succeeded" || got.OutboundRules[0].PortRange != "0" || got.OutboundRules[1].PortRange != "0" {
		t.Fatalf("get: %+v; want succeeded and ports \"0\" for all and icmp", got)
	}
	if got.InboundRules[0].PortRange != "51820" || !slices.Equal(got.DropletIDs, []int{101}) || !slices.Equal(got.Tags, []string{"mesh"}) {
		t.Fatalf("get: %+v", got)
	}
	if _, err := time.Parse(time.RFC3339, got.Created); err != nil {
		t.Fatalf("created_at %q: %v", got.Created, err)
	}

	// Raw shape: sources/destinations objects on every rule, rate headers.
	hreq, _ := http.NewRequest(http.MethodGet, ts.URL+"/v2/firewalls/"+fw.ID, nil)
	hreq.Header.Set("Authorization", "Bearer "+token)
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer hresp.Body.Close()
	for _, h := range []string{"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-request-id"} {
		if hresp.Header.Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
	var raw struct {
		Firewall struct {
			Inbound  []map[string]json.RawMessage `json:"inbound_rules"`
			Outbound []map[string]json.RawMessage `json:"outbound_rules"`
		} `json:"firewall"`
	}
	if err := json.NewDecoder(hresp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, r := range raw.Firewall.Inbound {
		if len(r["sources"]) == 0 || string(r["sources"]) == "null" {
			t.Errorf("inbound rule without sources object: %v", r)
		}
	}
	for _, r := range raw.Firewall.Outbound {
		if len(r["destinations"]) == 0 || string(r["destinations"]) == "null" {
			t.Errorf("outbound rule without destinations object: %v", r)
		}
	}
}

func TestDigitalOceanFakeErrors(t *testing.T) {
	srv, c, ts := start(t, Options{ReadOnlyToken: "ro"})
	ctx := context.Background()
	fw, _, err := c.Firewalls.Create(ctx, wgRequest("taken"))
	if err != nil {
		t.Fatal(err)
	}
	var eleven []int
	for id := 1001; id <= 1011; id++ {
		srv.AddDroplet(id, fmt.Sprint("n", id))
		eleven = append(eleven, id)
	}
	bad := func(mut func(*godo.FirewallRequest)) *godo.FirewallRequest {
		r := wgRequest("ok-name")
		mut(r)
		return r
	}
	cases := []struct {
		name   string
		call   func() error
		status int
		msg    string
	}{
		{"wrong token", func() error { _, _, err := client(t, ts.URL, "nope").Firewalls.List(ctx, nil); return err }, 401, "Unable to authenticate"},
		{"read-only token writes", func() error {
			_, _, err := client(t, ts.URL, "ro").Firewalls.Create(ctx, wgRequest("ro-fw"))
			return err
		}, 403, "access"},
		{"unknown id", func() error { _, _, err := c.Firewalls.Get(ctx, "0d7d9d4c-0000-4000-8000-000000000000"); return err }, 404, "The resource you were accessing could not be found."},
		{"duplicate name", func() error { _, _, err := c.Firewalls.Create(ctx, wgRequest("taken")); return err }, 409, "duplicate name"},
		{"bad name", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.Name = "-x y" }))
			return err
		}, 422, "Name"},
		{"no rules", func() error {
			_, _, err := c.Firewalls.Create(ctx, &godo.FirewallRequest{Name: "empty"})
			return err
		}, 422, "at least one"},
		{"tcp without ports", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.InboundRules[0].PortRange = "" }))
			return err
		}, 422, "positive value for ports"},
		{"bad address", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.InboundRules[0].Sources.Addresses = []string{"10.0.0.300"} }))
			return err
		}, 422, "invalid address"},
		{"unknown tag", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.Tags = []string{"ghost"} }))
			return err
		}, 422, "ghost"},
		{"unknown droplet", func() error { _, err := c.Firewalls.AddDroplets(ctx, fw.ID, 999); return err }, 422, "999"},
		{"rule source names an unknown tag", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.InboundRules[0].Sources.Tags = []string{"ghost-src"} }))
			return err
		}, 422, "ghost-src"},
		{"rule destination names an unknown droplet", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.OutboundRules[0].Destinations.DropletIDs = []int{4242} }))
			return err
		}, 422, "4242"},
		{"rule added with an unknown source droplet", func() error {
			_, err := c.Firewalls.AddRules(ctx, fw.ID, &godo.FirewallRulesRequest{InboundRules: []godo.InboundRule{
				{Protocol: "tcp", PortRange: "22", Sources: &godo.Sources{DropletIDs: []int{4343}}}}})
			return err
		}, 422, "4343"},
		{"bad action", func() error {
			_, _, err := c.Firewalls.Create(ctx, bad(func(r *godo.FirewallRequest) { r.InboundRules[0].Action = "drop" }))
			return err
		}, 422, "allow or deny"},
		{"no droplets", func() error { _, err := c.Firewalls.AddDroplets(ctx, fw.ID); return err }, 422, "at least one droplet id"},
		{"too many droplets", func() error { _, err := c.Firewalls.AddDroplets(ctx, fw.ID, eleven...); return err }, 422, "at most 10 droplets"},
		{"no tags", func() error { _, err := c.Firewalls.RemoveTags(ctx, fw.ID); return err }, 422, "at least one tag"},
		{"tags of unknown firewall", func() error { _, err := c.Firewalls.AddTags(ctx, "nope", "t"); return err }, 404, ""},
		{"update unknown", func() error { _, _, err := c.Firewalls.Update(ctx, "nope", wgRequest("x1")); return err }, 404, ""},
	}
	for _, tc := range cases {
		err := tc.call()
		var er *godo.ErrorResponse
		if !errors.As(err, &er) || er.Response.StatusCode != tc.status || !strings.Contains(er.Message, tc.msg) {
			t.Errorf("%s: got %v, want %d containing %q", tc.name, err, tc.status, tc.msg)
			continue
		}
		if !strings.HasPrefix(er.RequestID, "dofake-") {
			t.Errorf("%s: request id %q not carried in the body", tc.name, er.RequestID)
		}
	}
	if n := len(srv.Firewalls()); n != 1 {
		t.Fatalf("failed requests left %d firewalls, want 1", n)
	}
}

func TestDigitalOceanFakePagination(t *testing.T) {
	_, c, _ := start(t, Options{})
	ctx := context.Background()
	const n = 45
	for i := range n {
		if _, _, err := c.Firewalls.Create(ctx, wgRequest(fmt.Sprintf("fw-%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// godo's documented iteration: until IsLastPage, page = CurrentPage()+1.
	var names []string
	opt := &godo.ListOptions{Page: 1, PerPage: 20}
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("pagination never ended")
		}
		fws, resp, err := c.Firewalls.List(ctx, opt)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Meta == nil || resp.Meta.Total != n {
			t.Fatalf("meta %+v, want total %d", resp.Meta, n)
		}
		for _, f := range fws {
			names = append(names, f.Name)
		}
		if resp.Links == nil || resp.Links.IsLastPage() {
			break
		}
		cur, err := resp.Links.CurrentPage()
		if err != nil {
			t.Fatalf("links %+v: %v", resp.Links.Pages, err)
		}
		opt.Page = cur + 1
	}
	if len(names) != n || names[0] != "fw-00" || names[n-1] != "fw-44" {
		t.Fatalf("listed %d firewalls (%v...), want %d in creation order", len(names), names[:min(3, len(names))], n)
	}
	// per_page is capped at 200 and one page has no links.
	fws, resp, err := c.Firewalls.List(ctx, &godo.ListOptions{PerPage: 500})
	if err != nil || len(fws) != n || (resp.Links != nil && resp.Links.Pages != nil) {
		t.Fatalf("per_page 500: %d firewalls, links %+v, err %v", len(fws), resp.Links, err)
	}
}

func TestDigitalOceanFakeAttachAndRules(t *testing.T) {
	srv, c, _ := start(t, Options{})
	srv.AddDroplet(1, "a")
	srv.AddDroplet(2, "b")
	srv.AddTag("mesh")
	ctx := context.Background()
	fw, _, err := c.Firewalls.Create(ctx, wgRequest("attach"))
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() (*godo.Response, error){
		func() (*godo.Response, error) { return c.Firewalls.AddDroplets(ctx, fw.ID, 1, 2) },
		func() (*godo.Response, error) { return c.Firewalls.RemoveDroplets(ctx, fw.ID, 1) },
		func() (*godo.Response, error) { return c.Firewalls.AddTags(ctx, fw.ID, "mesh") },
		func() (*godo.Response, error) {
			return c.Firewalls.AddRules(ctx, fw.ID, &godo.FirewallRulesRequest{InboundRules: []godo.InboundRule{
				{Protocol: "tcp", PortRange: "22", Sources: &godo.Sources{Addresses: []string{"198.51.100.7"}}}}})
		},
		func() (*godo.Response, error) {
			return c.Firewalls.RemoveRules(ctx, fw.ID, &godo.FirewallRulesRequest{InboundRules: []godo.InboundRule{
				{Protocol: "udp", PortRange: "51820", Sources: &godo.Sources{Addresses: []string{"::/0", "0.0.0.0/0"}}}}})
		},
	}
	for i, step := range steps {
		resp, err := step()
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("step %d: %v (status %v), want 204", i, err, resp)
		}
	}
	got, _ := srv.Firewall(fw.ID)
	if !slices.Equal(got.DropletIDs, []int{2}) || !slices.Equal(got.Tags, []string{"mesh"}) {
		t.Fatalf("attachments %v %v, want [2] [mesh]", got.DropletIDs, got.Tags)
	}
	if len(got.InboundRules) != 1 || got.InboundRules[0].Ports != "22" {
		t.Fatalf("inbound rules %+v, want only tcp 22", got.InboundRules)
	}
	byDroplet, _, err := c.Firewalls.ListByDroplet(ctx, 2, nil)
	if err != nil || len(byDroplet) != 1 || byDroplet[0].ID != fw.ID {
		t.Fatalf("ListByDroplet(2) = %v, %v", byDroplet, err)
	}
	d, _, err := c.Droplets.Get(ctx, 2)
	if err != nil || d.ID != 2 {
		t.Fatalf("droplet 2: %v, %v", d, err)
	}
	// PUT replaces everything; null lists mean empty.
	upd := wgRequest("attach-renamed")
	if _, _, err := c.Firewalls.Update(ctx, fw.ID, upd); err != nil {
		t.Fatal(err)
	}
	got, _ = srv.Firewall(fw.ID)
	if got.Name != "attach-renamed" || len(got.DropletIDs) != 0 || len(got.Tags) != 0 || len(got.InboundRules) != 1 {
		t.Fatalf("after PUT: %+v", got)
	}
	if resp, err := c.Firewalls.Delete(ctx, fw.ID); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := c.Firewalls.Get(ctx, fw.ID); statusOf(err) != 404 {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}

func TestDigitalOceanFakeFaults(t *testing.T) {
	srv, c, ts := start(t, Options{})
	ctx := context.Background()

	// Without retries, godo surfaces the 429 and its headers.
	srv.InjectFault(Fault{Status: 429, Count: 1, RetryAfter: 7})
	hreq, _ := http.NewRequest(http.MethodGet, ts.URL+"/v2/firewalls", nil)
	hreq.Header.Set("Authorization", "Bearer "+token)
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if hresp.StatusCode != 429 || hresp.Header.Get("retry-after") != "7" || !strings.Contains(string(body), `"too_many_requests"`) {
		t.Fatalf("429 fault: %d %v %s", hresp.StatusCode, hresp.Header, body)
	}

	// godo with retries (needs the oauth2 transport) rides out a burst.
	retrying := client(t, ts.URL, token, godo.WithRetryAndBackoffs(godo.RetryConfig{
		RetryMax: 3, RetryWaitMin: godo.PtrTo(0.01), RetryWaitMax: godo.PtrTo(0.05)}))
	srv.InjectFault(Fault{Status: 500, Count: 2, Method: http.MethodPost})
	if _, _, err := retrying.Firewalls.Create(ctx, wgRequest("after-500s")); err != nil {
		t.Fatalf("create through two 500s with retries: %v", err)
	}
	if srv.PendingFaults() != 0 {
		t.Fatal("faults not consumed")
	}
	srv.InjectFault(Fault{Status: 500, Count: 1})
	if _, _, err := c.Firewalls.List(ctx, nil); statusOf(err) != 500 {
		t.Fatalf("500 fault: %v", err)
	}

	// Fault matching by method and path leaves other requests alone.
	srv.InjectFault(Fault{Status: 503, Count: 1, Method: http.MethodDelete, Path: "/v2/firewalls/"})
	if _, _, err := c.Firewalls.List(ctx, nil); err != nil {
		t.Fatalf("list hit a DELETE fault: %v", err)
	}

	// Slow status: waiting for N reads, then succeeded.
	srv.SetSlowStatus(2)
	fw, _, err := c.Firewalls.Create(ctx, wgRequest("slow"))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for range 4 {
		g, _, err := c.Firewalls.Get(ctx, fw.ID)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, g.Status)
	}
	if !slices.Equal(seen, []string{"waiting", "waiting", "succeeded", "succeeded"}) {
		t.Fatalf("statuses %v", seen)
	}
}

func TestDigitalOceanFakeHourlyRateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	_, c, _ := start(t, Options{RateLimit: 2, Now: func() time.Time { return now }})
	ctx := context.Background()
	for i := range 2 {
		if _, resp, err := c.Firewalls.List(ctx, nil); err != nil || resp.Rate.Remaining != 1-i {
			t.Fatalf("request %d: %v, rate %+v", i, err, resp.Rate)
		}
	}
	_, resp, err := c.Firewalls.List(ctx, nil)
	if statusOf(err) != 429 || resp.Rate.Reset.Unix() != now.Add(time.Hour).Unix() {
		t.Fatalf("third request: %v, rate %+v; want 429 with reset in an hour", err, resp.Rate)
	}
	now = now.Add(time.Hour)
	if _, _, err := c.Firewalls.List(ctx, nil); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// TestDoctlStyleListing lists the way doctl does (do/pagination.go): 200 per
// page, the page count read from links.pages.last of the first reply, the
// remaining pages fetched by number.
func TestDigitalOceanFakeDoctlStyleListing(t *testing.T) {
	srv, c, _ := start(t, Options{})
	ctx := context.Background()
	const n = 401
	for i := range n {
		srv.mu.Lock()
		id := newUUID()
		srv.firewalls[id] = &stored{fw: Firewall{ID: id, Name: fmt.Sprintf("fw-%03d", i), Status: "succeeded"}}
		srv.order = append(srv.order, id)
		srv.mu.Unlock()
	}
	first, resp, err := c.Firewalls.List(ctx, &godo.ListOptions{Page: 1, PerPage: 200})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Links == nil || resp.Links.Pages == nil || resp.Links.Pages.Last == "" {
		t.Fatalf("first page has no links.pages.last: %+v", resp.Links)
	}
	u, err := url.Parse(resp.Links.Pages.Last)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		t.Fatalf("last link %q is not an absolute URL", resp.Links.Pages.Last)
	}
	last, err := strconv.Atoi(u.Query().Get("page"))
	if err != nil || last != 3 {
		t.Fatalf("last page %q, want 3", resp.Links.Pages.Last)
	}
	total := len(first)
	for p := 2; p <= last; p++ {
		fws, _, err := c.Firewalls.List(ctx, &godo.ListOptions{Page: p, PerPage: 200})
		if err != nil {
			t.Fatal(err)
		}
		total += len(fws)
	}
	if total != n {
		t.Fatalf("listed %d firewalls, want %d", total, n)
	}
}

// TestRuleActionKept: a rule's action is stored and returned (allow when the
// request names none), so a rule switched to deny is visible to clients.
func TestRuleActionKept(t *testing.T) {
	_, c, _ := start(t, Options{})
	ctx := context.Background()
	req := wgRequest("act")
	req.InboundRules = append(req.InboundRules, godo.InboundRule{Protocol: "tcp", PortRange: "22", Sources: anywhere(), Action: godo.FirewallRuleActionDeny})
	fw, _, err := c.Firewalls.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := c.Firewalls.Get(ctx, fw.ID)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range got.InboundRules {
		actions = append(actions, r.PortRange+":"+string(r.Action))
	}
	for _, r := range got.OutboundRules {
		actions = append(actions, r.Protocol+":"+string(r.Action))
	}
	want := []string{"51820:allow", "22:deny", "tcp:allow", "icmp:allow"}
	if !slices.Equal(actions, want) {
		t.Fatalf("actions read back %v, want %v", actions, want)
	}
	// Removing a rule matches its action too: the deny rule is not an allow rule.
	if _, err := c.Firewalls.RemoveRules(ctx, fw.ID, &godo.FirewallRulesRequest{InboundRules: []godo.InboundRule{
		{Protocol: "tcp", PortRange: "22", Sources: anywhere()}}}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ = c.Firewalls.Get(ctx, fw.ID); len(got.InboundRules) != 2 {
		t.Fatalf("removing the allow spelling took the deny rule away: %+v", got.InboundRules)
	}
}
