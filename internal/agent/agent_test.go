package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

const testClusterID = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="

func TestLoadIdentityCreatesOnceAndKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	mac := net.HardwareAddr{0x2e, 0x1a, 0xb6, 0x53, 0x81, 0x69}
	calls := 0
	macFn := func() (net.HardwareAddr, error) { calls++; return mac, nil }

	id, err := LoadIdentity(dir, testClusterID, macFn)
	if err != nil {
		t.Fatal(err)
	}
	// The fact sheet's vector: this cluster ID and MAC give this address.
	if got := id.Address.String(); got != "fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169" {
		t.Errorf("address = %s, want fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169", got)
	}
	if len(id.AffiliateID) < 40 {
		t.Errorf("affiliate ID %q is too short for 32 random bytes in base62", id.AffiliateID)
	}
	fi, err := os.Stat(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v, want 0600 (it holds the private key)", fi.Mode().Perm())
	}

	// Second load: same identity, even if the MAC changed meanwhile.
	mac = randomMAC()
	again, err := LoadIdentity(dir, testClusterID, macFn)
	if err != nil {
		t.Fatal(err)
	}
	if again != id || calls != 1 {
		t.Errorf("reload gave %+v (mac asked %d times); want %+v, asked once", again, calls, id)
	}

	// Another cluster: the key and affiliate ID stay, the address moves into its prefix.
	other, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	moved, err := LoadIdentity(dir, other.ID, macFn)
	if err != nil {
		t.Fatal(err)
	}
	if moved.PrivateKey != id.PrivateKey || moved.AffiliateID != id.AffiliateID || !clusterkey.MeshPrefix(other.ID).Contains(moved.Address) {
		t.Errorf("after cluster change: %+v; want same key and affiliate ID, address in %s", moved, clusterkey.MeshPrefix(other.ID))
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("privateKey: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadIdentity(dir, testClusterID, func() (net.HardwareAddr, error) { return randomMAC(), nil })
	if err == nil || !strings.Contains(err.Error(), "privateKey") || !strings.Contains(err.Error(), "move the file away") {
		t.Errorf("bad key: err = %v; want one naming privateKey and the fix", err)
	}
	noMAC := errors.New("no link")
	if _, err := LoadIdentity(t.TempDir(), testClusterID, func() (net.HardwareAddr, error) { return nil, noMAC }); !errors.Is(err, noMAC) {
		t.Errorf("no MAC: err = %v; want it passed through", err)
	}
}

func TestFirstPhysicalMAC(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	links := []link{
		{Name: "wlan0", Kind: "device", MAC: mac("02:00:00:00:00:03")},
		{Name: "lo", Kind: "device", MAC: mac("00:00:00:00:00:00"), Loopback: true},
		{Name: "br0", Kind: "bridge", MAC: mac("02:00:00:00:00:01")},
		{Name: "eth1", Kind: "veth", MAC: mac("02:00:00:00:00:02")},
		{Name: "eth0", Kind: "device", MAC: mac("02:00:00:00:00:04")},
		{Name: "docker0", Kind: "bridge", MAC: mac("02:00:00:00:00:05")},
	}
	got, err := firstPhysicalMAC(links)
	if err != nil || got.String() != "02:00:00:00:00:04" {
		t.Errorf("firstPhysicalMAC = %v, %v; want eth0's 02:00:00:00:00:04", got, err)
	}
	if _, err := firstPhysicalMAC([]link{{Name: "lo", Kind: "device", Loopback: true}}); err == nil {
		t.Error("firstPhysicalMAC found a MAC among loopback only")
	}
}

func testStatus() *Status {
	return &Status{
		Node: "n1", PublicKey: "pk1", Address: "fd00::1", Interface: "meshspan0", Mode: "userspace", ListenPort: 51820,
		Endpoints: []string{"192.0.2.1:51820"}, Warnings: []string{"something odd"},
		Peers: []*PeerStatus{
			{Name: "n2", PublicKey: "pk2", Endpoint: "192.0.2.2:51820", State: "up", RxBytes: 1536, TxBytes: 3 << 20,
				LastHandshake: "2026-01-01T00:00:00Z"},
			{Name: "n3", PublicKey: "pk3", State: "unknown"},
			{Name: "n4", PublicKey: "pk4", State: "up", Endpoint: "[100::1]:7", Path: "relayed", Via: "r1"},
			{Name: "n5", PublicKey: "pk5", State: "down", Path: "no-path", PathReason: "no direct handshake in 12s and no relay member is available"},
			// Was reachable, went silent: a dead peer, not a NAT problem.
			{Name: "n6", PublicKey: "pk6", State: "down", Path: "no-path", PathReason: "no direct handshake in 12s and no relay member is available",
				LastHandshake: "2026-01-01T00:00:00Z"},
		},
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	now, _ := time.Parse(time.RFC3339, "2026-01-01T00:00:42Z")
	if err := WriteTable(&b, testStatus(), now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"(userspace)", "warning: something odd", "PUBLIC KEY", "pk2", "192.0.2.2:51820", "1.5 KiB", "3.0 MiB", "42s ago", "never",
		"PATH", "VIA", "relayed", "r1", "no reachable endpoint", "n5: no reachable endpoint: no direct handshake in 12s and no relay member is available"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "pk4") && (!strings.Contains(l, "relayed") || !strings.Contains(l, "r1")) {
			t.Errorf("relayed peer's row %q lacks its path and relay", l)
		}
		if strings.HasPrefix(l, "pk5") && !strings.Contains(l, "no reachable endpoint") {
			t.Errorf("unreachable peer's row %q does not say so", l)
		}
		if strings.HasPrefix(l, "pk6") && (strings.Contains(l, "no reachable endpoint") || !strings.Contains(l, "down")) {
			t.Errorf("dead peer's row %q must read down, not unreachable", l)
		}
		if strings.HasPrefix(l, "n6:") {
			t.Errorf("dead peer listed as unreachable: %q", l)
		}
	}
}

func TestCollector(t *testing.T) {
	now, _ := time.Parse(time.RFC3339, "2026-01-01T00:00:10Z")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&collector{snapshot: testStatus, now: func() time.Time { return now }})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[key] = v
		}
	}
	for key, want := range map[string]float64{
		"meshspan_peer_up,node=n2,peer=pk2,state=up":                 1,
		"meshspan_peer_up,node=n3,peer=pk3,state=unknown":            0,
		"meshspan_peer_receive_bytes_total,node=n2,peer=pk2":         1536,
		"meshspan_peer_last_handshake_age_seconds,node=n2,peer=pk2":  10,
		"meshspan_wireguard_mode,interface=meshspan0,mode=userspace": 1,
		"meshspan_peers,state=up":                                    2,
		"meshspan_warnings":                                          1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %t), want %v", key, v, ok, want)
		}
	}
	if _, ok := got["meshspan_peer_last_handshake_age_seconds,node=n3,peer=pk3"]; ok {
		t.Error("handshake age reported for a peer that never handshook")
	}
}

func TestSdNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := l.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("systemd got %q, %v; want READY=1", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want a no-op", err)
	}
}

func TestStatusSocketRefusesLiveAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	l, err := listenSocket(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := listenSocket(path); err == nil || !strings.Contains(err.Error(), "another agent is running") {
		t.Errorf("second listen: %v; want a refusal naming the running agent", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := FetchStatus(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "no agent answers") {
		t.Errorf("FetchStatus without agent: %v; want 'no agent answers'", err)
	}
}

// TestRefusedAdvertsCounted: a refusal counts once when it appears, not on
// every pass it persists; it counts again after it went away and returned.
func TestRefusedAdvertsCounted(t *testing.T) {
	var r refusedAdverts
	k := wgtypes.Key{7}
	def := mesh.Refusal{Peer: "evil", PublicKey: k, Prefix: netip.MustParsePrefix("0.0.0.0/0"), Reason: "a default route"}
	wide := mesh.Refusal{Peer: "evil", PublicKey: k, Prefix: netip.MustParsePrefix("0.0.0.0/1"), Reason: "wide"}
	for _, pass := range [][]mesh.Refusal{{def}, {def}, {def, wide}, {}, {def}} {
		r.observe(pass)
	}
	var m dto.Metric
	if err := r.counter().Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Errorf("meshspan_refused_adverts_total = %v; want 3 (default, wide, default again)", got)
	}
}

// A state line is logged for a new peer and for a changed state, whether
// the peers kept their order or not, and for nothing else.
func TestLogTransitions(t *testing.T) {
	var buf bytes.Buffer
	a := &agent{log: slog.New(slog.NewTextHandler(&buf, nil))}
	st := func(peers ...string) *Status { // "key=state"
		s := &Status{}
		for _, p := range peers {
			k, v, _ := strings.Cut(p, "=")
			s.Peers = append(s.Peers, &PeerStatus{Name: k, PublicKey: k, State: v})
		}
		return s
	}
	for _, c := range []struct {
		old, cur *Status
		want     []string // names logged
	}{
		{nil, st("a=unknown", "b=unknown"), []string{"a", "b"}},
		{st("a=unknown", "b=unknown"), st("a=unknown", "b=unknown"), nil},
		{st("a=unknown", "b=unknown"), st("a=up", "b=unknown"), []string{"a"}},
		{st("a=up", "b=unknown"), st("b=down", "a=up"), []string{"b"}},
		{st("a=up", "b=down"), st("a=up", "c=unknown", "b=down"), []string{"c"}},
	} {
		buf.Reset()
		a.logTransitions(c.old, c.cur)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if _, rest, ok := strings.Cut(l, " peer="); ok {
				got = append(got, strings.Fields(rest)[0])
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%+v -> %+v: logged %v, want %v", c.old, c.cur, got, c.want)
		}
	}
}
