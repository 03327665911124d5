package lab

import (
	"fmt"
	"io"
	"time"
)

// summary collects the figures the run ends with; zero means not reached.
type summary struct {
	apply time.Duration // terraform apply
	// applyFailed: terraform apply ran and failed.
	applyFailed bool
	meshUp      time.Duration // agents started -> every peer link up
	pings       int           // pings tried over the mesh
	// pingsOK answered, the slowest taking maxRTT.
	pingsOK int
	maxRTT  time.Duration
	bps     float64 // iperf3 throughput over the mesh
	iperf   string  // "client -> server"
}

// write prints the closing summary: what was reached, and the failure if
// there was one.
func (s summary) write(w io.Writer, err error) {
	fmt.Fprintln(w, "==> summary")
	row := func(k, v string) { fmt.Fprintf(w, "  %-16s %s\n", k, v) }
	notReached := "not reached"
	switch {
	case s.apply > 0:
		row("terraform apply", s.apply.Round(100*time.Millisecond).String())
	case s.applyFailed:
		row("terraform apply", "FAILED")
	default:
		row("terraform apply", notReached)
	}
	if s.meshUp > 0 {
		row("mesh up", s.meshUp.Round(100*time.Millisecond).String()+" after the agents started")
	} else {
		row("mesh up", notReached)
	}
	switch {
	case s.pings == 0:
		row("ping matrix", notReached)
	case s.pingsOK == s.pings:
		row("ping matrix", fmt.Sprintf("%d/%d answered, slowest %v", s.pingsOK, s.pings, s.maxRTT.Round(10*time.Microsecond)))
	default:
		row("ping matrix", fmt.Sprintf("%d/%d answered: FAILED", s.pingsOK, s.pings))
	}
	if s.bps > 0 {
		row("throughput", fmt.Sprintf("%.2f Gbit/s, %s", s.bps/1e9, s.iperf))
	} else {
		row("throughput", notReached)
	}
	if err != nil {
		row("result", "FAILED: "+firstLine(err.Error()))
	} else {
		row("result", "passed")
	}
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

func (r *run) printSummary(err error) { r.sum.write(r.o.Out, err) }
