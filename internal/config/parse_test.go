package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRenderParseRoundTrip(t *testing.T) {
	for name, c := range map[string]*Config{
		"full":    validConfig(),
		"minimal": {Node: Node{Name: "n1"}, Cluster: Cluster{ID: testID, Secret: testSecret}, Discovery: Discovery{Endpoints: []string{"https://d.example.com/"}}},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := Render(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Render(c)): %v\n%s", err, out)
			}
			want := *c
			want.ApplyDefaults()
			if !reflect.DeepEqual(back, &want) {
				t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", back, &want)
			}
			again, err := Render(back)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("Render is not stable: %v\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	valid, err := Render(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"empty", "", "document is empty"},
		{"wrong version", strings.Replace(string(valid), "meshspan/v1", "meshspan/v0", 1), `apiVersion is "meshspan/v0"; set apiVersion: meshspan/v1`},
		{"no version", "kind: MachineConfig\n", `apiVersion is ""`},
		{"unknown field", string(valid) + "bogus: 1\n", "unknown key bogus; valid keys here: advertisedNetworks"},
		{"two documents", string(valid) + "---\n" + string(valid), "more than one YAML document"},
		{"bad duration", strings.Replace(string(valid), "keepalive: 5s", "keepalive: soon", 1), `invalid duration "soon"`},
		{"too large", string(valid) + "#" + strings.Repeat("x", MaxSize), "larger than the"},
		{"invalid value", strings.Replace(string(valid), "mtu: 1420", "mtu: 80", 1), "wireguard.mtu: 80 is out of range"},
		{"not yaml", "{", "config:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	out, err := Render(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("Load(valid) = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("Load(missing) = %v, want an error naming the file", err)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// renders and parses back to the same config, byte-stable.
func FuzzParse(f *testing.F) {
	full, err := Render(validConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte("apiVersion: meshspan/v1\nkind: MachineConfig\nnode: {name: n1}\ncluster: {id: " + testID + ", secret: " + testSecret + "}\ndiscovery: {endpoints: [\"https://d.example.com\"]}\n"))
	f.Add([]byte("apiVersion: meshspan/v1\n"))
	f.Add([]byte(""))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		out, err := Render(c)
		if err != nil {
			t.Fatalf("Render of a parsed config failed: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Render(Parse(x))) failed: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", back, c)
		}
		again, err := Render(back)
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("Render not stable: %v", err)
		}
	})
}

func TestRenderLeavesItsArgumentAlone(t *testing.T) {
	c := validConfig()
	c.Firewall.Rules[0].Action = ""
	c.Node.Labels = map[string]string{}
	if _, err := Render(c); err != nil {
		t.Fatal(err)
	}
	if c.Firewall.Rules[0].Action != "" || c.Node.Labels == nil {
		t.Fatalf("Render changed its argument: rule action %q, labels %v", c.Firewall.Rules[0].Action, c.Node.Labels)
	}
}
