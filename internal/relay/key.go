package relay

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// keyLabel separates the relay key from every other use of the cluster
// secret (discovery sealing, WireGuard PSK).
const keyLabel = "meshspan relay frame MAC v1"

var (
	errMalformed = errors.New("malformed frame")
	errBadMAC    = errors.New("bad MAC")
)

// Key authenticates relay control frames. Every member derives the same Key
// from the cluster secret; a stranger cannot.
type Key struct {
	raw  [32]byte
	pool sync.Pool // of hash.Hash (HMAC-SHA256 keyed by raw)
}

// DeriveKey returns the relay key for a cluster: HKDF-SHA256 of the raw
// cluster secret (clusterkey.Key) with a label used for nothing else.
func DeriveKey(clusterSecret [32]byte) (*Key, error) {
	b, err := hkdf.Key(sha256.New, clusterSecret[:], nil, keyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("relay: derive key: %w", err)
	}
	k := &Key{}
	copy(k.raw[:], b)
	k.pool.New = func() any { return hmac.New(sha256.New, k.raw[:]) }
	return k, nil
}

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
