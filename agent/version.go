package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// commit is stamped by `make build` (-X main.commit=...); without it the
// VCS revision Go records at build time is used, if any.
var commit = ""

// buildInfo is what `meshspan-agent version` reports.
type buildInfo struct {
	Version, Commit, Go, Platform string
	WireGuard                     []string // back ends usable on this host, with why
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok && b.Commit == "" {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = " (modified)"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			b.Commit = rev + dirty
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	b.WireGuard = wireguardBackends("/")
	return b
}

// wireguardBackends says which of --wireguard=kernel and userspace can work
// here, looking only (it loads no module and creates no device). root is
// "/" except in tests.
func wireguardBackends(root string) []string {
	var out []string
	var uts unix.Utsname
	release := ""
	if unix.Uname(&uts) == nil {
		release = unix.ByteSliceToString(uts.Release[:])
	}
	switch {
	case exists(filepath.Join(root, "sys/module/wireguard")):
		out = append(out, "kernel (module loaded)")
	case release != "" && kernelModuleFile(filepath.Join(root, "lib/modules", release)):
		out = append(out, "kernel (module available; the agent loads it)")
	default:
		out = append(out, "kernel: not available (no wireguard module for "+release+")")
	}
	if exists(filepath.Join(root, "dev/net/tun")) {
		out = append(out, "userspace (wireguard-go on /dev/net/tun)")
	} else {
		out = append(out, "userspace: not available (no /dev/net/tun)")
	}
	return out
}

func kernelModuleFile(dir string) bool {
	found := false
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || found {
			return filepath.SkipDir
		}
		if strings.HasPrefix(d.Name(), "wireguard.ko") {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	if !found {
		// Built in: listed in modules.builtin.
		b, _ := os.ReadFile(filepath.Join(dir, "modules.builtin"))
		found = strings.Contains(string(b), "/wireguard.ko")
	}
	return found
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (b buildInfo) write(w io.Writer) {
	fmt.Fprintf(w, "meshspan-agent %s\n", b.Version)
	fmt.Fprintf(w, "  commit:     %s\n", b.Commit)
	fmt.Fprintf(w, "  go:         %s %s\n", b.Go, b.Platform)
	fmt.Fprintf(w, "  wireguard:  %s\n", strings.Join(b.WireGuard, "; "))
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and the WireGuard back ends usable on this host",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			readBuildInfo().write(cmd.OutOrStdout())
			return nil
		},
	}
}
