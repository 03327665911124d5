package natpath

import (
	"testing"
	"time"
)

var (
	self  = [32]byte{'s'}
	peerA = [32]byte{'a'}
	peerB = [32]byte{'b'}
)

func TestRendezvousAsksJoinsOnce(t *testing.T) {
	r := NewRendezvous(self, 2*time.Second, time.Minute, 10*time.Second)

	// a needs meeting: we ask it for now+lead, publish that, and start it.
	pub, start := r.Step(at(0), map[[32]byte]bool{peerA: true}, nil)
	if len(pub) != 1 || pub[0] != (Meeting{peerA, at(2)}) || len(start) != 1 || start[0] != pub[0] {
		t.Fatalf("publish %v, start %v; want a meeting with a at +2s, published and started", pub, start)
	}
	// Not asked again within the interval; still published until At+keep.
	pub, start = r.Step(at(5), map[[32]byte]bool{peerA: true}, nil)
	if len(pub) != 1 || len(start) != 0 {
		t.Fatalf("at +5s: publish %v, start %v", pub, start)
	}
	pub, _ = r.Step(at(12), map[[32]byte]bool{peerA: true}, nil)
	if len(pub) != 0 {
		t.Fatalf("at +12s the request should be gone: %v", pub)
	}
	// An interval after the meeting, asked again.
	if _, start = r.Step(at(61), map[[32]byte]bool{peerA: true}, nil); len(start) != 0 {
		t.Fatalf("at +61s: start %v, want nothing before an interval has passed since the meeting", start)
	}
	if _, start = r.Step(at(62), map[[32]byte]bool{peerA: true}, nil); len(start) != 1 || !start[0].At.Equal(at(64)) {
		t.Fatalf("at +62s: start %v, want a new meeting at +64s", start)
	}

	// b asks us (and someone else): we join ours once, and do not ask b
	// ourselves while it coordinates.
	req := map[[32]byte][]Meeting{peerB: {{Peer: peerA, At: at(71)}, {Peer: self, At: at(72)}}}
	_, start = r.Step(at(70), map[[32]byte]bool{peerB: true}, req)
	if len(start) != 1 || start[0] != (Meeting{peerB, at(72)}) {
		t.Fatalf("start %v, want to join b's meeting at +72s", start)
	}
	if pub, start = r.Step(at(71), map[[32]byte]bool{peerB: true}, req); len(start) != 0 {
		t.Fatalf("joined twice, or asked b while it asks us: start %v publish %v", start, pub)
	}
	for _, m := range pub {
		if m.Peer == peerB {
			t.Fatalf("asked b while joining its meeting: %v", pub)
		}
	}
}

func TestRendezvousIgnoresStaleAndFarRequests(t *testing.T) {
	r := NewRendezvous(self, 0, 0, 0) // defaults: lead 2s, interval 1m, keep 10s
	req := map[[32]byte][]Meeting{
		peerA: {{Peer: self, At: at(-11)}},  // stale
		peerB: {{Peer: self, At: at(3600)}}, // an hour ahead: a clock far off
	}
	if _, start := r.Step(at(0), nil, req); len(start) != 0 {
		t.Fatalf("started %v", start)
	}
	// A late but recent request is joined at once (its time has passed).
	req = map[[32]byte][]Meeting{peerA: {{Peer: self, At: at(-5)}}}
	if _, start := r.Step(at(0), nil, req); len(start) != 1 || !start[0].At.Equal(at(-5)) {
		t.Fatalf("start %v, want the recent request joined", start)
	}
}

func TestRendezvousForgets(t *testing.T) {
	r := NewRendezvous(self, 0, 0, 0)
	r.Step(at(0), map[[32]byte]bool{peerA: true}, map[[32]byte][]Meeting{peerB: {{Peer: self, At: at(1)}}})
	r.Step(at(200), nil, nil)
	if len(r.asked) != 0 || len(r.joined) != 0 {
		t.Fatalf("kept %d requests and %d joined meetings after their peers went", len(r.asked), len(r.joined))
	}
}

// TestRendezvousBacksOff: meetings that do not help are asked less and less
// often; once the peer is direct, the next need starts afresh.
func TestRendezvousBacksOff(t *testing.T) {
	r := NewRendezvous(self, time.Second, time.Minute, 5*time.Second)
	need := map[[32]byte]bool{peerA: true}
	var asked []float64
	for sec := 0.0; sec < 3600; sec += 10 {
		if _, start := r.Step(at(sec), need, nil); len(start) == 1 {
			asked = append(asked, sec)
		}
	}
	// Meeting at +1s, then 1, 2, 4, 8, 16, 16 ... minutes after each meeting.
	want := []float64{0, 70, 200, 450, 940, 1910, 2880}
	if len(asked) < len(want) {
		t.Fatalf("asked at %v, want %v...", asked, want)
	}
	for i, w := range want {
		if asked[i] != w {
			t.Fatalf("asked at %v, want %v...", asked, want)
		}
	}
	r.Step(at(3600), nil, nil) // direct now
	if _, start := r.Step(at(3610), need, nil); len(start) != 1 {
		t.Fatalf("a new need after a direct spell was not asked at once: %v", start)
	}
}
