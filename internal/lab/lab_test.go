package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

func TestParseOutputs(t *testing.T) {
	raw, err := os.ReadFile("testdata/outputs.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseOutputs(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Nodes) != 2 || out.Nodes[0].Name != "hetzner-1" || out.Nodes[1].Name != "metal-2" {
		t.Fatalf("nodes = %+v, want hetzner-1 then metal-2", out.Nodes)
	}
	m := out.Nodes[1]
	if !m.BehindNAT || m.Boot() != "bundle" || m.Address != netip.MustParsePrefix("198.51.100.10/24") {
		t.Errorf("metal-2 = %+v", m)
	}
	if out.Nodes[0].Boot() != "cloud-init" {
		t.Errorf("hetzner-1 boots with %s, want cloud-init", out.Nodes[0].Boot())
	}
	if out.Network.NAT.Mode != netlab.NATFullyRandomPorts || out.Discovery.Host != "203.0.113.2:3000" {
		t.Errorf("network = %+v, discovery = %v", out.Network, out.Discovery)
	}
}

func TestParseOutputsErrors(t *testing.T) {
	raw, err := os.ReadFile("testdata/outputs.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{`"http://203.0.113.2:3000"`, `"http://203.0.113.9:3000"`, "must point at network.discovery"},
		{`"http://203.0.113.2:3000"`, `"https://203.0.113.2:3000"`, "plaintext"},
		{`"198.51.100.10/24", "behind_nat": true`, `"203.0.113.10/24", "behind_nat": true`, "outside 198.51.100.0/24"},
		{`"203.0.113.11/24"`, `"203.0.113.300/24"`, "is not a prefix"},
		{`"fully-random"`, `"symmetric"`, "use port-preserving, random or fully-random"},
		{`"bundle_script": "#!/bin/sh\necho bundle\n"`, `"bundle_script": ""`, `"metal-2": bundle_script is empty`},
		{`"hetzner-1": {`, `"Hetzner_1": {`, "node name"},
		{`"mesh_prefix"`, `"mesh_prefixes"`, `no output "mesh_prefix"`},
	} {
		bad := strings.Replace(string(raw), tc.from, tc.to, 1)
		if bad == string(raw) {
			t.Fatalf("fixture has no %s", tc.from)
		}
		_, err := ParseOutputs([]byte(bad))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %s: error %v, want it to contain %q", tc.to, err, tc.want)
		}
	}
}

func TestRebase(t *testing.T) {
	in := "mkdir -p /etc/meshspan /usr/local/lib/meshspan\nExecStart=/usr/local/bin/meshspan-agent run --config /etc/meshspan/config.yaml --state-dir /var/lib/meshspan\ncat > /etc/systemd/system/x.service\n/etc/hosts /usr/bin/sh\n"
	want := "mkdir -p /r/etc/meshspan /r/usr/local/lib/meshspan\nExecStart=/r/usr/local/bin/meshspan-agent run --config /r/etc/meshspan/config.yaml --state-dir /r/var/lib/meshspan\ncat > /r/etc/systemd/system/x.service\n/etc/hosts /usr/bin/sh\n"
	if got := Rebase(in, "/r"); got != want {
		t.Errorf("Rebase:\n%s\nwant:\n%s", got, want)
	}
}

func TestCloudConfig(t *testing.T) {
	root := t.TempDir()
	ud := "#cloud-config\nwrite_files:\n  - path: " + root + "/etc/meshspan/config.yaml\n    owner: root:root\n    permissions: \"0600\"\n    content: |\n      a: 1\nruncmd:\n  - [sh, /x.sh]\n  - echo hi\n"
	cc, err := ParseCloudConfig(ud)
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.RunCmd) != 2 || strings.Join(cc.RunCmd[0], " ") != "sh /x.sh" || strings.Join(cc.RunCmd[1], " ") != "sh -c echo hi" {
		t.Errorf("runcmd = %q", cc.RunCmd)
	}
	if err := cc.Write(root); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "etc/meshspan/config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/meshspan/config.yaml")); string(b) != "a: 1\n" {
		t.Errorf("content %q", b)
	}
	if err := cc.Write(t.TempDir()); err == nil || !strings.Contains(err.Error(), "outside the node root") {
		t.Errorf("Write to another root: %v, want an outside-the-root error", err)
	}

	for _, bad := range []string{
		"#!/bin/sh\n",
		"#cloud-config\npackages: [curl]\n",
		"#cloud-config\nwrite_files:\n  - path: relative\n",
		"#cloud-config\nwrite_files:\n  - path: /a\n    owner: nobody\n",
	} {
		if _, err := ParseCloudConfig(bad); err == nil {
			t.Errorf("ParseCloudConfig(%q): want error", bad)
		}
	}
}

