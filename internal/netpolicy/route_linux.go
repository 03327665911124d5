package netpolicy

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var families = []int{netlink.FAMILY_V4, netlink.FAMILY_V6}

func famName(f int) string {
	if f == netlink.FAMILY_V6 {
		return "ipv6"
	}
	return "ipv4"
}

func defaultDst(f int) *net.IPNet {
	if f == netlink.FAMILY_V6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// desiredRoutes are the mesh table's default routes (v4 and v6) via the
// mesh link, with the mesh MTU.
func desiredRoutes(s State, link int) []netlink.Route {
	var out []netlink.Route
	for _, f := range families {
		r := netlink.Route{Family: f, LinkIndex: link, Dst: defaultDst(f), Table: s.Routing.Table,
			Priority: 1, Protocol: unix.RTPROT_STATIC, MTU: s.MTU}
		if f == netlink.FAMILY_V4 {
			r.Scope = netlink.SCOPE_LINK
		}
		out = append(out, r)
	}
	return out
}

// desiredRules send force-marked packets (mark&mask == force) to the mesh table.
func desiredRules(s State) []*netlink.Rule {
	var out []*netlink.Rule
	for _, f := range families {
		r := netlink.NewRule()
		r.Family = f
		r.Table = s.Routing.Table
		r.Priority = s.Routing.RulePriority
		r.Mark = s.Routing.ForceMark
		mask := s.Routing.MarkMask
		r.Mask = &mask
		out = append(out, r)
	}
	return out
}

func sameRoute(a, b netlink.Route) bool {
	return a.LinkIndex == b.LinkIndex && a.Priority == b.Priority && a.MTU == b.MTU &&
		a.Table == b.Table && dstString(a) == dstString(b)
}

func dstString(r netlink.Route) string {
	if r.Dst == nil {
		return defaultDst(r.Family).String()
	}
	return r.Dst.String()
}

func sameRule(a, b *netlink.Rule) bool {
	return a.Family == b.Family && a.Table == b.Table && a.Priority == b.Priority && a.Mark == b.Mark &&
		a.Mask != nil && b.Mask != nil && *a.Mask == *b.Mask &&
		a.Src == nil && a.Dst == nil && !a.Invert && a.IifName == "" && a.OifName == ""
}

// liveRoutes lists every route in table.
func liveRoutes(h *netlink.Handle, table int) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, f := range families {
		rs, err := h.RouteListFiltered(f, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("netpolicy: list %s routes in table %d: %w", famName(f), table, err)
		}
		for _, r := range rs {
			r.Family = f
			out = append(out, r)
		}
	}
	return out, nil
}

// liveRules lists the rules that look up table (all priorities).
func liveRules(h *netlink.Handle, table int) ([]*netlink.Rule, error) {
	var out []*netlink.Rule
	for _, f := range families {
		rs, err := h.RuleListFiltered(f, &netlink.Rule{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("netpolicy: list %s rules for table %d: %w", famName(f), table, err)
		}
		for i := range rs {
			rs[i].Family = f
			out = append(out, &rs[i])
		}
	}
	return out, nil
}

// syncRoutes makes table hold exactly want (nil want empties it).
func syncRoutes(h *netlink.Handle, table int, want []netlink.Route) error {
	live, err := liveRoutes(h, table)
	if err != nil {
		return err
	}
	for _, l := range live {
		if !containsRoute(want, l) {
			if err := h.RouteDel(&l); err != nil && !isNotExist(err) {
				return fmt.Errorf("netpolicy: delete route %s from table %d: %w", dstString(l), table, err)
			}
		}
	}
	for _, w := range want {
		if containsRoute(live, w) {
			continue
		}
		if err := h.RouteReplace(&w); err != nil {
			return fmt.Errorf("netpolicy: add route %s dev index %d table %d mtu %d: %w", dstString(w), w.LinkIndex, table, w.MTU, err)
		}
	}
	return nil
}

func containsRoute(rs []netlink.Route, r netlink.Route) bool {
	for _, x := range rs {
		if sameRoute(x, r) {
			return true
		}
	}
	return false
}

// syncRules makes the rules looking up table exactly want.
func syncRules(h *netlink.Handle, table int, want []*netlink.Rule) error {
	live, err := liveRules(h, table)
	if err != nil {
		return err
	}
	for _, l := range live {
		keep := false
		for _, w := range want {
			keep = keep || sameRule(l, w)
		}
		if keep {
			continue
		}
		d := netlink.NewRule()
		d.Family, d.Table, d.Priority, d.Mark, d.Mask = l.Family, l.Table, l.Priority, l.Mark, l.Mask
		if err := h.RuleDel(d); err != nil && !isNotExist(err) {
			return fmt.Errorf("netpolicy: delete %s rule priority %d for table %d: %w", famName(l.Family), l.Priority, table, err)
		}
	}
	for _, w := range want {
		found := false
		for _, l := range live {
			found = found || sameRule(l, w)
		}
		if found {
			continue
		}
		if err := h.RuleAdd(w); err != nil {
			return fmt.Errorf("netpolicy: add %s rule fwmark %#x/%#x lookup %d priority %d: %w", famName(w.Family), w.Mark, *w.Mask, w.Table, w.Priority, err)
		}
	}
	return nil
}

// routingText renders routes and rules for Plan, one per line, sorted
// families first so desired and live compare.
func routingText(devName func(int) string, routes []netlink.Route, rules []*netlink.Rule) string {
	var b strings.Builder
	for _, r := range routes {
		dev := devName(r.LinkIndex)
		fmt.Fprintf(&b, "route %s %s dev %s table %d metric %d mtu %d\n", famName(r.Family), dstString(r), dev, r.Table, r.Priority, r.MTU)
	}
	for _, r := range rules {
		mask := "none"
		if r.Mask != nil {
			mask = fmt.Sprintf("%#x", *r.Mask)
		}
		fmt.Fprintf(&b, "rule %s priority %d fwmark %#x/%s lookup %d\n", famName(r.Family), r.Priority, r.Mark, mask, r.Table)
	}
	return b.String()
}
