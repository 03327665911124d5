package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// An identity file others can read (copied in with the wrong mode, or made
// by an older agent) is tightened to 0600 when loaded.
func TestLoadIdentityTightensItsFile(t *testing.T) {
	dir := t.TempDir()
	mac := func() (net.HardwareAddr, error) { return randomMAC(), nil }
	id, err := LoadIdentity(dir, testClusterID, mac)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, IdentityFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := LoadIdentity(dir, testClusterID, mac)
	if err != nil || again != id {
		t.Fatalf("reload: %v %+v", err, again)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("identity file left at %v; want 0600", fi.Mode().Perm())
	}
}

// --socket pointing at a file that is not a socket: refused, and the file
// is left alone.
func TestStatusSocketNeverRemovesAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "precious.txt")
	if err := os.WriteFile(path, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := listenSocket(path)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a regular file: %v; want a refusal", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me\n" {
		t.Fatalf("the file is gone or changed: %q, %v", b, err)
	}
	removeSocket(path) // the shutdown path
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("shutdown removed the file: %v", err)
	}
	// A stale socket (no agent behind it) is still replaced.
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = listenSocket(sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l.Close()
}

// status without the right to the socket says so, instead of suggesting
// that no agent runs. Root passes every permission check, so the client runs
// as nobody in a child process (this test binary, copied where nobody may
// run it).
func TestStatusPermissionDenied(t *testing.T) {
	if sock := os.Getenv("MESHSPAN_TEST_STATUS_SOCKET"); sock != "" {
		_, err := FetchStatus(context.Background(), sock)
		fmt.Println("status error:", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the client as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // nobody may reach the socket and the binary
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := listenSocket(sock) // mode 0660, root's
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "agent.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestStatusPermissionDenied$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MESHSPAN_TEST_STATUS_SOCKET="+sock)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "permission denied") || strings.Contains(string(out), "is `meshspan-agent run` running") {
		t.Errorf("status as nobody said:\n%s\nwant it to say permission denied", out)
	}
	// Nobody listening: that message stays.
	refused := &url.Error{Op: "Get", URL: "http://agent/status", Err: &net.OpError{Op: "dial", Net: "unix",
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	if err := statusError("/x.sock", refused); !strings.Contains(err.Error(), "no agent answers") {
		t.Errorf("connection refused: %q", err)
	}
}

// fakeDisco is a discovery client that received blobs it could not open.
type fakeDisco struct {
	changes  chan struct{}
	failures uint64
}

func (f *fakeDisco) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeDisco) SetLocal(discovery.Affiliate, map[string][]netip.AddrPort) {
}
func (f *fakeDisco) Affiliates() []*discovery.Affiliate { return nil }
func (f *fakeDisco) ObservedAddress() netip.Addr        { return netip.Addr{} }
func (f *fakeDisco) Changes() <-chan struct{}           { return f.changes }
func (f *fakeDisco) DecryptFailures() uint64            { return f.failures }

// freePort returns a loopback TCP address nothing listens on (a moment ago).
func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// One agent: --metrics-listen serves /metrics and nothing else (/status
// lists keys, endpoints and AllowedIPs), and affiliates that do not decrypt
// show as a status warning and a metric.
func TestMetricsListenAndDecryptFailures(t *testing.T) {
	secrets, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: "n1"},
		Cluster:    config.Cluster{ID: secrets.ID, Secret: secrets.Secret},
		Discovery:  config.Discovery{Endpoints: []string{"https://discovery.example.com/"}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	metrics := freePort(t)
	tun := tuntest.NewChannelTUN()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, StateDir: dir, Socket: sock, NoHostPolicy: true, MemoryLimit: -1, MetricsListen: metrics,
			Discovery: &fakeDisco{changes: make(chan struct{}), failures: 3},
			OpenDevice: func(o wg.Options) (Device, error) {
				o.Bind = bindtest.NewChannelBinds()[0]
				return wg.NewUserspace(tun.TUN(), o)
			},
			HostAddrs: func() ([]netip.Addr, error) { return nil, nil },
			MAC:       func() (net.HardwareAddr, error) { return randomMAC(), nil },
		})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	}()
	var s *Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, err = FetchStatus(ctx, sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(strings.Join(s.Warnings, "\n"), "3 affiliate records did not decrypt") {
		t.Errorf("warnings %q do not report the decrypt failures", s.Warnings)
	}

	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + metrics
	if code, body := get(t, c, base+"/metrics"); code != 200 || !strings.Contains(body, "meshspan_discovery_decrypt_failures_total 3") {
		t.Errorf("/metrics on --metrics-listen: %d, decrypt failures metric missing", code)
	}
	for _, p := range []string{"/status", "/", "/debug/pprof/"} {
		if code, body := get(t, c, base+p); code != http.StatusNotFound || strings.Contains(body, s.PublicKey) {
			t.Errorf("GET %s on --metrics-listen: %d; want 404", p, code)
		}
	}
}
