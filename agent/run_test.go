package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// run --check prints the resolved config, but never the cluster secret.
func TestRunCheckRedactsTheSecret(t *testing.T) {
	s, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c := &config.Config{APIVersion: config.APIVersion, Node: config.Node{Name: "n1"},
		Cluster:   config.Cluster{ID: s.ID, Secret: s.Secret},
		Discovery: config.Discovery{Endpoints: []string{"https://discovery.example.com/"}}}
	data, err := config.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newRunCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--check", "--config", path})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), s.Secret) {
		t.Fatalf("run --check printed the cluster secret:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "secret: <redacted>") || !strings.Contains(out.String(), s.ID) {
		t.Errorf("run --check output lacks the redacted secret or the ID:\n%s", out.String())
	}
}
