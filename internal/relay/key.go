package relay

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Labels separate the relay keys from every other use of the cluster secret
// (discovery sealing, WireGuard PSK) and from each other.
const (
	keyLabel  = "meshspan relay frame MAC v1"
	pairLabel = "meshspan relay registration v2"
)

var (
	errMalformed = errors.New("malformed frame")
	errBadMAC    = errors.New("bad MAC")
)

// Key authenticates relay frames with HMAC-SHA256. The cluster Key
// (DeriveKey) is the same on every member and signs direct probes; a pair
// key (Key.Pair) is known only to one member and one relay and signs
// registrations.
type Key struct {
	raw  [32]byte
	pool sync.Pool // of hash.Hash (HMAC-SHA256 keyed by raw)
}

func newKey(raw []byte) *Key {
	k := &Key{}
	copy(k.raw[:], raw)
	k.pool.New = func() any { return hmac.New(sha256.New, k.raw[:]) }
	return k
}

// DeriveKey returns the relay key for a cluster: HKDF-SHA256 of the raw
// cluster secret (clusterkey.Key) with a label used for nothing else.
func DeriveKey(clusterSecret [32]byte) (*Key, error) {
	b, err := hkdf.Key(sha256.New, clusterSecret[:], nil, keyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("relay: derive key: %w", err)
	}
	return newKey(b), nil
}

// Pair returns the key that authenticates registrations between member and
// relay: HKDF-SHA256 of the X25519 shared secret of their WireGuard keys,
// salted with the cluster key k and bound to both public keys. Computing it
// takes one of the two private keys, so a registration signed with it
// proves that the member holds the private key of the public key it
// registers (the cluster secret alone no longer suffices), and a reply
// signed with it proves that it came from the relay. private is this node's
// WireGuard private key, peer the other side's public key; self says which
// side this node is.
func (k *Key) Pair(private, peer [32]byte, self Role) (*Key, error) {
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return nil, fmt.Errorf("relay: private key: %w", err)
	}
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return nil, fmt.Errorf("relay: peer public key: %w", err)
	}
	shared, err := priv.ECDH(pub) // fails on low-order points (all-zero secret)
	if err != nil {
		return nil, fmt.Errorf("relay: key exchange with %x: %w", peer[:8], err)
	}
	member, relay := priv.PublicKey().Bytes(), peer[:]
	if self == RoleRelay {
		member, relay = relay, member
	}
	info := pairLabel + string(member) + string(relay)
	b, err := hkdf.Key(sha256.New, shared, k.raw[:], info, 32)
	if err != nil {
		return nil, fmt.Errorf("relay: derive pair key: %w", err)
	}
	return newKey(b), nil
}

// Role is the side of a registration a node takes in Key.Pair.
type Role bool

// Roles.
const (
	RoleMember Role = false
	RoleRelay  Role = true
)

func (k *Key) sum(msg []byte, out []byte) []byte {
	h := k.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	out = h.Sum(out[:0])
	k.pool.Put(h)
	return out
}

func (k *Key) sign(msg, mac []byte) { copy(mac, k.sum(msg, make([]byte, 0, macLen))) }

func (k *Key) verify(msg, mac []byte) bool {
	var buf [macLen]byte
	return hmac.Equal(k.sum(msg, buf[:0]), mac)
}

// publicKey returns the X25519 public key of a WireGuard private key.
func publicKey(private [32]byte) ([32]byte, error) {
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return [32]byte{}, fmt.Errorf("relay: private key: %w", err)
	}
	return [32]byte(priv.PublicKey().Bytes()), nil
}
