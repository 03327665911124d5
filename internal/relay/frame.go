// Package relay lets two mesh members that cannot reach each other directly
// exchange WireGuard packets through a third member. The relay forwards
// opaque WireGuard ciphertext between registered members: it never holds a
// WireGuard key and cannot read what it forwards. Only members may register
// (a MAC keyed by a secret derived from the cluster secret); anything else is
// dropped and counted.
//
// Relay frames share a UDP port with WireGuard. WireGuard messages start with
// a little-endian uint32 type of 1 to 4, so their first byte is 1..4; every
// relay frame starts with Marker, which is none of those, so one byte tells
// the two apart.
//
// A member registers with a relay by proving it holds the WireGuard private
// key it registers: the frame is signed with a pair key (Key.Pair) that takes
// the X25519 exchange of the member's and the relay's WireGuard keys, and the
// relay accepts only the keys of its current peers. Replays and late frames
// are refused by a counter per key, which the relay compares only with the
// same member's earlier counters, never with its own clock.
package relay

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Marker is the first byte of every relay frame. WireGuard's first byte is
// its message type, 1..4, so the two can never be confused.
const Marker = 0xEC

// Frame types, the second byte.
// Types 1 and 2 were the registrations of v1, signed with the cluster key
// alone: any member could register any key. They are refused (malformed).
const (
	typeRegister   = 7 // member -> relay: "forward to me at this source address"
	typeRegistered = 8 // relay -> member: registration accepted, your observed address
	typeSend       = 3 // member -> relay: forward payload to member ID
	typeDeliver    = 4 // relay -> member: payload from member ID
	typePing       = 5 // member -> member, direct: path probe
	typePong       = 6 // member -> member, direct: probe answer, your observed address
)

// Sizes of the frames and their parts.
const (
	idLen        = 8
	keyLen       = 32
	nonceLen     = 16
	macLen       = 32
	addrLen      = 18 // 16-byte IP (v4 mapped) + 2-byte port
	DataOverhead = 2 + idLen

	registerLen   = 2 + keyLen + 8 + nonceLen + macLen
	registeredLen = 2 + nonceLen + addrLen + macLen
	pingLen       = 2 + keyLen + 8 + nonceLen + macLen
	pongLen       = 2 + keyLen + nonceLen + addrLen + macLen
)

// ID names a member on a relay: the first 8 bytes of its WireGuard public key.
// Short, so a relayed full-size packet still fits a 1500-byte IPv4 underlay.
type ID [idLen]byte

// IDOf returns the relay ID of a WireGuard public key.
func IDOf(publicKey [32]byte) ID {
	var id ID
	copy(id[:], publicKey[:idLen])
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsWireGuard reports whether p looks like a WireGuard message rather than a
// relay frame.
func IsWireGuard(p []byte) bool { return len(p) >= 4 && p[0] >= 1 && p[0] <= 4 }

// IsFrame reports whether p is a relay frame.
func IsFrame(p []byte) bool { return len(p) >= 2 && p[0] == Marker }

// hello is the body shared by Register and Ping: who sends it, when, and a
// nonce so that a captured frame cannot be replayed.
type hello struct {
	Kind  byte
	Key   [keyLen]byte
	Time  time.Time
	Nonce [nonceLen]byte
}

func newHello(kind byte, publicKey [32]byte, now time.Time) (hello, error) {
	h := hello{Kind: kind, Key: publicKey, Time: now}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return h, fmt.Errorf("relay: make nonce: %w", err)
	}
	return h, nil
}

func (h hello) marshal(k *Key) []byte {
	b := make([]byte, pingLen)
	b[0], b[1] = Marker, h.Kind
	copy(b[2:], h.Key[:])
	binary.BigEndian.PutUint64(b[2+keyLen:], uint64(h.Time.UnixNano()))
	copy(b[2+keyLen+8:], h.Nonce[:])
	k.sign(b[:pingLen-macLen], b[pingLen-macLen:])
	return b
}

func parseHello(b []byte, k *Key) (hello, error) {
	var h hello
	if len(b) != pingLen {
		return h, errMalformed
	}
	if !k.verify(b[:pingLen-macLen], b[pingLen-macLen:]) {
		return h, errBadMAC
	}
	h.Kind = b[1]
	copy(h.Key[:], b[2:])
	h.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[2+keyLen:])))
	copy(h.Nonce[:], b[2+keyLen+8:])
	return h, nil
}

// registration is the body of Register: the key registered, a counter and
// a nonce that the answer echoes. The counter is strictly increasing per
// member (registrationCounter); the relay keeps the last one it accepted per
// key, which refuses replays and late frames without a clock of its own.
type registration struct {
	Key     [keyLen]byte
	Counter uint64
	Nonce   [nonceLen]byte
}

