package agent

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"gopkg.in/yaml.v3"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
)

// IdentityFile is the file in the state directory that holds the node's
// identity. It contains the WireGuard private key: mode 0600, never sent.
const IdentityFile = "identity.yaml"

// Identity is what makes a node the same node across restarts.
type Identity struct {
	PrivateKey wgtypes.Key
	// Address is the node's mesh address (cluster ULA /64 + EUI-64 of the
	// first physical link's MAC, as Talos derives it).
	Address     netip.Addr
	AffiliateID string

	// pub caches PrivateKey's public key (LoadIdentity sets it): every
	// reconcile pass needs it, and it costs an X25519 multiplication.
	pub wgtypes.Key
}

// PublicKey is the WireGuard public key peers configure.
func (id Identity) PublicKey() wgtypes.Key {
	if id.pub != (wgtypes.Key{}) {
		return id.pub
	}
	return id.PrivateKey.PublicKey()
}

type identityFile struct {
	PrivateKey  string `yaml:"privateKey"`
	Address     string `yaml:"address"`
	AffiliateID string `yaml:"affiliateId"`
}

// LoadIdentity reads the identity from stateDir, creating whatever part of
// it is missing: a new key, a new affiliate ID, the address derived from
// macs (the host's links, see FirstPhysicalMAC). An address outside the
// cluster's prefix (the cluster ID changed) is derived again.
func LoadIdentity(stateDir, clusterID string, mac func() (net.HardwareAddr, error)) (Identity, error) {
	path := filepath.Join(stateDir, IdentityFile)
	var f identityFile
	data, err := readIdentity(path)
	switch {
	case err == nil:
		if err := yaml.Unmarshal(data, &f); err != nil {
			return Identity{}, fmt.Errorf("agent: identity: %s is corrupt (%v); move it away to start as a new node", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return Identity{}, fmt.Errorf("agent: identity: read %s: %w", path, err)
	}

	var id Identity
	dirty := false
	if f.PrivateKey != "" {
		if id.PrivateKey, err = wgtypes.ParseKey(f.PrivateKey); err != nil {
			return Identity{}, fmt.Errorf("agent: identity: %s: privateKey does not parse; move the file away to start as a new node", path)
		}
	} else {
		if id.PrivateKey, err = wgtypes.GeneratePrivateKey(); err != nil {
			return Identity{}, fmt.Errorf("agent: identity: generate key: %w", err)
		}
		dirty = true
	}
	prefix := clusterkey.MeshPrefix(clusterID)
	if a, err := netip.ParseAddr(f.Address); err == nil && prefix.Contains(a) {
		id.Address = a
	} else {
		m, err := mac()
		if err != nil {
			return Identity{}, err
		}
		if id.Address, err = clusterkey.NodeAddress(prefix, m); err != nil {
			return Identity{}, fmt.Errorf("agent: identity: %w", err)
		}
		dirty = true
	}
	if f.AffiliateID != "" {
		id.AffiliateID = f.AffiliateID
	} else {
		if id.AffiliateID, err = discovery.NewAffiliateID(); err != nil {
			return Identity{}, fmt.Errorf("agent: identity: generate affiliate ID: %w", err)
		}
		dirty = true
	}
	if dirty {
		if err := writeIdentity(stateDir, path, id); err != nil {
			return Identity{}, err
		}
	}
	id.pub = id.PrivateKey.PublicKey()
	return id, nil
}

// readIdentity reads the identity file, a regular file of at most 64 KiB,
// and tightens it to 0600 if group or others may access it (copied in with
// the wrong mode, say): it holds the node's private key.
func readIdentity(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file; move it away to start as a new node", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("%s holds the private key but is mode %#o, and chmod 600 failed: %w", path, fi.Mode().Perm(), err)
		}
	}
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

func writeIdentity(dir, path string, id Identity) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: identity: create state directory %s: %w (set --state-dir to a writable directory)", dir, err)
	}
	data, err := yaml.Marshal(identityFile{PrivateKey: id.PrivateKey.String(), Address: id.Address.String(), AffiliateID: id.AffiliateID})
	if err != nil {
		return fmt.Errorf("agent: identity: encode: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return fmt.Errorf("agent: identity: write to %s: %w (set --state-dir to a writable directory)", dir, err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600: the key is never readable by others.
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("agent: identity: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("agent: identity: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("agent: identity: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("agent: identity: install %s: %w", path, err)
	}
	return nil
}

// link is what FirstPhysicalMAC needs to know of a network link.
type link struct {
	Name     string
	Kind     string // netlink type: device, veth, bridge, wireguard, tuntap, ...
	MAC      net.HardwareAddr
	Loopback bool
}

// firstPhysicalMAC picks the MAC of the first physical link sorted by name,
// as Talos does; in a network namespace a veth counts as physical.
func firstPhysicalMAC(links []link) (net.HardwareAddr, error) {
	sort.Slice(links, func(i, j int) bool { return links[i].Name < links[j].Name })
	for _, l := range links {
		if l.Loopback || (l.Kind != "device" && l.Kind != "veth") || (len(l.MAC) != 6 && len(l.MAC) != 8) {
			continue
		}
		zero := true
		for _, b := range l.MAC {
			zero = zero && b == 0
		}
		if !zero {
			return l.MAC, nil
		}
	}
	return nil, errors.New("agent: identity: no physical network link with a MAC address to derive the mesh address from; attach one, or copy an identity.yaml with an address into the state directory")
}

// randomMAC is a locally administered unicast MAC, for tests.
func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&^0x01 | 0x02
	return m
}
