// Package clusterkey holds what a cluster shares (its ID and secret) and what
// is derived from it: the mesh ULA prefix, node mesh addresses, the WireGuard
// pre-shared key and the discovery encryption key. Values and derivations are
// those of Talos KubeSpan, so Talos and meshspan nodes can share one mesh.
package clusterkey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Size is the length of the cluster ID and secret in raw bytes.
const Size = 32

// purposeKubeSpan is the ULA purpose code Talos uses for KubeSpan.
const purposeKubeSpan = 0x02

// Secrets are a cluster's ID and secret, encoded as Talos encodes them.
type Secrets struct {
	ID     string // 32 random bytes, base64 std
	Secret string // 32 random bytes, base64 std
}

// Generate makes a new cluster ID and secret.
func Generate() (Secrets, error) {
	var id, secret [Size]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Secrets{}, fmt.Errorf("clusterkey: generate cluster id: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Secrets{}, fmt.Errorf("clusterkey: generate cluster secret: %w", err)
	}
	return Secrets{
		ID:     base64.StdEncoding.EncodeToString(id[:]),
		Secret: base64.StdEncoding.EncodeToString(secret[:]),
	}, nil
}

// EncodedLen is the length of a cluster ID or secret as text: Size bytes in
// padded base64.
const EncodedLen = 44

// Errors of CheckID and Key. Callers add the field name and where to take
// the value from.
var (
	ErrWhitespace = errors.New("has whitespace at the start or end (a line break from a file, echo or $(cat ...)?); remove it: the value is exactly 44 characters of padded base64")
	ErrEncoding   = errors.New("must be exactly 44 characters of padded base64 (32 bytes), as Talos generates it, with no line breaks or spaces")
)

// decode decodes exactly EncodedLen characters of enc into Size bytes. Go's
// base64 decoder skips \r and \n anywhere in its input, so "ID\n" would
// decode to the bytes of "ID", while the mesh prefix (a hash of the ID's
// text) would come out different: the node would join another mesh. The
// length and alphabet are checked before decoding.
func decode(s string, enc *base64.Encoding) ([Size]byte, error) {
	var k [Size]byte
	if strings.TrimSpace(s) != s {
		return k, ErrWhitespace
	}
	if len(s) != EncodedLen || strings.ContainsAny(s, "\r\n") {
		return k, ErrEncoding
	}
	n, err := enc.Strict().Decode(k[:], []byte(s))
	if err != nil || n != Size {
		return [Size]byte{}, ErrEncoding
	}
	return k, nil
}

// CheckID accepts what Talos generates as a cluster ID: exactly 44
// characters of padded base64, std or (before Talos 1.14) URL-safe alphabet.
func CheckID(id string) error {
	if _, err := decode(id, base64.StdEncoding); err == nil {
		return nil
	}
	_, err := decode(id, base64.URLEncoding)
	return err
}

// Key decodes the cluster secret, exactly 44 characters of padded std
// base64, into the 32 raw bytes used both as the AES-256 discovery key and
// as the WireGuard pre-shared key.
func Key(secret string) ([Size]byte, error) {
	k, err := decode(secret, base64.StdEncoding)
	if err != nil {
		return k, fmt.Errorf("clusterkey: cluster secret %w", err)
	}
	return k, nil
}

// PresharedKey returns the WireGuard PSK every peer in the cluster uses.
func PresharedKey(secret string) (wgtypes.Key, error) {
	k, err := Key(secret)
	return wgtypes.Key(k), err
}

// MeshPrefix returns the cluster's ULA /64: SHA-256 of the cluster ID string
// (as is, not decoded), bytes 16..31, byte 0 = 0xfd, byte 7 = purpose 0x02.
func MeshPrefix(clusterID string) netip.Prefix {
	h := sha256.Sum256([]byte(clusterID))
	var a [16]byte
	copy(a[:], h[16:])
	a[0] = 0xfd
	a[7] = purposeKubeSpan
	return netip.PrefixFrom(netip.AddrFrom16(a), 64).Masked()
}

// NodeAddress returns the node's mesh address inside prefix: the modified
// EUI-64 interface ID of mac, as Talos builds it from its first physical link.
func NodeAddress(prefix netip.Prefix, mac net.HardwareAddr) (netip.Addr, error) {
	if !prefix.Addr().Is6() || prefix.Bits() != 64 {
		return netip.Addr{}, fmt.Errorf("clusterkey: node address needs an IPv6 /64, got %s", prefix)
	}
	a := prefix.Addr().As16()
	switch len(mac) {
	case 6:
		a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
		a[11], a[12] = 0xff, 0xfe
		a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	case 8:
		copy(a[8:], mac)
		a[8] ^= 0x02
	default:
		return netip.Addr{}, fmt.Errorf("clusterkey: node address needs a 6 or 8 byte MAC, got %q", mac.String())
	}
	return netip.AddrFrom16(a), nil
}
