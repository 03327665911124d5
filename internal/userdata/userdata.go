// Package userdata turns a rendered machine config into what a node needs to
// run meshspan-agent: a #cloud-config document for clouds, or a plain bundle
// (one POSIX shell script, or the files one by one) for hosts without
// cloud-init. The files themselves come from the embedded templates/.
package userdata

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path"
	"slices"
	"strings"
	"text/template"
	"unicode/utf8"

	"github.com/meshspan/terraform-provider-meshspan/templates"
)

// Where the files go on the node.
const (
	ConfigPath  = "/etc/meshspan/config.yaml"
	UnitPath    = "/etc/systemd/system/meshspan-agent.service"
	InstallPath = "/usr/local/lib/meshspan/install-agent.sh"
	AgentPath   = "/usr/local/bin/meshspan-agent"
)

// File modes of the installed files, for tools that copy bundle files one by
// one (Ansible copy, Packer file provisioner).
var Modes = map[string]string{
	ConfigPath:  "0600",
	UnitPath:    "0644",
	InstallPath: "0755",
}

// Platforms and their user_data size limits in bytes (0: no limit known).
var platformLimits = map[string]int{
	"hcloud":       32 << 10, // Hetzner Cloud: 32 KiB
	"digitalocean": 64 << 10, // DigitalOcean: 64 KiB
	"metal":        0,
	"generic":      0,
}

// Platforms lists the accepted platform names, sorted.
var Platforms = slices.Sorted(maps.Keys(platformLimits))

// Limit returns the user_data size limit of platform (0 if none) and whether
// the platform is known.
func Limit(platform string) (int, bool) {
	n, ok := platformLimits[platform]
	return n, ok
}

// Install says where the agent binary comes from.
type Install struct {
	// URL and SHA256 (hex) of the agent binary to download.
	URL    string
	SHA256 string
	// Preinstalled means the image already has the agent at AgentPath.
	Preinstalled bool
}

// Validate checks the install source. Errors name the provider attribute
// (agent_install.*) and say how to fix it.
func (in Install) Validate() error {
	if in.Preinstalled {
		if in.URL != "" || in.SHA256 != "" {
			return errors.New("agent_install: preinstalled = true excludes url and sha256; set one or the other")
		}
		return nil
	}
	if err := validateURL(in.URL); err != nil {
		return err
	}
	if b, err := hex.DecodeString(in.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("agent_install.sha256: %q is not a SHA-256; set the 64 hex digits `sha256sum meshspan-agent` prints", in.SHA256)
	}
	return nil
}

func validateURL(s string) error {
	if s == "" {
		return errors.New("agent_install.url: is empty; set the agent download URL (with sha256), or preinstalled = true for images that ship the agent")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("agent_install.url: %q is not an http(s) URL; write e.g. https://example.com/meshspan-agent-linux-amd64", s)
	}
	return nil
}

// Files holds the rendered node files.
type Files struct {
	Config  string // the agent config, ConfigPath
	Unit    string // the systemd unit, UnitPath
	Install string // the agent install script, InstallPath
}

// Map returns the files keyed by their path on the node.
func (f Files) Map() map[string]string {
	return map[string]string{ConfigPath: f.Config, UnitPath: f.Unit, InstallPath: f.Install}
}

var tmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"content": content,
	"indent":  indent,
	"shquote": shquote,
}).ParseFS(templates.FS, "*.tmpl", "*.service"))

// Render builds the node files for a rendered config.
func Render(config []byte, in Install) (Files, error) {
	if err := in.Validate(); err != nil {
		return Files{}, fmt.Errorf("userdata: %w", err)
	}
	if len(config) == 0 || config[len(config)-1] != '\n' {
		return Files{}, errors.New("userdata: config must be non-empty and end with a newline")
	}
	unit, err := templates.FS.ReadFile("meshspan-agent.service")
	if err != nil {
		return Files{}, fmt.Errorf("userdata: read unit template: %w", err)
	}
	install, err := execute("install-agent.sh.tmpl", in)
	if err != nil {
		return Files{}, err
	}
	return Files{Config: string(config), Unit: string(unit), Install: install}, nil
}

// CloudConfig renders the #cloud-config user data for f.
func CloudConfig(f Files) (string, error) {
	return execute("cloud-config.yaml.tmpl", struct {
		Files
		ConfigPath, UnitPath, InstallPath string
	}{f, ConfigPath, UnitPath, InstallPath})
}

// heredocEnd ends each here-document in the bundle script; no file may
// contain it as a line.
const heredocEnd = "MESHSPAN_EOF"

// Script renders the bundle as one POSIX shell script: run it as root.
func Script(f Files) (string, error) {
	for name, content := range f.Map() {
		for _, line := range strings.Split(content, "\n") {
			if line == heredocEnd {
				return "", fmt.Errorf("userdata: %s contains the line %q, which would end its here-document early", name, heredocEnd)
			}
		}
	}
	return execute("bundle.sh.tmpl", struct {
		Files
		ConfigPath, UnitPath, InstallPath, ConfigDir, InstallDir, EOF string
	}{f, ConfigPath, UnitPath, InstallPath, path.Dir(ConfigPath), path.Dir(InstallPath), heredocEnd})
}

func execute(name string, data any) (string, error) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		return "", fmt.Errorf("userdata: render %s: %w", name, err)
	}
	return b.String(), nil
}

// content renders a write_files entry's content at n spaces of indentation:
// a literal block, readable on the node and in the plan, when the YAML
// literal style carries s exactly; base64 otherwise.
func content(n int, s string) string {
	pad := strings.Repeat(" ", n)
	if literalSafe(s) {
		return pad + "content: |\n" + indent(n+2, s)
	}
	return pad + "encoding: b64\n" + pad + "content: " + base64.StdEncoding.EncodeToString([]byte(s))
}

// literalSafe reports whether a YAML literal block ("|", clip chomping)
// reproduces s byte for byte: one final newline, a first line that sets the
// indentation, and only printable characters.
func literalSafe(s string) bool {
	if s == "" || !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") || !utf8.ValidString(s) {
		return false
	}
	if s[0] == ' ' || s[0] == '\t' || s[0] == '\n' {
		return false
	}
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if strings.TrimRight(line, " \t") != line {
			return false // trailing blanks survive, but whitespace-only lines may not
		}
		for _, r := range line {
			if r != '\t' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x2028 || r == 0x2029 || r == 0xfeff) {
				return false
			}
		}
	}
	return true
}

// indent prefixes every non-empty line of s with n spaces and drops the final
// newline (the template supplies line breaks around it).
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

// shquote quotes s for a POSIX shell: single quotes, embedded ones escaped.
func shquote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
