package netpolicy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// host is one namespace with a stand-in mesh link (a veth: these tests are
// about the tables, not about WireGuard; tests/policy runs the real thing).
type host struct {
	ns *netlab.NS
	m  *Manager
}

func newHost(t testing.TB) host {
	t.Helper()
	lab := netlab.NewT(t)
	ns, err := lab.Host("h")
	if err != nil {
		t.Fatal(err)
	}
	// This kernel has no dummy driver; a veth pair inside the namespace
	// serves as a link to route into.
	if err := lab.Link(netlab.LinkEnd{NS: ns, Name: config.DefaultInterface}, netlab.LinkEnd{NS: ns, Name: "meshpeer0"}); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{NetNSPath: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return host{ns, m}
}

func (h host) nft(t testing.TB) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(h.ns.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (h host) liveText(t *testing.T) string {
	t.Helper()
	l, err := readListing(h.nft(t), DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	return l.String()
}

func (h host) routing(t *testing.T, table int) ([]netlink.Route, []*netlink.Rule) {
	t.Helper()
	rts, err := liveRoutes(h.ns.Netlink(), table)
	if err != nil {
		t.Fatal(err)
	}
	rls, err := liveRules(h.ns.Netlink(), table)
	if err != nil {
		t.Fatal(err)
	}
	return rts, rls
}

func meshState() State {
	s := validState()
	s.Routed = pfx("192.0.2.2/32", "198.51.100.0/24", "2001:db8::2/128")
	s.Firewall = config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{{Protocol: "tcp", Port: "8080", Action: "accept"}}}
	return s
}

func TestApplyIsLevelTriggeredAndCheap(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	s := meshState()
	if err := h.m.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, want := h.liveText(t), mustListing(t, s); got != want {
		t.Fatalf("live table differs from desired:\n%s", lineDiff(got, want))
	}
	rts, rls := h.routing(t, s.Routing.Table)
	if len(rts) != 2 || len(rls) != 2 {
		t.Fatalf("table %d has %d routes and %d rules, want 2 and 2 (v4 and v6)", s.Routing.Table, len(rts), len(rls))
	}
	for _, r := range rts {
		if r.MTU != s.MTU || r.Priority != 1 {
			t.Errorf("route %s: mtu %d metric %d, want mtu %d metric 1", dstString(r), r.MTU, r.Priority, s.MTU)
		}
	}
	for _, r := range rls {
		if r.Priority != config.DefaultRulePriority || r.Mark != config.DefaultForceMark || r.Mask == nil || *r.Mask != config.DefaultMarkMask {
			t.Errorf("rule %+v, want fwmark %#x/%#x priority %d", r, config.DefaultForceMark, config.DefaultMarkMask, config.DefaultRulePriority)
		}
	}

	// Same state: nothing is written.
	for range 3 {
		if err := h.m.Apply(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if w := h.m.Writes(); w != 1 {
		t.Fatalf("%d nftables transactions after 4 applies of one state, want 1", w)
	}
	if p, err := h.m.Plan(s); err != nil || p.Changed() {
		t.Fatalf("plan after apply: changed=%v err=%v\n%s", p.Changed(), err, p.Diff())
	}

	// A new member: one more transaction, and the set holds it.
	s.Routed = append(s.Routed, pfx("203.0.113.9/32")...)
	if err := h.m.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if w := h.m.Writes(); w != 2 {
		t.Fatalf("writes = %d after a change, want 2", w)
	}
	if !strings.Contains(h.liveText(t), "203.0.113.9,") {
		t.Fatal("new member missing from the live routed set")
	}

	// Drift: someone deletes a rule and a route; the next Apply repairs both.
	c := h.nft(t)
	tbl := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chainPostrouting, Table: tbl})
	if err != nil || len(rules) == 0 {
		t.Fatalf("postrouting rules: %v, %v", rules, err)
	}
	if err := c.DelRule(rules[len(rules)-1]); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	rts, _ = h.routing(t, s.Routing.Table)
	if err := h.ns.Netlink().RouteDel(&rts[0]); err != nil {
		t.Fatal(err)
	}
	p, err := h.m.Plan(s)
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Diff(); !strings.Contains(d, "+ \t\tip6 daddr @routed6 counter drop") || !strings.Contains(d, "+ route ") {
		t.Fatalf("plan does not show the deleted rule and route as additions:\n%s", d)
	}
	if err := h.m.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if p, _ := h.m.Plan(s); p.Changed() {
		t.Fatalf("drift not repaired:\n%s", p.Diff())
	}

	// A new routing table moves routes and rules; the old table is emptied.
	old := s.Routing.Table
	s.Routing.Table = 181
	if err := h.m.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if rts, rls := h.routing(t, old); len(rts)+len(rls) != 0 {
		t.Fatalf("old table %d still has %d routes, %d rules", old, len(rts), len(rls))
	}
	if rts, rls := h.routing(t, 181); len(rts) != 2 || len(rls) != 2 {
		t.Fatalf("table 181 has %d routes, %d rules; want 2 and 2", len(rts), len(rls))
	}
}

func mustListing(t *testing.T, s State) string {
	t.Helper()
	rs, err := buildRuleset(s, DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	return rs.listing().String()
}

// A transaction the kernel rejects (here: a jump to a chain that does not
// exist, queued after the whole new table) leaves the old table in force.
func TestApplyRollsBackAFailedTransaction(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	s1 := meshState()
	if err := h.m.Apply(ctx, s1); err != nil {
		t.Fatal(err)
	}
	before := h.liveText(t)
	h.m.extra = func(c *nftables.Conn, tbl *nftables.Table) {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: chainInput, Table: tbl},
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "no-such-chain"}}})
	}
	s2 := meshState()
	s2.Firewall.DefaultAction = "accept"
	s2.Routed = pfx("203.0.113.0/24")
	err := h.m.Apply(ctx, s2)
	if err == nil || !strings.Contains(err.Error(), "previous ruleset kept") {
		t.Fatalf("Apply with a failing transaction returned %v, want an error saying the previous ruleset is kept", err)
	}
	if after := h.liveText(t); after != before {
		t.Fatalf("a failed transaction changed the live table:\n%s", lineDiff(before, after))
	}
	if w := h.m.Writes(); w != 1 {
		t.Fatalf("writes = %d, want 1 (the failed one does not count)", w)
	}
	h.m.extra = nil
	if err := h.m.Apply(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if got, want := h.liveText(t), mustListing(t, s2); got != want {
		t.Fatalf("after a good apply:\n%s", lineDiff(got, want))
	}
}

