package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FindTerraform resolves the --terraform value to an executable. A path
// (anything with a slash) is used as given. A bare name is looked up on
// PATH; "tofu" is then also looked for where `make tofu` puts it: bin/tofu
// next to the agent binary (bin/meshspan-agent), bin/tofu under the current
// directory, and the build cache ~/.cache/meshspan/tofu-*/tofu. An empty
// name means terraform, else tofu, the same order as the GNUmakefile.
func FindTerraform(name, agent string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := exec.LookPath(name); err != nil {
			return "", fmt.Errorf("lab: --terraform %s: %w", name, err)
		}
		return name, nil
	}
	names := []string{name}
	if name == "" {
		names = []string{"terraform", "tofu"}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		if n != "tofu" {
			continue
		}
		for _, p := range tofuBuilds(agent) {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	switch name {
	case "", "tofu":
		what := "tofu"
		if name == "" {
			what = "neither terraform nor tofu"
		}
		return "", errors.New("lab: " + what + " is on PATH and bin/tofu is not built: run `make tofu` in the meshspan " +
			"checkout (builds OpenTofu from source into bin/tofu, about 8 min on 2 cores), install Terraform >= 1.5, " +
			"or pass --terraform /path/to/terraform")
	}
	return "", fmt.Errorf("lab: %s is not on PATH: install it, or pass --terraform with its path (or --terraform tofu)", name)
}

// tofuBuilds lists, in order, where a `make tofu` build may be.
func tofuBuilds(agent string) []string {
	var c []string
	if agent != "" {
		c = append(c, filepath.Join(filepath.Dir(agent), "tofu"))
	}
	c = append(c, filepath.Join("bin", "tofu"))
	if home, err := os.UserHomeDir(); err == nil {
		cached, _ := filepath.Glob(filepath.Join(home, ".cache", "meshspan", "tofu-*", "tofu"))
		// Newest version last in lexical order is close enough; take it first.
		for i := len(cached) - 1; i >= 0; i-- {
			c = append(c, cached[i])
		}
	}
	return c
}

// cliConfig is the Terraform CLI config that finds the provider: the one
// TF_CLI_CONFIG_FILE names if it exists, else the bin/terraformrc `make
// install` writes next to the agent binary (bin/meshspan-agent), so
// `bin/meshspan-lab` works without exporting it. "" if neither.
func cliConfig(agent string) string {
	if p := os.Getenv("TF_CLI_CONFIG_FILE"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if agent != "" {
		p := filepath.Join(filepath.Dir(agent), "terraformrc")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// tfEnv is the environment Terraform runs with: this process's, with the
// CLI config that finds the provider.
func (r *run) tfEnv() []string {
	env := os.Environ()
	if r.tfrc != "" {
		env = append(env, "TF_CLI_CONFIG_FILE="+r.tfrc)
	}
	return env
}
