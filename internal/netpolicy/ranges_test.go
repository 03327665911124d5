package netpolicy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := config.ParsePrefix(s)
		if err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return out
}

func strs(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, " ")
}

func TestRangeArithmetic(t *testing.T) {
	for _, tc := range []struct {
		name      string
		from, cut []netip.Prefix
		v6        bool
		want      string
	}{
		{"merge adjacent", pfx("10.0.0.0/25", "10.0.0.128/25"), nil, false, "10.0.0.0/24"},
		{"merge overlapping, drop v6", pfx("10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"), nil, false, "10.0.0.0/8"},
		{"hole in the middle", pfx("192.0.2.0/24"), pfx("192.0.2.128/26"), false, "192.0.2.0/25 192.0.2.192/26"},
		{"cut covers all", pfx("192.0.2.7/32"), pfx("192.0.2.0/24"), false, ""},
		{"cut outside", pfx("192.0.2.7/32"), pfx("198.51.100.0/24"), false, "192.0.2.7/32"},
		{"everything minus a LAN", pfx("0.0.0.0/0"), pfx("10.0.0.0/8"), false,
			"0.0.0.0/5 8.0.0.0/7 11.0.0.0/8 12.0.0.0/6 16.0.0.0/4 32.0.0.0/3 64.0.0.0/2 128.0.0.0/1"},
		{"v6 top of space", pfx("::/0"), pfx("::/1"), true, "8000::/1"},
		{"mapped v4 counts as v4", pfx("::ffff:192.0.2.1/128"), nil, false, "192.0.2.1/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strs(rangesPrefixes(subtractRanges(rangesOf(tc.from, tc.v6), rangesOf(tc.cut, tc.v6))))
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// Interval set elements must decode to the ranges they were made from,
// including a range that ends at the top address (no end element).
func TestElementsRoundTrip(t *testing.T) {
	for _, in := range [][]netip.Prefix{
		pfx("192.0.2.1/32", "198.51.100.0/24", "255.255.255.0/24"),
		pfx("0.0.0.0/0"),
		pfx("2001:db8::/32", "fd00::1/128", "ff00::/8"),
		nil,
	} {
		v6 := len(in) > 0 && in[0].Addr().Is6()
		rs := rangesOf(in, v6)
		els := elements(rs)
		slices.Reverse(els) // the kernel dumps in its own order
		if got, want := strs(rangesPrefixes(rangesFromElements(els))), strs(rangesPrefixes(rs)); got != want {
			t.Errorf("round trip of %v: got %q, want %q", in, got, want)
		}
	}
}

func TestMarkedFailClosedAndBypass(t *testing.T) {
	s := State{
		Routed:      pfx("192.0.2.2/32", "198.51.100.0/24", "2001:db8::2/128"),
		Unreachable: pfx("192.0.2.3/32", "198.51.100.0/25"),
		LANBypass:   pfx("198.51.100.192/26"),
	}
	if got, want := strs(s.Marked()), "192.0.2.2/31 198.51.100.0/25 198.51.100.128/26 2001:db8::2/128"; got != want {
		t.Errorf("fail closed: marked %q, want %q (down peers stay in, LAN bypass out)", got, want)
	}
	s.AllowDownPeerBypass = true
	if got, want := strs(s.Marked()), "192.0.2.2/32 198.51.100.128/26 2001:db8::2/128"; got != want {
		t.Errorf("bypass: marked %q, want %q (down peers out, LAN bypass out)", got, want)
	}
}

func validState() State {
	c := &config.Config{}
	c.ApplyDefaults()
	s, err := FromConfig(c)
	if err != nil {
		panic(err)
	}
	return s
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*State)
		want string
	}{
		{"ok", func(*State) {}, ""},
		{"interface", func(s *State) { s.Interface = "" }, "State.Interface"},
		{"mtu", func(s *State) { s.MTU = 100 }, "State.MTU 100"},
		{"port", func(s *State) { s.ListenPort = 0 }, "State.ListenPort 0"},
		{"marks clash", func(s *State) { s.Routing.ForceMark = s.Routing.FirewallMark }, "State.Routing marks"},
		{"mark outside mask", func(s *State) { s.Routing.ForceMark = 0x100 }, "inside MarkMask"},
		{"table", func(s *State) { s.Routing.Table = 254 + 1 }, "State.Routing.Table 255"},
		{"prefix", func(s *State) { s.Routed = []netip.Prefix{{}} }, "State.Routed[0]"},
		{"firewall protocol", func(s *State) {
			s.Firewall = config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{{Protocol: "sctp"}}}
		}, `firewall.rules[0].protocol "sctp"`},
		{"firewall port", func(s *State) {
			s.Firewall = config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{{Protocol: "tcp", Port: "9-1"}}}
		}, "firewall.rules[0].port"},
		{"firewall source", func(s *State) {
			s.Firewall = config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{{Protocol: "tcp", Sources: []string{"10.0.0.1/8"}}}}
		}, "firewall.rules[0].sources[0]"},
		{"firewall action", func(s *State) { s.Firewall = config.Firewall{DefaultAction: "reject"} }, `firewall.defaultAction "reject"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validState()
			tc.mut(&s)
			err := s.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestMTUWarning(t *testing.T) {
	if w := MTUWarning(1500, 1420); w != "" {
		t.Errorf("1420 on 1500 fits, got warning %q", w)
	}
	if w := MTUWarning(0, 9000); w != "" {
		t.Errorf("unknown underlay must not warn, got %q", w)
	}
	w := MTUWarning(1500, 1440)
	if !strings.Contains(w, "1440") || !strings.Contains(w, "1420 or less") {
		t.Errorf("warning %q should name the MTU and the fix (1420 or less)", w)
	}
	if v4, v6 := MSS(1420); v4 != 1368 || v6 != 1348 {
		t.Errorf("MSS(1420) = %d, %d; want 1368, 1348", v4, v6)
	}
}

func TestLineDiff(t *testing.T) {
	got := lineDiff("a\nb\nc\n", "a\nc\nd\n")
	want := "  a\n- b\n  c\n+ d\n"
	if got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", got, want)
	}
	if p := (Plan{Desired: "x\n", Live: "x\n"}); p.Changed() {
		t.Fatal("identical plan reports a change")
	}
}

func TestFromConfig(t *testing.T) {
	c := &config.Config{
		LANBypass: []string{"10.0.0.0/8"},
		Relay:     config.Relay{Enabled: true, Port: 3478},
		Firewall:  config.Firewall{DefaultAction: "block", Rules: []config.FirewallRule{{Protocol: "tcp", Port: "22"}}},
	}
	s, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.Interface != config.DefaultInterface || s.MTU != config.DefaultMTU || s.ListenPort != config.DefaultListenPort ||
		s.Routing.Table != config.DefaultRouteTable || s.RelayPort != 3478 || strs(s.LANBypass) != "10.0.0.0/8" {
		t.Fatalf("FromConfig = %+v; want defaults, relay port 3478 and the LAN bypass", s)
	}
	if s.Firewall.Rules[0].Action != "accept" || c.Firewall.Rules[0].Action != "" {
		t.Fatalf("defaults must reach the State (action %q) and leave the caller's config alone (action %q)", s.Firewall.Rules[0].Action, c.Firewall.Rules[0].Action)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	c.LANBypass = []string{"10.0.0.1/8"}
	if _, err := FromConfig(c); err == nil || !strings.Contains(err.Error(), "lanBypass[0]") {
		t.Fatalf("bad LAN bypass: %v, want an error naming lanBypass[0]", err)
	}
}