func TestCloseLeavesNothingBehind(t *testing.T) {
	h := newHost(t)
	c := h.nft(t)
	// A table that is not ours must survive.
	other := c.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyINet})
	c.AddChain(&nftables.Chain{Name: "keep", Table: other})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	s := meshState()
	if err := h.m.Apply(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	if strings.Join(names, ",") != "other" {
		t.Fatalf("tables after Close: %v, want only [other]", names)
	}
	if rts, rls := h.routing(t, s.Routing.Table); len(rts)+len(rls) != 0 {
		t.Fatalf("after Close table %d has %d routes and %d rules", s.Routing.Table, len(rts), len(rls))
	}
	for _, f := range families {
		rls, err := h.ns.Netlink().RuleList(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rls {
			if r.Priority == s.Routing.RulePriority {
				t.Fatalf("rule at priority %d left behind: %+v", r.Priority, r)
			}
		}
	}
	if err := h.m.Apply(context.Background(), s); err == nil {
		t.Fatal("Apply after Close succeeded")
	}
}

// Without the mesh link Apply fails, but only after the table is in: member
// traffic is already held back (fail closed) while the agent retries.
func TestApplyWithoutMeshLinkStillGuards(t *testing.T) {
	h := newHost(t)
	s := meshState()
	s.Interface = "nosuchlink0"
	err := h.m.Apply(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), `"nosuchlink0"`) {
		t.Fatalf("Apply without the link: %v, want an error naming it", err)
	}
	if !strings.Contains(h.liveText(t), "ip daddr @routed4 counter drop") {
		t.Fatal("the fail-closed guard is not live")
	}
}

func TestInvalidStateTouchesNothing(t *testing.T) {
	h := newHost(t)
	s := meshState()
	s.MTU = 10
	if err := h.m.Apply(context.Background(), s); err == nil || !strings.Contains(err.Error(), "State.MTU") {
		t.Fatalf("Apply: %v, want a State.MTU error", err)
	}
	if text := h.liveText(t); text != "" {
		t.Fatalf("an invalid state created a table:\n%s", text)
	}
	if err := h.m.Apply(context.Background(), State{}); err == nil {
		t.Fatal("zero State accepted")
	} else if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
