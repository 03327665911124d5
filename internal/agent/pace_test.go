package agent

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

func TestPaceWait(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	for _, c := range []struct {
		name       string
		cost, idle time.Duration // the last pass's duration; time since it ended
		full       bool          // it was a full pass
		want       time.Duration
	}{
		{"isolated change: at once", 3 * time.Millisecond, 2 * time.Second, true, -1900 * time.Millisecond},
		{"burst: burstGap after the last", 3 * time.Millisecond, 5 * time.Millisecond, true, burstGap - 5*time.Millisecond},
		{"burst after a longer pass: ten times its time", 20 * time.Millisecond, 5 * time.Millisecond, true, 195 * time.Millisecond},
		{"slow pass: at most maxPace", 4 * maxPace / 10, 0, true, maxPace},
		{"change pass: ten times too", 20 * time.Millisecond, 0, false, 200 * time.Millisecond},
		{"slow change pass: at most maxChangePace", 4 * maxPace / 10, 0, false, maxChangePace},
	} {
		a := &agent{}
		a.pace.start = t0
		a.pace.end = t0.Add(c.cost)
		a.pace.full = c.full
		if got := a.paceWait(a.pace.end.Add(c.idle)); got != c.want {
			t.Errorf("%s: paceWait = %s, want %s", c.name, got, c.want)
		}
	}
	if got := new(agent).paceWait(t0); got > 0 {
		t.Errorf("no pass yet: paceWait = %s, want none", got)
	}
}

func TestHandshook(t *testing.T) {
	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	hs := time.Unix(1700000000, 0)
	d := newFakeDevice()
	d.SyncPeers([]wg.PeerConfig{{PublicKey: k1, Endpoint: ap("192.0.2.1:51820")}, {PublicKey: k2, Endpoint: ap("192.0.2.2:51820")}})
	d.setStats(wg.PeerStats{PublicKey: k1, Endpoint: ap("192.0.2.1:51820"), LastHandshake: hs})
	a := &agent{dev: d}
	if !a.handshook() {
		t.Error("before any pass, a peer with a handshake: handshook = false, want true")
	}
	stats, _ := d.Peers()
	a.devCache.observe(stats)
	if a.handshook() {
		t.Error("nothing changed: handshook = true, want false")
	}
	// What passes do to the device, and traffic, are no handshake.
	d.setStats(wg.PeerStats{PublicKey: k1, Endpoint: ap("198.51.100.1:40000"), LastHandshake: hs, RxBytes: 1 << 20})
	d.SyncPeers(append(d.lastSync(), wg.PeerConfig{PublicKey: k3, Endpoint: ap("192.0.2.3:51820")}))
	if a.handshook() {
		t.Error("roamed, counted traffic, a peer added: handshook = true, want false")
	}
	d.setStats(wg.PeerStats{PublicKey: k2, Endpoint: ap("192.0.2.2:51820"), LastHandshake: hs})
	if !a.handshook() {
		t.Error("a peer's first handshake: handshook = false, want true")
	}
	d.setStats(wg.PeerStats{PublicKey: k2, Endpoint: ap("192.0.2.2:51820")})
	d.setStats(wg.PeerStats{PublicKey: k3, Endpoint: ap("192.0.2.3:51820"), LastHandshake: hs})
	if !a.handshook() {
		t.Error("a peer added since the pass has a handshake: handshook = false, want true")
	}
	d.setStats(wg.PeerStats{PublicKey: k3, Endpoint: ap("192.0.2.3:51820")})
	d.setStats(wg.PeerStats{PublicKey: k1, Endpoint: ap("192.0.2.1:51820"), LastHandshake: hs.Add(2 * time.Minute)})
	if !a.handshook() {
		t.Error("a peer's new handshake: handshook = false, want true")
	}
}

// A converging agent with a long tick: its probes run no pass while the
// peer stays silent, and a handshake shows as up long before the tick.
func TestConvergeProbe(t *testing.T) {
	cfg, peer := staticPeerConfig(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	dev := newFakeDevice()
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, StateDir: dir, Socket: sock, NoHostPolicy: true, MemoryLimit: -1, Tick: time.Hour,
			OpenDevice: func(wg.Options) (Device, error) { return dev, nil },
			HostAddrs:  func() ([]netip.Addr, error) { return nil, nil },
			MAC:        func() (net.HardwareAddr, error) { return randomMAC(), nil },
			Ready:      func() { close(ready) },
		})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("no first pass")
	}
	// The first passes change the device (the peer configured, then kept
	// quiet), which the next probe sees; then the probes run no pass. One
	// that did would sync the device.
	syncs := func() int {
		dev.mu.Lock()
		defer dev.mu.Unlock()
		return len(dev.syncs)
	}
	before := syncs()
	for settle := time.Now().Add(10 * time.Second); time.Now().Before(settle); {
		time.Sleep(3 * convergeTick)
		n := syncs()
		if n == before {
			break
		}
		before = n
	}
	time.Sleep(8 * convergeTick)
	if n := syncs() - before; n != 0 {
		t.Errorf("silent peer: %d passes in %s of probes, want none", n, 8*convergeTick)
	}

	dev.setStats(wg.PeerStats{PublicKey: peer, Endpoint: ap("192.0.2.2:51820"), LastHandshake: time.Now(), RxBytes: 92})
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := FetchStatus(ctx, sock)
		if err == nil && len(s.Peers) == 1 && s.Peers[0].State == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake not seen within 10 s (tick 1 h): %v %+v", err, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
