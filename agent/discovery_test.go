package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runDiscovery(args ...string) (string, error) {
	cmd := newDiscoveryCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestDiscoveryServeCheck(t *testing.T) {
	file := filepath.Join(t.TempDir(), "clusters")
	os.WriteFile(file, []byte("# ours\nid-one\n\nid-two\n"), 0o600)
	out, err := runDiscovery("serve", "--check", "--store", "redis", "--redis-url", "redis://127.0.0.1:6379/0",
		"--trusted-proxies", "10.0.0.0/8,192.0.2.1", "--allowed-clusters", "id-three", "--allowed-clusters-file", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"store=redis", `snapshot=""`, "[10.0.0.0/8 192.0.2.1/32]", "allowed-clusters=3", "rate=15/s burst=60"} {
		if !strings.Contains(out, want) {
			t.Errorf("--check output lacks %q:\n%s", want, out)
		}
	}
}

func TestDiscoveryServeBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--check", "--store", "etcd"}, `--store "etcd"`},
		{[]string{"serve", "--check", "--trusted-proxies", "not-an-ip"}, `--trusted-proxies "not-an-ip"`},
		{[]string{"serve", "--check", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"serve", "--check", "--allowed-clusters-file", "/nonexistent/file"}, "--allowed-clusters-file"},
	} {
		_, err := runDiscovery(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}