func TestExecStart(t *testing.T) {
	argv, err := ExecStart("[Service]\nType=notify\nExecStart=/r/bin/agent run --config /r/c.yaml\n")
	if err != nil || strings.Join(argv, " ") != "/r/bin/agent run --config /r/c.yaml" {
		t.Errorf("ExecStart = %q, %v", argv, err)
	}
	for _, bad := range []string{"[Service]\n", "ExecStart=\n", "ExecStart=/a\nExecStart=/b\n", "ExecStart=/a \"b c\"\n", "ExecStart=/a %i\n"} {
		if _, err := ExecStart(bad); err == nil {
			t.Errorf("ExecStart(%q): want error", bad)
		}
	}
}

func TestAgentStartRequested(t *testing.T) {
	for _, ok := range [][]string{
		{"daemon-reload", "enable --now meshspan-agent.service"},
		{"daemon-reload", "enable meshspan-agent.service", "restart meshspan-agent.service"},
	} {
		if err := AgentStartRequested(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range [][]string{nil, {"enable meshspan-agent.service"}, {"restart meshspan-agent.service"}, {"enable --now other.service"}} {
		if err := AgentStartRequested(bad); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	st, err := ParseStatus([]byte(`{"node":"a","address":"fd00::1","peers":[
		{"name":"c","state":"down","endpoint":"","rxBytes":0,"txBytes":92},
		{"name":"b","state":"up","endpoint":"203.0.113.2:51820","rxBytes":10,"txBytes":20}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "a" || st.Address != netip.MustParseAddr("fd00::1") || len(st.Peers) != 2 || st.Peers[0].Name != "b" || st.Peers[0].RxBytes != 10 {
		t.Errorf("status = %+v", st)
	}
	for _, bad := range []string{`{`, `{"address":"nope"}`, `{"address":"fd00::1","peers":[{"name":"b"}]}`} {
		if _, err := ParseStatus([]byte(bad)); err == nil {
			t.Errorf("ParseStatus(%s): want error", bad)
		}
	}
}

func TestProgressAndMatrix(t *testing.T) {
	views := []NodeView{
		{Name: "a", Provider: "hetzner", Boot: "cloud-init", Underlay: netip.MustParseAddr("203.0.113.1"), Mesh: netip.MustParseAddr("fd00::a"), Phase: "running", Peers: map[string]string{"b": "up"}},
		{Name: "b", Provider: "baremetal", Boot: "bundle", Underlay: netip.MustParseAddr("198.51.100.10"), Phase: "starting"},
	}
	got := Progress(views, 2340*time.Millisecond)
	for _, want := range []string{"t+2.3s", "peer links up: 1/2", "fd00::a", "starting"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress lacks %q:\n%s", want, got)
		}
	}
	if allUp(views) {
		t.Error("allUp with b starting")
	}
	views[1].Phase, views[1].Mesh, views[1].Peers = "running", netip.MustParseAddr("fd00::b"), map[string]string{"a": "up"}
	if !allUp(views) {
		t.Error("allUp false with every link up")
	}

	m := PingMatrix([]string{"a", "b"}, map[[2]string]PingResult{
		{"a", "b"}: {RTT: 1500 * time.Microsecond},
		{"b", "a"}: {Err: os.ErrDeadlineExceeded},
	})
	if !strings.Contains(m, "1.50 ms") || !strings.Contains(m, "FAIL") {
		t.Errorf("matrix:\n%s", m)
	}
}
