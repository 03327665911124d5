package discovery

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/protobuf/proto"
)

// A change queued for many watchers is encoded once, and the bytes are
// exactly gRPC's encoding of the message a watcher would otherwise send.
func TestChangeEncodedOnceForAllWatchers(t *testing.T) {
	aff := &serverpb.Affiliate{Id: "a", Data: []byte("sealed"), Endpoints: [][]byte{{1, 2, 3}}}
	for _, ch := range []*change{newChange("a", aff), newChange("gone", nil)} {
		want, err := proto.Marshal(ch.response())
		if err != nil {
			t.Fatal(err)
		}
		first, ok := ch.message().(preEncoded)
		if !ok {
			t.Fatalf("%s: message is %T, want preEncoded", ch.id, ch.message())
		}
		if !bytes.Equal(first, want) {
			t.Fatalf("%s: encoded %x, want %x", ch.id, first, want)
		}
		if again := ch.message().(preEncoded); &again[0] != &first[0] {
			t.Fatalf("%s: encoded again for a second watcher", ch.id)
		}
		got, err := newCodec().Marshal(first)
		if err != nil || !bytes.Equal(got.Materialize(), want) {
			t.Fatalf("%s: codec sent %x (%v), want the bytes unchanged", ch.id, got.Materialize(), err)
		}
		var back serverpb.WatchResponse
		if err := newCodec().Unmarshal(got, &back); err != nil || !proto.Equal(&back, ch.response()) {
			t.Fatalf("%s: decoded %v (%v), want %v", ch.id, &back, err, ch.response())
		}
	}
	// Other messages go through gRPC's proto codec.
	m := &serverpb.HelloResponse{ClientIp: []byte{192, 0, 2, 1}}
	got, err := newCodec().Marshal(m)
	want, _ := proto.Marshal(m)
	if err != nil || !bytes.Equal(got.Materialize(), want) {
		t.Fatalf("codec: HelloResponse encoded %x (%v), want %x", got.Materialize(), err, want)
	}
}

// messages merges runs of one kind up to maxBatchBytes and sends a lone
// change as its shared encoding, or as a message when the codec that
// passes it through is not installed.
func TestMessagesBatchesRunsAndSharesLoneChanges(t *testing.T) {
	big := func(i int) *change {
		return newChange(fmt.Sprint("aff-", i), &serverpb.Affiliate{Id: fmt.Sprint("aff-", i), Data: []byte(strings.Repeat("x", 2000))})
	}
	var chs []*change
	for i := range 10 {
		chs = append(chs, big(i)) // 10 x ~2 KB: one message of 8, then 2
	}
	chs = append(chs, newChange("gone-1", nil), newChange("gone-2", nil), big(10))
	msgs := messages(chs, true)
	var sizes []string
	total := 0
	for _, m := range msgs {
		switch m := m.(type) {
		case *serverpb.WatchResponse:
			if proto.Size(m) > maxBatchBytes+64 {
				t.Errorf("message of %d bytes, over maxBatchBytes %d", proto.Size(m), maxBatchBytes)
			}
			sizes = append(sizes, fmt.Sprintf("%d deleted=%t", len(m.Affiliates), m.Deleted))
			total += len(m.Affiliates)
		case preEncoded:
			var r serverpb.WatchResponse
			if err := proto.Unmarshal(m, &r); err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, fmt.Sprintf("lone %s deleted=%t", r.Affiliates[0].Id, r.Deleted))
			total++
		default:
			t.Fatalf("message of type %T", m)
		}
	}
	if got, want := strings.Join(sizes, ", "), "8 deleted=false, 2 deleted=false, 2 deleted=true, lone aff-10 deleted=false"; got != want {
		t.Fatalf("messages: %s, want %s", got, want)
	}
	if total != len(chs) {
		t.Fatalf("%d affiliates sent, want %d", total, len(chs))
	}
	if m, ok := messages(chs[12:], false)[0].(*serverpb.WatchResponse); !ok || m.Affiliates[0].Id != "aff-10" {
		t.Fatalf("without the codec a lone change is %T, want a WatchResponse", messages(chs[12:], false)[0])
	}
}
