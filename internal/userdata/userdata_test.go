package userdata

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const testConfig = "apiVersion: meshspan/v1\nkind: MachineConfig\nnode:\n  name: n1\ndiscovery:\n  caCertificate: |\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    -----END CERTIFICATE-----\n"

var testSum = strings.Repeat("ab", 32)

func TestInstallValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Install
		want string // substring of the error; "" means valid
	}{
		{"url and sum", Install{URL: "https://example.com/a", SHA256: testSum}, ""},
		{"preinstalled", Install{Preinstalled: true}, ""},
		{"nothing", Install{}, "agent_install.url: is empty"},
		{"ftp", Install{URL: "ftp://example.com/a", SHA256: testSum}, "agent_install.url: \"ftp://example.com/a\" is not an http(s) URL"},
		{"space in url", Install{URL: "https://example.com/a b", SHA256: testSum}, "is not an http(s) URL"},
		{"no host", Install{URL: "https:///a", SHA256: testSum}, "is not an http(s) URL"},
		{"short sum", Install{URL: "https://example.com/a", SHA256: "abcd"}, "agent_install.sha256: \"abcd\" is not a SHA-256"},
		{"non-hex sum", Install{URL: "https://example.com/a", SHA256: strings.Repeat("zz", 32)}, "is not a SHA-256"},
		{"missing sum", Install{URL: "https://example.com/a"}, "agent_install.sha256"},
		{"both", Install{Preinstalled: true, URL: "https://example.com/a"}, "preinstalled = true excludes url and sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.in.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLimit(t *testing.T) {
	for p, want := range map[string]int{"hcloud": 32768, "digitalocean": 65536, "metal": 0, "generic": 0} {
		if got, ok := Limit(p); !ok || got != want {
			t.Errorf("Limit(%q) = %d, %v; want %d, true", p, got, ok, want)
		}
	}
	if _, ok := Limit("aws"); ok {
		t.Error("Limit(\"aws\") is known; want unknown")
	}
}

type cloudConfig struct {
	WriteFiles []struct {
		Path        string `yaml:"path"`
		Owner       string `yaml:"owner"`
		Permissions string `yaml:"permissions"`
		Encoding    string `yaml:"encoding"`
		Content     string `yaml:"content"`
	} `yaml:"write_files"`
	RunCmd [][]string `yaml:"runcmd"`
}

func TestCloudConfigCarriesFilesExactly(t *testing.T) {
	for _, in := range []Install{{URL: "https://example.com/it's", SHA256: testSum}, {Preinstalled: true}} {
		f, err := Render([]byte(testConfig), in)
		if err != nil {
			t.Fatal(err)
		}
		ud, err := CloudConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ud, "#cloud-config\n") {
			t.Fatalf("user data does not start with #cloud-config:\n%s", ud)
		}
		var cc cloudConfig
		if err := yaml.Unmarshal([]byte(ud), &cc); err != nil {
			t.Fatalf("user data is not YAML: %v\n%s", err, ud)
		}
		want := map[string]string{ConfigPath: "0600", UnitPath: "0644", InstallPath: "0755"}
		if len(cc.WriteFiles) != len(want) {
			t.Fatalf("write_files has %d entries, want %d", len(cc.WriteFiles), len(want))
		}
		for _, wf := range cc.WriteFiles {
			if wf.Permissions != want[wf.Path] || wf.Owner != "root:root" {
				t.Errorf("%s: permissions %q owner %q, want %q root:root", wf.Path, wf.Permissions, wf.Owner, want[wf.Path])
			}
			if wf.Content != f.Map()[wf.Path] {
				t.Errorf("%s: content differs after the YAML round trip:\n got %q\nwant %q", wf.Path, wf.Content, f.Map()[wf.Path])
			}
		}
		wantCmd := [][]string{{"sh", InstallPath}, {"systemctl", "daemon-reload"}, {"systemctl", "enable", "--now", "meshspan-agent.service"}}
		if len(cc.RunCmd) != len(wantCmd) || strings.Join(cc.RunCmd[2], " ") != strings.Join(wantCmd[2], " ") {
			t.Errorf("runcmd = %v, want %v", cc.RunCmd, wantCmd)
		}
		cloudInitSchema(t, ud)
	}
}

