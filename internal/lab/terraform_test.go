package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindTerraform(t *testing.T) {
	exe := func(dir, name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	path, binDir, home := t.TempDir(), t.TempDir(), t.TempDir()
	t.Setenv("PATH", path)
	t.Setenv("HOME", home)
	agent := exe(binDir, "meshspan-agent")

	// Nothing anywhere: say how to get one.
	for _, name := range []string{"tofu", ""} {
		_, err := FindTerraform(name, agent)
		if err == nil || !strings.Contains(err.Error(), "make tofu") || !strings.Contains(err.Error(), "--terraform /path/to/terraform") {
			t.Errorf("FindTerraform(%q) with nothing installed: %v", name, err)
		}
	}
	if _, err := FindTerraform("terraform", agent); err == nil || !strings.Contains(err.Error(), "terraform is not on PATH") {
		t.Errorf("FindTerraform(terraform) with nothing installed: %v", err)
	}

	// The cached build, then bin/tofu next to the agent, which wins.
	cached := filepath.Join(home, ".cache", "meshspan", "tofu-v1.12.6")
	if err := os.MkdirAll(cached, 0o755); err != nil {
		t.Fatal(err)
	}
	want := exe(cached, "tofu")
	if got, err := FindTerraform("tofu", agent); err != nil || got != want {
		t.Errorf("FindTerraform(tofu) = %q, %v; want the cached build %s", got, err, want)
	}
	want = exe(binDir, "tofu")
	for _, name := range []string{"tofu", ""} {
		if got, err := FindTerraform(name, agent); err != nil || got != want {
			t.Errorf("FindTerraform(%q) = %q, %v; want %s next to the agent", name, got, err, want)
		}
	}
	// PATH first, terraform before tofu.
	onPath := exe(path, "tofu")
	if got, _ := FindTerraform("tofu", agent); got != onPath {
		t.Errorf("FindTerraform(tofu) = %q, want %s from PATH", got, onPath)
	}
	tf := exe(path, "terraform")
	if got, _ := FindTerraform("", agent); got != tf {
		t.Errorf("FindTerraform(\"\") = %q, want %s", got, tf)
	}
	// A path is taken as it is, and must exist.
	if got, err := FindTerraform(want, agent); err != nil || got != want {
		t.Errorf("FindTerraform(%s) = %q, %v", want, got, err)
	}
	if _, err := FindTerraform(filepath.Join(path, "nope"), agent); err == nil {
		t.Error("FindTerraform accepted a path that does not exist")
	}
}

func TestCliConfig(t *testing.T) {
	bin := t.TempDir()
	agent := filepath.Join(bin, "meshspan-agent")
	t.Setenv("TF_CLI_CONFIG_FILE", filepath.Join(bin, "missing"))
	if got := cliConfig(agent); got != "" {
		t.Errorf("no config anywhere: %q", got)
	}
	rc := filepath.Join(bin, "terraformrc")
	if err := os.WriteFile(rc, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := cliConfig(agent); got != rc {
		t.Errorf("TF_CLI_CONFIG_FILE names a missing file: %q, want bin/terraformrc next to the agent %s", got, rc)
	}
	other := filepath.Join(t.TempDir(), "rc")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", other)
	if got := cliConfig(agent); got != other {
		t.Errorf("TF_CLI_CONFIG_FILE exists: %q, want %s", got, other)
	}
}
