package discovery

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshspan/terraform-provider-meshspan/internal/member"
)

// Traversal is meshspan's NAT-traversal data (member.Traversal). It
// travels inside the sealed affiliate blob as a protobuf field Talos does
// not define (TraversalField): Talos's client keeps unknown fields and
// ignores them, so Talos nodes and meshspan nodes still share one mesh,
// and the discovery service still sees only ciphertext.
type Traversal = member.Traversal

// Rendezvous asks a peer to start a direct attempt (member.Rendezvous).
type Rendezvous = member.Rendezvous

// TraversalField is the field number of the traversal data in the
// affiliate plaintext (sidero.discovery.client.Affiliate uses 1 to 8). It
// is far above them so that a future Talos field cannot collide with it.
const TraversalField protowire.Number = 4717

// MaxRendezvous bounds the rendezvous one affiliate carries, so that the
// sealed affiliate stays within the service's 2048-byte limit.
const MaxRendezvous = 24

// Field numbers inside the traversal message.
const (
	travRelayPort  protowire.Number = 1
	travRendezvous protowire.Number = 2
	rvPeer         protowire.Number = 1
	rvAtMillis     protowire.Number = 2
)

var errTraversal = errors.New("discovery: malformed traversal data")

// appendTraversal appends t as field TraversalField.
func appendTraversal(b []byte, t Traversal) []byte {
	var m []byte
	if t.RelayPort != 0 {
		m = protowire.AppendTag(m, travRelayPort, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(t.RelayPort))
	}
	for _, r := range t.Rendezvous[:min(len(t.Rendezvous), MaxRendezvous)] {
		var rv []byte
		rv = protowire.AppendTag(rv, rvPeer, protowire.BytesType)
		rv = protowire.AppendBytes(rv, r.Peer[:])
		rv = protowire.AppendTag(rv, rvAtMillis, protowire.VarintType)
		rv = protowire.AppendVarint(rv, uint64(r.At.UnixMilli()))
		m = protowire.AppendTag(m, travRendezvous, protowire.BytesType)
		m = protowire.AppendBytes(m, rv)
	}
	b = protowire.AppendTag(b, TraversalField, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// traversalFrom finds the traversal field among an affiliate's unknown
// fields. Other unknown fields (a newer Talos) are skipped.
func traversalFrom(unknown []byte) (Traversal, error) {
	var t Traversal
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return Traversal{}, errTraversal
		}
		unknown = unknown[n:]
		if num != TraversalField || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, unknown)
			if n < 0 {
				return Traversal{}, errTraversal
			}
			unknown = unknown[n:]
			continue
		}
		m, n := protowire.ConsumeBytes(unknown)
		if n < 0 {
			return Traversal{}, errTraversal
		}
		unknown = unknown[n:]
		if err := parseTraversal(&t, m); err != nil {
			return Traversal{}, err
		}
	}
	return t, nil
}

func parseTraversal(t *Traversal, m []byte) error {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return errTraversal
		}
		m = m[n:]
		switch {
		case num == travRelayPort && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(m)
			if n < 0 || v > 65535 {
				return fmt.Errorf("%w: relay port %d", errTraversal, v)
			}
			t.RelayPort, m = uint16(v), m[n:]
		case num == travRendezvous && typ == protowire.BytesType:
			rv, n := protowire.ConsumeBytes(m)
			if n < 0 {
				return errTraversal
			}
			m = m[n:]
			r, err := parseRendezvous(rv)
			if err != nil {
				return err
			}
			if len(t.Rendezvous) < MaxRendezvous {
				t.Rendezvous = append(t.Rendezvous, r)
			}
		default: // a field from a newer meshspan
			n = protowire.ConsumeFieldValue(num, typ, m)
			if n < 0 {
				return errTraversal
			}
			m = m[n:]
		}
	}
	return nil
}

func parseRendezvous(m []byte) (Rendezvous, error) {
	var r Rendezvous
	var havePeer, haveAt bool
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return r, errTraversal
		}
		m = m[n:]
		switch {
		case num == rvPeer && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(m)
			if n < 0 || len(v) != len(r.Peer) {
				return r, fmt.Errorf("%w: rendezvous peer key of %d bytes", errTraversal, len(v))
			}
			copy(r.Peer[:], v)
			havePeer, m = true, m[n:]
		case num == rvAtMillis && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(m)
			if n < 0 || v > 1<<53 {
				return r, errTraversal
			}
			r.At, haveAt, m = time.UnixMilli(int64(v)), true, m[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, m)
			if n < 0 {
				return r, errTraversal
			}
			m = m[n:]
		}
	}
	if !havePeer || !haveAt {
		return r, fmt.Errorf("%w: rendezvous without peer or time", errTraversal)
	}
	return r, nil
}