func TestUnit(t *testing.T) {
	f, err := Render([]byte(testConfig), Install{Preinstalled: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Type=notify",
		"ExecStart=/usr/local/bin/meshspan-agent run --config /etc/meshspan/config.yaml --state-dir /var/lib/meshspan",
		"Restart=on-failure",
		"RuntimeDirectory=meshspan",
		"AmbientCapabilities=CAP_NET_ADMIN",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains(f.Unit, line) {
			t.Errorf("unit lacks %q:\n%s", line, f.Unit)
		}
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		// verify needs the binary ExecStart names; check the syntax with a copy
		// whose ExecStart is /bin/true.
		dir := t.TempDir()
		unit := filepath.Join(dir, "meshspan-agent.service")
		body := strings.Replace(f.Unit, "ExecStart=/usr/local/bin/meshspan-agent", "ExecStart=/bin/true", 1)
		if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(path, "verify", "--man=no", unit).CombinedOutput()
		// Unknown keys are only warnings (exit 0): any line about our file fails.
		if err != nil || strings.Contains(string(out), unit) {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}

// cloudInitSchema validates ud with Debian's cloud-init. CI installs it
// (.ci/run); elsewhere: apt-get install cloud-init.
func cloudInitSchema(t *testing.T, ud string) {
	t.Helper()
	ci, err := exec.LookPath("cloud-init")
	if err != nil {
		t.Fatal("cloud-init is not installed; install it (apt-get install -y cloud-init) to validate user data against its schema")
	}
	path := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(path, []byte(ud), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ci, "schema", "--config-file", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
		t.Fatalf("cloud-init schema rejects the user data: %v\n%s\n--- user data ---\n%s", err, out, ud)
	}
}

// TestCloudInitSchemaRejectsBrokenUserData shows the schema check can fail.
func TestCloudInitSchemaRejectsBrokenUserData(t *testing.T) {
	ci, err := exec.LookPath("cloud-init")
	if err != nil {
		t.Fatal("cloud-init is not installed; apt-get install -y cloud-init")
	}
	path := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(path, []byte("#cloud-config\nwrite_files:\n  - path: 7\n    permissions: [1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ci, "schema", "--config-file", path).CombinedOutput(); err == nil {
		t.Fatalf("cloud-init schema accepted invalid user data:\n%s", out)
	}
}

// TestScriptInstallsAndStarts runs the bundle script as root inside a private
// mount namespace whose /etc/meshspan, /etc/systemd/system, /usr/local/bin and
// /usr/local/lib/meshspan are fresh tmpfs mounts, with systemctl replaced by a
// recorder and the agent served from loopback.
func TestScriptInstallsAndStarts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace (CI runs as root)")
	}
	agent := []byte("#!/bin/sh\necho fake agent\n")
	sum := sha256.Sum256(agent)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(agent) }))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name    string
		sha     string
		wantErr string
	}{
		{"good checksum", hex.EncodeToString(sum[:]), ""},
		{"bad checksum", strings.Repeat("00", 32), "expected " + strings.Repeat("00", 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Render([]byte(testConfig), Install{URL: srv.URL + "/meshspan-agent", SHA256: tc.sha})
			if err != nil {
				t.Fatal(err)
			}
			script, err := Script(f)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			log := filepath.Join(dir, "systemctl.log")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "bundle.sh"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			// Inside the namespace: mount tmpfs over the target directories, run
			// the bundle, then copy out what it wrote for inspection.
			out := filepath.Join(dir, "out")
			inner := `set -e
for d in /etc/meshspan /etc/systemd/system /usr/local/bin /usr/local/lib/meshspan; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
rc=0; sh "$1/bundle.sh" || rc=$?
mkdir -p "$1/out"
cp -a /etc/meshspan /etc/systemd/system/meshspan-agent.service /usr/local/lib/meshspan/install-agent.sh "$1/out/" 2>/dev/null || true
cp -a /usr/local/bin/meshspan-agent "$1/out/" 2>/dev/null || true
stat -c '%a' /etc/meshspan/config.yaml > "$1/out/config.mode" 2>/dev/null || true
exit $rc`
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "sh", dir)
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			combined, err := cmd.CombinedOutput()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(string(combined), tc.wantErr) {
					t.Fatalf("bundle with a bad checksum: err %v, output %s; want failure mentioning %q", err, combined, tc.wantErr)
				}
				if _, err := os.Stat(filepath.Join(out, "meshspan-agent")); err == nil {
					t.Fatal("the agent was installed despite a checksum mismatch")
				}
				return
			}
			if err != nil {
				t.Fatalf("bundle script failed: %v\n%s", err, combined)
			}
			for name, want := range map[string]string{
				"meshspan/config.yaml":   f.Config,
				"meshspan-agent.service": f.Unit,
				"install-agent.sh":       f.Install,
				"meshspan-agent":         string(agent),
				"config.mode":            "600\n",
			} {
				got, err := os.ReadFile(filepath.Join(out, name))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q (%v), want %q", name, got, err, want)
				}
			}
			calls, _ := os.ReadFile(log)
			if want := "daemon-reload\nenable meshspan-agent.service\nrestart meshspan-agent.service\n"; string(calls) != want {
				t.Errorf("systemctl calls = %q, want %q", calls, want)
			}
		})
	}
}

