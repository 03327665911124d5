package lab

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	var b bytes.Buffer
	summary{apply: 2140 * time.Millisecond, meshUp: 6420 * time.Millisecond, pings: 20, pingsOK: 20, maxRTT: 1234 * time.Microsecond,
		bps: 1.456e9, iperf: "do-1 -> metal-2"}.write(&b, nil)
	want := `==> summary
  terraform apply  2.1s
  mesh up          6.4s after the agents started
  ping matrix      20/20 answered, slowest 1.23ms
  throughput       1.46 Gbit/s, do-1 -> metal-2
  result           passed
`
	if b.String() != want {
		t.Errorf("passed run:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	summary{apply: time.Second, pings: 20, pingsOK: 19}.write(&b, errors.New("lab: 1 of 20 pings over the mesh failed: a->b\nmore"))
	want = `==> summary
  terraform apply  1s
  mesh up          not reached
  ping matrix      19/20 answered: FAILED
  throughput       not reached
  result           FAILED: lab: 1 of 20 pings over the mesh failed: a->b
`
	if b.String() != want {
		t.Errorf("failed run:\n%s\nwant\n%s", b.String(), want)
	}
}
