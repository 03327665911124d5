package mesh

import (
	"net/netip"
	"reflect"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestFilterAddrs(t *testing.T) {
	in := addrs("192.168.1.5", "203.0.113.7", "2001:db8::7", "10.0.0.1", "fd00::1")
	tests := []struct {
		name    string
		entries []string
		want    []netip.Addr
	}{
		{"empty admits all", nil, in},
		{"docs example", []string{"0.0.0.0/0", "!192.168.0.0/16", "::/0"}, addrs("203.0.113.7", "10.0.0.1", "2001:db8::7", "fd00::1")},
		{"negation before positive does nothing", []string{"!10.0.0.0/8", "10.0.0.0/8"}, addrs("10.0.0.1")},
		{"order follows entries", []string{"2001:db8::/32", "203.0.113.0/24"}, addrs("2001:db8::7", "203.0.113.7")},
		{"bare ip", []string{"10.0.0.1"}, addrs("10.0.0.1")},
		{"unmatched dropped", []string{"198.51.100.0/24"}, nil},
		{"re-admit after negation", []string{"0.0.0.0/0", "!10.0.0.0/8", "10.0.0.1"}, addrs("192.168.1.5", "203.0.113.7", "10.0.0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFilter(tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Addrs(in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Addrs = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterAddrPortsKeepsPeerOrder(t *testing.T) {
	f, err := ParseFilter([]string{"2001:db8::/32", "203.0.113.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	in := []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.7:51820"),
		netip.MustParseAddrPort("192.168.1.5:51820"),
		netip.MustParseAddrPort("[2001:db8::7]:51820"),
		netip.MustParseAddrPort("203.0.113.7:51820"),
	}
	want := []netip.AddrPort{in[0], in[2]}
	if got := f.AddrPorts(in); !reflect.DeepEqual(got, want) {
		t.Errorf("AddrPorts = %v, want %v", got, want)
	}
}

func TestParseFilterRejects(t *testing.T) {
	if _, err := ParseFilter([]string{"0.0.0.0/0", "!nope"}); err == nil {
		t.Fatal("ParseFilter accepted \"!nope\"")
	}
}

func TestSubtractPrefixes(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		in   string
		cut  []string
		want []string
	}{
		{"10.0.0.0/24", nil, []string{"10.0.0.0/24"}},
		{"10.0.0.0/24", []string{"10.0.0.0/25"}, []string{"10.0.0.128/25"}},
		{"10.0.0.0/24", []string{"10.0.0.5/32"}, []string{"10.0.0.0/30", "10.0.0.4/32", "10.0.0.6/31", "10.0.0.8/29", "10.0.0.16/28", "10.0.0.32/27", "10.0.0.64/26", "10.0.0.128/25"}},
		{"10.0.0.0/24", []string{"10.0.0.0/8"}, nil},
		{"10.0.0.0/24", []string{"fd00::/8"}, []string{"10.0.0.0/24"}},
		{"0.0.0.0/0", []string{"128.0.0.0/1"}, []string{"0.0.0.0/1"}},
		{"fd00::/127", []string{"fd00::1/128"}, []string{"fd00::/128"}},
	}
	for _, tt := range tests {
		var cut []netip.Prefix
		for _, c := range tt.cut {
			cut = append(cut, p(c))
		}
		var got []string
		for _, g := range subtractPrefixes(p(tt.in), cut) {
			got = append(got, g.String())
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s - %v = %v, want %v", tt.in, tt.cut, got, tt.want)
		}
	}
}
