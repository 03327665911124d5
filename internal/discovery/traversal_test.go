package discovery

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"
	"time"

	clientpb "github.com/siderolabs/discovery-api/api/v1alpha1/client/pb"
	dclient "github.com/siderolabs/discovery-client/pkg/client"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestTraversalRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_800_000_123_456)
	for _, tr := range []Traversal{
		{},
		{RelayPort: 51820},
		{Rendezvous: []Rendezvous{{Peer: [32]byte{1, 2, 3}, At: at}}},
		{RelayPort: 3478, Rendezvous: []Rendezvous{{Peer: [32]byte{1}, At: at}, {Peer: [32]byte{2}, At: at.Add(time.Second)}}},
	} {
		a := testAffiliate("node", 3)
		a.Traversal = tr
		data, err := toProto(a).MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		var p clientpb.Affiliate
		if err := p.UnmarshalVT(data); err != nil {
			t.Fatal(err)
		}
		got, ok := affiliateFromProto(&dclient.Affiliate{Affiliate: &p})
		if !ok {
			t.Fatal("affiliate lost its ID")
		}
		if got.Traversal.RelayPort != tr.RelayPort || len(got.Traversal.Rendezvous) != len(tr.Rendezvous) {
			t.Fatalf("traversal %+v came back as %+v", tr, got.Traversal)
		}
		for i, r := range tr.Rendezvous {
			if g := got.Traversal.Rendezvous[i]; g.Peer != r.Peer || !g.At.Equal(r.At) {
				t.Fatalf("rendezvous %d: %+v came back as %+v", i, r, g)
			}
		}
		if got.NodeName != a.NodeName || got.PublicKey != a.PublicKey || got.Address != a.Address {
			t.Fatalf("the known fields changed: %+v", got)
		}
	}
}

// TestTraversalUnknownToTalos: Talos's Affiliate message does not define the
// field, so Talos keeps it as unknown bytes and ignores it.
func TestTraversalUnknownToTalos(t *testing.T) {
	if f := (&clientpb.Affiliate{}).ProtoReflect().Descriptor().Fields().ByNumber(TraversalField); f != nil {
		t.Fatalf("field %d is %s in Talos's Affiliate: pick another number", TraversalField, f.FullName())
	}
}

// TestTraversalFitsSealed: an affiliate with every field a node fills and
// the most rendezvous we publish still seals within the service's limit.
func TestTraversalFitsSealed(t *testing.T) {
	a := testAffiliate("3NfXhmLSXSbqlbWZ2XrhKF4V8yvJuTCeTJ4xyFpZiSbx", 200)
	a.Hostname = "a-rather-long-node-name-0123456789.dc1.example.com"
	a.NodeName = a.Hostname
	for i := range 40 {
		a.Traversal.Rendezvous = append(a.Traversal.Rendezvous, Rendezvous{Peer: [32]byte{byte(i), 0xff}, At: time.Now()})
	}
	a.Traversal.RelayPort = 51820
	p := toProto(a)
	data, err := p.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	sealed := len(data) + gcm.NonceSize() + gcm.Overhead()
	if sealed > 2048 {
		t.Fatalf("sealed affiliate is %d bytes, over the service's 2048", sealed)
	}
	back, err := traversalFrom(p.ProtoReflect().GetUnknown())
	if err != nil || len(back.Rendezvous) != MaxRendezvous {
		t.Fatalf("kept %d rendezvous (%v), want the first %d", len(back.Rendezvous), err, MaxRendezvous)
	}
}

// TestTraversalMalformed: bad traversal data costs the traversal data, not
// the affiliate; fields of a newer meshspan or Talos are skipped.
func TestTraversalMalformed(t *testing.T) {
	field := func(m []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, TraversalField, protowire.BytesType), m)
	}
	for name, unknown := range map[string][]byte{
		"truncated":      field([]byte{0x08})[:3],
		"port too large": field(protowire.AppendVarint(protowire.AppendTag(nil, travRelayPort, protowire.VarintType), 70000)),
		"short key": field(protowire.AppendBytes(protowire.AppendTag(nil, travRendezvous, protowire.BytesType),
			protowire.AppendBytes(protowire.AppendTag(nil, rvPeer, protowire.BytesType), []byte{1, 2}))),
		"no time": field(protowire.AppendBytes(protowire.AppendTag(nil, travRendezvous, protowire.BytesType),
			protowire.AppendBytes(protowire.AppendTag(nil, rvPeer, protowire.BytesType), make([]byte, 32)))),
	} {
		p := toProto(testAffiliate("node", 1))
		p.ProtoReflect().SetUnknown(unknown)
		a, ok := affiliateFromProto(&dclient.Affiliate{Affiliate: p})
		if !ok || a.NodeName != "node-1" || !a.Traversal.IsZero() {
			t.Errorf("%s: got ok=%v %+v, want the affiliate without traversal data", name, ok, a)
		}
	}
	// Unknown fields around ours, and unknown fields inside it.
	var u []byte
	u = protowire.AppendVarint(protowire.AppendTag(u, 99, protowire.VarintType), 5)
	inner := protowire.AppendVarint(protowire.AppendTag(nil, travRelayPort, protowire.VarintType), 4500)
	inner = protowire.AppendBytes(protowire.AppendTag(inner, 77, protowire.BytesType), []byte("future"))
	u = protowire.AppendBytes(protowire.AppendTag(u, TraversalField, protowire.BytesType), inner)
	u = protowire.AppendFixed32(protowire.AppendTag(u, 100, protowire.Fixed32Type), 1)
	tr, err := traversalFrom(u)
	if err != nil || tr.RelayPort != 4500 {
		t.Fatalf("got %+v, %v; want relay port 4500", tr, err)
	}
}

// FuzzTraversal: any unknown-field bytes decode without panicking, and what
// decodes re-encodes to the same traversal.
func FuzzTraversal(f *testing.F) {
	f.Add(appendTraversal(nil, Traversal{RelayPort: 51820, Rendezvous: []Rendezvous{{Peer: [32]byte{9}, At: time.UnixMilli(1e12)}}}))
	f.Add([]byte{0xea, 0xa6, 0x02, 0x02, 0x08, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := traversalFrom(b)
		if err != nil {
			return
		}
		again, err := traversalFrom(appendTraversal(nil, tr))
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", tr, err)
		}
		if again.RelayPort != tr.RelayPort || len(again.Rendezvous) != len(tr.Rendezvous) {
			t.Fatalf("round trip %+v -> %+v", tr, again)
		}
		for i := range tr.Rendezvous {
			if again.Rendezvous[i].Peer != tr.Rendezvous[i].Peer || !again.Rendezvous[i].At.Equal(tr.Rendezvous[i].At) {
				t.Fatalf("rendezvous %d: %+v -> %+v", i, tr.Rendezvous[i], again.Rendezvous[i])
			}
		}
	})
}
