package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"
)

// NodeView is one row of the live progress table.
type NodeView struct {
	Name     string
	Provider string
	Boot     string
	Underlay netip.Addr
	Mesh     netip.Addr // zero until the agent reports it
	Phase    string     // booting, starting, running, exited: ...
	Peers    map[string]string
}

// Progress renders the live table: one row per node, one column per peer
// holding that peer's state as the row's agent sees it.
func Progress(nodes []NodeView, elapsed time.Duration) string {
	up, total := 0, 0
	for _, n := range nodes {
		for _, o := range nodes {
			if o.Name == n.Name {
				continue
			}
			total++
			if n.Peers[o.Name] == "up" {
				up++
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "t+%-5s peer links up: %d/%d\n", elapsed.Truncate(100*time.Millisecond), up, total)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, "NODE\tPROVIDER\tBOOT\tUNDERLAY\tMESH ADDRESS\tAGENT")
	for _, o := range nodes {
		fmt.Fprintf(w, "\t%s", o.Name)
	}
	fmt.Fprintln(w)
	for _, n := range nodes {
		mesh := "-"
		if n.Mesh.IsValid() {
			mesh = n.Mesh.String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s", n.Name, n.Provider, n.Boot, n.Underlay, mesh, n.Phase)
		for _, o := range nodes {
			cell := n.Peers[o.Name]
			switch {
			case o.Name == n.Name:
				cell = "."
			case cell == "":
				cell = "-"
			}
			fmt.Fprintf(w, "\t%s", cell)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return b.String()
}

// PingResult is one cell of the ping matrix.
type PingResult struct {
	RTT time.Duration
	Err error
}

// PingMatrix renders round-trip times from each row's node to each column's
// mesh address.
func PingMatrix(names []string, res map[[2]string]PingResult) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "FROM \\ TO\t")
	for _, n := range names {
		fmt.Fprintf(w, "%s\t", n)
	}
	fmt.Fprintln(w)
	for _, from := range names {
		fmt.Fprintf(w, "%s\t", from)
		for _, to := range names {
			r, ok := res[[2]string{from, to}]
			switch {
			case from == to:
				fmt.Fprint(w, ".\t")
			case !ok:
				fmt.Fprint(w, "?\t")
			case r.Err != nil:
				fmt.Fprint(w, "FAIL\t")
			default:
				fmt.Fprintf(w, "%.2f ms\t", float64(r.RTT.Microseconds())/1000)
			}
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return b.String()
}
