package vmlab

import (
	"net/netip"
	"strings"
	"testing"
)

func TestMirrorFrom(t *testing.T) {
	deb822 := `Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
# a comment
URIs: http://mirror.example/debian http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
`
	if got := mirrorFrom(deb822, true); got != "http://mirror.example/debian" {
		t.Errorf("deb822: got %q", got)
	}
	list := `# deb http://commented.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/x.gpg] http://mirror.example/debian bookworm contrib main
`
	if got := mirrorFrom(list, false); got != "http://mirror.example/debian" {
		t.Errorf("sources.list: got %q", got)
	}
	if got := mirrorFrom("deb http://x.example/debian trixie main\n", false); got != "" {
		t.Errorf("another suite: got %q, want none", got)
	}
}

func TestImageKey(t *testing.T) {
	files := map[string]string{"etc/x": "1\n", "etc/y": "2\n"}
	a := ImageKey("bookworm", []string{"b", "a"}, "6.1.0-1-amd64", files)
	if a != ImageKey("bookworm", []string{"a", "b"}, "6.1.0-1-amd64", map[string]string{"etc/y": "2\n", "etc/x": "1\n"}) {
		t.Error("key depends on package or file order")
	}
	for _, other := range []string{
		ImageKey("bookworm", []string{"a", "b", "c"}, "6.1.0-1-amd64", files),
		ImageKey("bookworm", []string{"a", "b"}, "6.1.0-2-amd64", files),
		ImageKey("trixie", []string{"a", "b"}, "6.1.0-1-amd64", files),
		ImageKey("bookworm", []string{"a", "b"}, "6.1.0-1-amd64", map[string]string{"etc/x": "1\n", "etc/y": "3\n"}),
	} {
		if other == a {
			t.Errorf("key %s does not change with the content", a)
		}
	}
}

func TestNetworkConfig(t *testing.T) {
	got := NetworkConfig("52:54:00:01:02:03", netip.MustParsePrefix("203.0.113.11/24"), netip.Addr{})
	for _, want := range []string{"version: 2", `macaddress: "52:54:00:01:02:03"`, `addresses: ["203.0.113.11/24"]`, "dhcp4: false"} {
		if !strings.Contains(got, want) {
			t.Errorf("network-config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "gateway4") {
		t.Errorf("gateway without one asked:\n%s", got)
	}
	if got := NetworkConfig("52:54:00:01:02:03", netip.MustParsePrefix("198.51.100.10/24"), netip.MustParseAddr("198.51.100.1")); !strings.Contains(got, "gateway4: 198.51.100.1") {
		t.Errorf("no gateway:\n%s", got)
	}
}

// TestPreflightNamesPackages: with no tools on PATH, the error names the
// apt packages to install.
func TestPreflightNamesPackages(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := Preflight()
	if err == nil {
		t.Fatal("Preflight passed with an empty PATH")
	}
	for _, pkg := range []string{"qemu-system-x86", "qemu-utils", "debootstrap", "dosfstools", "mtools", "apt-get install"} {
		if !strings.Contains(err.Error(), pkg) {
			t.Errorf("error does not name %s: %v", pkg, err)
		}
	}
}