func newRegistration(publicKey [32]byte, counter uint64) (registration, error) {
	r := registration{Key: publicKey, Counter: counter}
	if _, err := rand.Read(r.Nonce[:]); err != nil {
		return r, fmt.Errorf("relay: make nonce: %w", err)
	}
	return r, nil
}

func (r registration) marshal(pair *Key) []byte {
	b := make([]byte, registerLen)
	b[0], b[1] = Marker, typeRegister
	copy(b[2:], r.Key[:])
	binary.BigEndian.PutUint64(b[2+keyLen:], r.Counter)
	copy(b[2+keyLen+8:], r.Nonce[:])
	pair.sign(b[:registerLen-macLen], b[registerLen-macLen:])
	return b
}

// registrant returns the key a Register frame claims, unverified: the relay
// needs it to pick the pair key that verifies the frame.
func registrant(b []byte) ([keyLen]byte, bool) {
	if len(b) != registerLen || b[0] != Marker || b[1] != typeRegister {
		return [keyLen]byte{}, false
	}
	return [keyLen]byte(b[2 : 2+keyLen]), true
}

func parseRegistration(b []byte, pair *Key) (registration, error) {
	var r registration
	if _, ok := registrant(b); !ok {
		return r, errMalformed
	}
	if !pair.verify(b[:registerLen-macLen], b[registerLen-macLen:]) {
		return r, errBadMAC
	}
	copy(r.Key[:], b[2:])
	r.Counter = binary.BigEndian.Uint64(b[2+keyLen:])
	copy(r.Nonce[:], b[2+keyLen+8:])
	return r, nil
}

// registrationCounter issues registration counters: strictly increasing in
// one process, and starting from the wall clock in nanoseconds so that a
// restarted member continues above its earlier counters. Only the relay's
// memory of this member's last counter is compared with it, so clocks of
// different hosts never meet. (A member whose clock was set back across a
// restart is refused until its old registration expires on the relay, one
// TTL.)
type registrationCounter struct {
	mu   sync.Mutex
	last uint64
}

func (c *registrationCounter) next(now time.Time) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(c.last+1, uint64(max(now.UnixNano(), 0)))
	return c.last
}

// reply is the body of Registered and Pong: the nonce it answers and the
// source address the answering side saw (what a NAT mapped us to).
type reply struct {
	Kind     byte
	Key      [keyLen]byte // Pong only: who answers
	Nonce    [nonceLen]byte
	Observed netip.AddrPort
}

func (r reply) marshal(k *Key) []byte {
	n := registeredLen
	if r.Kind == typePong {
		n = pongLen
	}
	b := make([]byte, n)
	b[0], b[1] = Marker, r.Kind
	o := 2
	if r.Kind == typePong {
		copy(b[o:], r.Key[:])
		o += keyLen
	}
	copy(b[o:], r.Nonce[:])
	o += nonceLen
	putAddr(b[o:], r.Observed)
	k.sign(b[:n-macLen], b[n-macLen:])
	return b
}

func parseReply(b []byte, k *Key) (reply, error) {
	var r reply
	if len(b) < 2 {
		return r, errMalformed
	}
	n := registeredLen
	if b[1] == typePong {
		n = pongLen
	}
	if len(b) != n {
		return r, errMalformed
	}
	if !k.verify(b[:n-macLen], b[n-macLen:]) {
		return r, errBadMAC
	}
	r.Kind = b[1]
	o := 2
	if r.Kind == typePong {
		copy(r.Key[:], b[o:])
		o += keyLen
	}
	copy(r.Nonce[:], b[o:])
	o += nonceLen
	r.Observed = getAddr(b[o:])
	return r, nil
}

func putAddr(b []byte, a netip.AddrPort) {
	ip := a.Addr().As16()
	copy(b, ip[:])
	binary.BigEndian.PutUint16(b[16:], a.Port())
}

func getAddr(b []byte) netip.AddrPort {
	ip := netip.AddrFrom16([16]byte(b[:16])).Unmap()
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[16:]))
}

// putData writes the relay header for payload into the first DataOverhead
// bytes of b.
func putDataHeader(b []byte, kind byte, id ID) {
	b[0], b[1] = Marker, kind
	copy(b[2:2+idLen], id[:])
}

// RegisterFrame builds a registration of publicKey with the given counter,
// signed with pair (Key.Pair of the member's private key and the relay's
// public key). Members' binds make their own; this is for tools and tests
// that speak the protocol.
func RegisterFrame(pair *Key, publicKey [32]byte, counter uint64) []byte {
	r, err := newRegistration(publicKey, counter)
	if err != nil {
		return nil
	}
	return r.marshal(pair)
}
