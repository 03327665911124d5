package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunCheckRefusesDefaultRoute: a default route in advertisedNetworks
// (one typo makes a node the peer for every destination of every member
// that takes it) fails `run --check` unless the node says it is an exit
// node.
func TestRunCheckRefusesDefaultRoute(t *testing.T) {
	const base = `apiVersion: meshspan/v1
kind: MachineConfig
node: {name: n1}
cluster:
  id: 8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo=
  secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
discovery: {endpoints: ["https://discovery.example.com/"]}
advertisedNetworks: ["10.244.1.0/24", "0.0.0.0/0"]
`
	run := func(yaml string) (string, error) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := newRunCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"--check", "--config", path})
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run(base); err == nil || !strings.Contains(err.Error(), `advertisedNetworks[1]: "0.0.0.0/0" is a default route`) ||
		!strings.Contains(err.Error(), "allowWideAdvertisedNetworks: true") {
		t.Errorf("run --check with 0.0.0.0/0 advertised = %v\n%s; want it refused, naming allowWideAdvertisedNetworks", err, out)
	}
	if out, err := run(base + "allowWideAdvertisedNetworks: true\n"); err != nil {
		t.Errorf("run --check of an exit node: %v\n%s", err, out)
	}
}
