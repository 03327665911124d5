package agent

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// Run with a fake Device: no kernel, no TUN, the real steps. The device
// gets the static peer, status serves it, and the device is closed once on
// the way out.
func TestRunWithFakeDevice(t *testing.T) {
	cfg, peer := staticPeerConfig(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	dev := newFakeDevice()
	var opened wg.Options
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config: cfg, StateDir: dir, Socket: sock, NoHostPolicy: true, MemoryLimit: -1,
			OpenDevice: func(o wg.Options) (Device, error) { opened = o; return dev, nil },
			HostAddrs:  func() ([]netip.Addr, error) { return nil, nil },
			MAC:        func() (net.HardwareAddr, error) { return randomMAC(), nil },
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := FetchStatus(ctx, sock)
		if err == nil && len(s.Peers) == 1 {
			if s.Peers[0].PublicKey != peer.String() || s.Interface != "meshspan-fake" {
				t.Errorf("status %+v: want the static peer on the fake device", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status with the peer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := dev.lastSync(); len(got) != 1 || got[0].PublicKey != peer {
		t.Errorf("device programmed with %+v, want the static peer", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	dev.mu.Lock()
	closed := dev.closed
	dev.mu.Unlock()
	if !closed {
		t.Error("the device was not closed on the way out")
	}
	if opened.Name != cfg.WireGuard.Interface || opened.ListenPort != cfg.WireGuard.ListenPort || !opened.Address.IsValid() {
		t.Errorf("OpenDevice got %+v, want the config's interface, port and the mesh address", opened)
	}
}

// staticPeerConfig is node n1's config with one static peer, n2, whose
// key it returns.
func staticPeerConfig(t *testing.T) (*config.Config, wgtypes.Key) {
	t.Helper()
	sec, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	peer := testKey(t)
	cfg := &config.Config{
		APIVersion: config.APIVersion,
		Node:       config.Node{Name: "n1"},
		Cluster:    config.Cluster{ID: sec.ID, Secret: sec.Secret},
		StaticPeers: []config.StaticPeer{{Name: "n2", PublicKey: peer.String(),
			Address: clusterkey.MeshPrefix(sec.ID).Addr().Next().String(), Endpoints: []string{"192.0.2.2:51820"}}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg, peer
}