func TestScriptRejectsHeredocMarker(t *testing.T) {
	f, err := Render([]byte("a: 1\n"+heredocEnd+"\n"), Install{Preinstalled: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Script(f); err == nil || !strings.Contains(err.Error(), heredocEnd) {
		t.Fatalf("Script() = %v, want an error naming %s", err, heredocEnd)
	}
}

func TestScriptIsPOSIX(t *testing.T) {
	f, err := Render([]byte(testConfig), Install{URL: "https://example.com/a", SHA256: testSum})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Script(f)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"bundle": s, "install": f.Install} {
		cmd := exec.Command("sh", "-n")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s script has a syntax error: %v\n%s", name, err, out)
		}
	}
}

// writtenFiles parses user data and returns path => content as cloud-init
// would write it.
func writtenFiles(t testing.TB, ud string) map[string]string {
	t.Helper()
	var cc cloudConfig
	if err := yaml.Unmarshal([]byte(ud), &cc); err != nil {
		t.Fatalf("user data is not YAML: %v\n%s", err, ud)
	}
	out := map[string]string{}
	for _, wf := range cc.WriteFiles {
		c := wf.Content
		switch wf.Encoding {
		case "":
		case "b64":
			b, err := base64.StdEncoding.DecodeString(c)
			if err != nil {
				t.Fatalf("%s: bad base64: %v", wf.Path, err)
			}
			c = string(b)
		default:
			t.Fatalf("%s: unexpected encoding %q", wf.Path, wf.Encoding)
		}
		out[wf.Path] = c
	}
	return out
}

func TestCloudConfigFallsBackToBase64(t *testing.T) {
	for _, cfg := range []string{
		"  leading: spaces\n",
		"a: 1\n\n",
		"a: \"\x01\"\n",
		"ok: 1\nblank-ish:   \n",
		"a: 1\r\nb: 2\n",
	} {
		f, err := Render([]byte(cfg), Install{Preinstalled: true})
		if err != nil {
			t.Fatal(err)
		}
		ud, err := CloudConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ud, "encoding: b64") {
			t.Errorf("%q was written as a literal block", cfg)
		}
		if got := writtenFiles(t, ud)[ConfigPath]; got != cfg {
			t.Errorf("config %q arrives as %q", cfg, got)
		}
		cloudInitSchema(t, ud)
	}
}

// FuzzCloudConfigContent: whatever the config text, the node gets exactly it.
func FuzzCloudConfigContent(f *testing.F) {
	f.Add(testConfig)
	f.Add("a: 1\n\n")
	f.Add(" x\n")
	f.Add("a:\n  - |\n    x\n")
	f.Fuzz(func(t *testing.T, cfg string) {
		files := Files{Config: cfg, Unit: "[Unit]\n", Install: "#!/bin/sh\n"}
		ud, err := CloudConfig(files)
		if err != nil {
			t.Fatal(err)
		}
		if got := writtenFiles(t, ud)[ConfigPath]; got != cfg {
			t.Fatalf("config %q arrives as %q\n%s", cfg, got, ud)
		}
	})
}
