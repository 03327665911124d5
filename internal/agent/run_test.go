package agent

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// TestRunInProcess runs two agents in this process on channel TUNs and
// Binds (real WireGuard crypto, no kernel, no root): they configure each
// other from static peers, report each other up, carry a packet, and stop
// cleanly when their context ends.
func TestRunInProcess(t *testing.T) {
	secrets, err := clusterkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	binds := bindtest.NewChannelBinds()
	type node struct {
		dir, sock string
		id        Identity
		tun       *tuntest.ChannelTUN
		lan       netip.Addr // an advertised network (/32) to ping through
		done      chan error
	}
	var nodes [2]*node
	for i := range nodes {
		dir := t.TempDir()
		n := &node{dir: dir, sock: filepath.Join(dir, "agent.sock"), tun: tuntest.NewChannelTUN(),
			lan: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), done: make(chan error, 1)}
		if n.id, err = LoadIdentity(dir, secrets.ID, func() (net.HardwareAddr, error) { return randomMAC(), nil }); err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	paths := &traversalRecorder{}
	for i, n := range nodes {
		o := nodes[1-i]
		cfg := &config.Config{
			APIVersion: config.APIVersion,
			Node:       config.Node{Name: fmt.Sprintf("n%d", i+1)},
			Cluster:    config.Cluster{ID: secrets.ID, Secret: secrets.Secret},
			StaticPeers: []config.StaticPeer{{
				Name: fmt.Sprintf("n%d", 2-i), PublicKey: o.id.PublicKey().String(), Address: o.id.Address.String(),
				// bindtest: port 1 reaches bind 1, port 2 reaches bind 0.
				Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", i+1)},
				Networks:  []string{netip.PrefixFrom(o.lan, 32).String()},
				RelayPort: 3478 * (1 - i), // n2 relays, says n1's config
			}},
		}
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		opts := Options{
			Config: cfg, StateDir: n.dir, Socket: n.sock, NoHostPolicy: true, MemoryLimit: -1,
			OpenDevice: func(o wg.Options) (Device, error) {
				o.Bind = binds[i]
				return wg.NewUserspace(n.tun.TUN(), o)
			},
			HostAddrs: func() ([]netip.Addr, error) { return nil, nil },
			MAC:       func() (net.HardwareAddr, error) { return nil, fmt.Errorf("identity exists; MAC not needed") },
		}
		if i == 0 {
			opts.Paths = paths
		}
		go func() { n.done <- Run(ctx, opts) }()
	}

	deadline := time.Now().Add(10 * time.Second)
	for i, n := range nodes {
		for {
			s, err := FetchStatus(ctx, n.sock)
			if err == nil && len(s.Peers) == 1 && s.Peers[0].State == "up" {
				if s.PublicKey != n.id.PublicKey().String() || s.Peers[0].PublicKey != nodes[1-i].id.PublicKey().String() {
					t.Fatalf("n%d status %+v does not match the identities", i+1, s)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n%d never saw its peer up: %v %+v", i+1, err, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// n1's NAT traversal learnt from its config that n2 relays on 3478.
	if got := paths.relayPort(nodes[1].id.PublicKey()); got != 3478 {
		t.Errorf("n1's traversal saw relay port %d for n2, want 3478 from its static peer config", got)
	}

	ping := tuntest.Ping(nodes[1].lan, nodes[0].lan)
	nodes[0].tun.Outbound <- ping
	select {
	case got := <-nodes[1].tun.Inbound:
		if !bytes.Equal(got, ping) {
			t.Fatalf("n2 received %x, want the ping", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ping from n1's advertised network did not reach n2")
	}

	cancel()
	for i, n := range nodes {
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("n%d Run returned %v after cancel, want nil", i+1, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("n%d Run did not return after cancel", i+1)
		}
		if _, err := FetchStatus(context.Background(), n.sock); err == nil {
			t.Errorf("n%d status socket still answers after shutdown", i+1)
		}
	}
}

// traversalRecorder is a PathChooser and Traverser that only records what
// the agent hands it; its advisory choices leave endpoints to the agent.
type traversalRecorder struct {
	mu   sync.Mutex
	seen map[wgtypes.Key]discovery.Traversal
}

func (r *traversalRecorder) Traverse(_ time.Time, peers map[wgtypes.Key]discovery.Traversal) discovery.Traversal {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = maps.Clone(peers)
	return discovery.Traversal{}
}

func (r *traversalRecorder) Choose(_ time.Time, peers []mesh.Peer, _ map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]PathChoice {
	out := map[wgtypes.Key]PathChoice{}
	for _, p := range peers {
		out[p.PublicKey] = PathChoice{Path: "direct", Advisory: true}
	}
	return out
}

func (r *traversalRecorder) relayPort(k wgtypes.Key) uint16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[k].RelayPort
}
