package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// hostPaths are the absolute paths the bundle and user_data write to on a
// real node. The lab roots them in a per-node directory: the one place where
// it departs from a real boot, since namespaces share the host's filesystem.
var hostPaths = []string{
	"/etc/meshspan",
	"/etc/systemd/system",
	"/usr/local/lib/meshspan",
	"/usr/local/bin",
	"/var/lib/meshspan",
}

// Rebase rewrites every hostPaths prefix in text to live under root.
func Rebase(text, root string) string {
	var pairs []string
	for _, p := range hostPaths {
		pairs = append(pairs, p, filepath.Join(root, p))
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

// CloudConfig is the part of #cloud-config that meshspan's user_data uses.
// Anything else is refused rather than silently skipped, so the lab can
// never pass with user_data a real node would run differently.
type CloudConfig struct {
	WriteFiles []WriteFile `yaml:"write_files"`
	RunCmd     []Command   `yaml:"runcmd"`
}

// WriteFile is one write_files entry.
type WriteFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Content     string `yaml:"content"`
}

// Command is one runcmd entry: an argv list, or a string run by sh -c.
type Command []string

// UnmarshalYAML accepts both runcmd forms.
func (c *Command) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*c = Command{"sh", "-c", n.Value}
		return nil
	case yaml.SequenceNode:
		var argv []string
		if err := n.Decode(&argv); err != nil {
			return err
		}
		if len(argv) == 0 {
			return fmt.Errorf("line %d: empty runcmd entry", n.Line)
		}
		*c = argv
		return nil
	}
	return fmt.Errorf("line %d: runcmd entry is neither a string nor a list", n.Line)
}

// ParseCloudConfig reads user_data that must be a #cloud-config document.
func ParseCloudConfig(userData string) (*CloudConfig, error) {
	if !strings.HasPrefix(userData, "#cloud-config\n") {
		return nil, errors.New("lab: user_data does not start with #cloud-config")
	}
	dec := yaml.NewDecoder(strings.NewReader(userData))
	dec.KnownFields(true)
	var cc CloudConfig
	if err := dec.Decode(&cc); err != nil {
		return nil, fmt.Errorf("lab: user_data: %w", err)
	}
	for i, f := range cc.WriteFiles {
		if !filepath.IsAbs(f.Path) {
			return nil, fmt.Errorf("lab: user_data write_files[%d].path %q is not absolute", i, f.Path)
		}
		if f.Owner != "" && f.Owner != "root:root" {
			return nil, fmt.Errorf("lab: user_data write_files[%d].owner %q: only root:root is supported", i, f.Owner)
		}
	}
	return &cc, nil
}

// Write does what cloud-init's write_files module does, with every path
// required to be under root (call it on Rebase'd user_data).
func (cc *CloudConfig) Write(root string) error {
	for i, f := range cc.WriteFiles {
		if !strings.HasPrefix(f.Path, root+"/") {
			return fmt.Errorf("lab: write_files[%d]: %q is outside the node root %s; the lab cannot write it", i, f.Path, root)
		}
		mode := os.FileMode(0o644)
		if f.Permissions != "" {
			m, err := strconv.ParseUint(f.Permissions, 8, 32)
			if err != nil || m > 0o7777 {
				return fmt.Errorf("lab: write_files[%d].permissions %q is not an octal mode", i, f.Permissions)
			}
			mode = os.FileMode(m)
		}
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			return fmt.Errorf("lab: write_files[%d]: %w", i, err)
		}
		if err := os.WriteFile(f.Path, []byte(f.Content), mode); err != nil {
			return fmt.Errorf("lab: write_files[%d]: %w", i, err)
		}
		if err := os.Chmod(f.Path, mode); err != nil { // WriteFile's mode is masked by umask
			return fmt.Errorf("lab: write_files[%d]: %w", i, err)
		}
	}
	return nil
}

// ExecStart returns the argv of the ExecStart= line of a systemd unit.
func ExecStart(unit string) ([]string, error) {
	sc := bufio.NewScanner(strings.NewReader(unit))
	var found []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		v, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		if found != nil {
			return nil, errors.New("lab: unit has more than one ExecStart=")
		}
		if strings.ContainsAny(v, `"'\$%`) {
			return nil, fmt.Errorf("lab: ExecStart=%s uses quoting or specifiers the lab does not expand", v)
		}
		found = strings.Fields(v)
		if len(found) == 0 {
			return nil, errors.New("lab: ExecStart= is empty")
		}
	}
	if found == nil {
		return nil, errors.New("lab: unit has no ExecStart=")
	}
	return found, nil
}

// fakeSystemctl records its arguments: systemd does not run inside a
// network namespace, so the lab plays its part from the recorded calls.
const fakeSystemctl = `#!/bin/sh
echo "$*" >> "$(dirname "$0")/../systemctl.log"
`

// SystemctlCalls reads what the boot asked of systemctl.
func SystemctlCalls(root string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "systemctl.log"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n"), nil
}

// AgentStartRequested reports whether the recorded systemctl calls enable
// and start meshspan-agent.service, as a real boot would.
func AgentStartRequested(calls []string) error {
	var enabled, started bool
	for _, c := range calls {
		f := strings.Fields(c)
		if len(f) == 0 || f[len(f)-1] != "meshspan-agent.service" {
			continue
		}
		switch f[0] {
		case "enable":
			enabled = true
			for _, a := range f[1:] {
				if a == "--now" {
					started = true
				}
			}
		case "start", "restart":
			started = true
		}
	}
	if !enabled || !started {
		return fmt.Errorf("lab: the boot did not enable and start meshspan-agent.service (systemctl calls: %q)", calls)
	}
	return nil
}
