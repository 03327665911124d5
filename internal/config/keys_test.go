package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestUnknownKey(t *testing.T) {
	valid, err := Render(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(valid), "\n")
	lineOf := func(prefix string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line starting %q in\n%s", prefix, valid)
		return 0
	}
	for _, c := range []struct {
		name, from, to string
		want           string
	}{
		{"case", "  listenPort:", "  listenport:", "line %d: unknown key wireguard.listenport; did you mean listenPort?"},
		{"typo", "  listenPort:", "  listenPrt:", "line %d: unknown key wireguard.listenPrt; did you mean listenPort?"},
		{"swap", "  listenPort:", "  lsitenPort:", "line %d: unknown key wireguard.lsitenPort; did you mean listenPort?"},
		{"top", "allowDownPeerBypass:", "allowDownPeerBypas:", "line %d: unknown key allowDownPeerBypas; did you mean allowDownPeerBypass?"},
		{"far", "  listenPort:", "  colour:", "line %d: unknown key wireguard.colour; valid keys here: interface, keepalive, listenPort, mtu"},
	} {
		t.Run(c.name, func(t *testing.T) {
			line := lineOf(c.from)
			doc := strings.Replace(string(valid), "\n"+c.from, "\n"+c.to, 1)
			_, err := Parse([]byte(doc))
			var ke *UnknownKeyError
			if !errors.As(err, &ke) {
				t.Fatalf("Parse: %v, want an UnknownKeyError", err)
			}
			want := "config: " + strings.Replace(c.want, "%d", itoa(line), 1)
			if err.Error() != want {
				t.Errorf("error\n got %s\nwant %s", err, want)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "config.") {
				t.Errorf("error spans lines or names a Go type: %q", err)
			}
		})
	}
}

func TestUnknownKeyInList(t *testing.T) {
	c := validConfig()
	if len(c.Firewall.Rules) == 0 {
		t.Skip("validConfig has no firewall rules")
	}
	valid, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(valid), "protocol:", "protocl:", 1)
	_, err = Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "unknown key firewall.rules[0].protocl; did you mean protocol?") {
		t.Errorf("Parse: %v", err)
	}
}

func TestLoadUnknownKeyNamesFileAndLine(t *testing.T) {
	valid, err := Render(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	doc := strings.Replace(string(valid), "  listenPort:", "  listen_port:", 1)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	line := 0
	for i, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, "  listen_port:") {
			line = i + 1
		}
	}
	_, err = Load(path)
	want := path + ":" + itoa(line) + ": unknown key wireguard.listen_port; did you mean listenPort?"
	if err == nil || err.Error() != want {
		t.Errorf("Load: %v\nwant %s", err, want)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "abc", 0}, {"abc", "abd", 1}, {"abc", "acb", 1}, {"listenport", "listenprt", 1}, {"", "ab", 2}, {"kitten", "sitting", 3}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
