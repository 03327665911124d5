package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeFindsTerraform: the GNUmakefile takes TERRAFORM=..., else
// terraform on PATH, else tofu on PATH, else bin/tofu, and without any says
// so and how to get one.
func TestMakeFindsTerraform(t *testing.T) {
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	fake := func(names ...string) string {
		d := t.TempDir()
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(d, n), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	both, onlyTofu, none := fake("terraform", "tofu"), fake("tofu"), fake()
	home := t.TempDir() // no tool cache
	makeIn := func(pathDir string, dryRun bool, args ...string) (string, error) {
		a := []string{"-s", "-C", "../..", "TOFU=" + filepath.Join(home, "no-tofu")}
		if dryRun {
			a = append(a, "-n")
		}
		cmd := exec.Command(mk, append(a, args...)...)
		// Only the fakes, go, and the base system (not /usr/local/bin,
		// where a real terraform may be).
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "TERRAFORM=") && !strings.HasPrefix(e, "PATH=") && !strings.HasPrefix(e, "HOME=") {
				cmd.Env = append(cmd.Env, e)
			}
		}
		cmd.Env = append(cmd.Env, "PATH="+pathDir+":"+filepath.Dir(goBin)+":/usr/bin:/bin", "HOME="+home)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, c := range []struct {
		name, path string
		args       []string
		want       string
	}{
		{"terraform first", both, nil, "env -u TF_CLI_CONFIG_FILE " + filepath.Join(both, "terraform") + " fmt -recursive examples"},
		{"then tofu", onlyTofu, nil, "env -u TF_CLI_CONFIG_FILE " + filepath.Join(onlyTofu, "tofu") + " fmt -recursive examples"},
		{"TERRAFORM wins", both, []string{"TERRAFORM=/opt/tf/terraform"}, "/opt/tf/terraform fmt -recursive examples"},
	} {
		out, err := makeIn(c.path, true, append(c.args, "fmt")...)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: make -n fmt: %v\n%s\nwant a line %q", c.name, err, out, c.want)
		}
	}
	out, err := makeIn(none, false, "fmt")
	if err == nil {
		t.Fatalf("make fmt without terraform or tofu succeeded:\n%s", out)
	}
	for _, want := range []string{"neither terraform nor tofu is on PATH and bin/tofu is not built", "make tofu", "TERRAFORM="} {
		if !strings.Contains(out, want) {
			t.Errorf("make fmt without terraform or tofu does not say %q:\n%s", want, out)
		}
	}
}
