package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// A backquoted word in a flag's usage becomes its value placeholder in
// --help: `meshspan-agent status` once read "--socket meshspan-agent status".
// Placeholders must be one word.
func TestFlagPlaceholders(t *testing.T) {
	word := regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			name, _ := pflag.UnquoteUsage(f)
			if name != "" && !word.MatchString(name) {
				t.Errorf("%s --%s: help shows the placeholder %q; quote one word naming the value, or none", c.CommandPath(), f.Name, name)
			}
		})
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
}

func TestRunHelpSocketPlaceholder(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"run", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`--socket path\s+path of the unix socket`).MatchString(out.String()) {
		t.Errorf("run --help:\n%s", out.String())
	}
}

func TestVersionCommand(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"meshspan-agent " + version + "\n", "commit:", runtime.Version(), "wireguard:", "userspace"} {
		if !strings.Contains(s, want) {
			t.Errorf("version output lacks %q:\n%s", want, s)
		}
	}
}

func TestWireguardBackends(t *testing.T) {
	root := t.TempDir()
	got := strings.Join(wireguardBackends(root), "; ")
	if !strings.Contains(got, "kernel: not available") || !strings.Contains(got, "userspace: not available (no /dev/net/tun)") {
		t.Errorf("empty root: %s", got)
	}
	for _, d := range []string{"sys/module/wireguard", "dev/net"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "dev/net/tun"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got = strings.Join(wireguardBackends(root), "; ")
	if got != "kernel (module loaded); userspace (wireguard-go on /dev/net/tun)" {
		t.Errorf("loaded module and tun: %s", got)
	}
}
