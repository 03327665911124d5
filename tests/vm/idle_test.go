package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
)

// idleWindow is how long the mesh is watched with no traffic of the
// test's own: well past health.downAfter (8 s) and WireGuard's passive
// keepalive (10 s after the last data), so only persistent keepalives
// (and the agent's nudges) keep peers up.
const idleWindow = 30 * time.Second

type peerLook struct {
	State            string
	RxBytes, TxBytes int64
}

type look struct {
	at    time.Time
	peers map[string]peerLook
}

// idleMesh watches every node's view of every peer on an idle mesh. Each
// side must hear from the other within health.downAfter, so every pair
// stays up, and every kernel-WireGuard VM keeps sending to every peer: with
// the same persistent keepalive on both ends, a keepalive that arrives
// restarts the receiver's timer, and the end whose timer runs later (the
// kernel's timer wheel rounds 2 s up by tens of ms) would never send one.
func idleMesh(ctx context.Context, l *lab.VMLab) error {
	nodes := make([]string, 0, len(l.Nodes()))
	for _, n := range l.Nodes() {
		nodes = append(nodes, n.Name)
	}
	slices.Sort(nodes)
	looks := make(map[string][]look, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(idleWindow)
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				at := time.Now()
				c, cancel := context.WithTimeout(ctx, 20*time.Second)
				out, err := l.Status(c, n, "json")
				cancel()
				if err == nil {
					var st struct {
						Peers []struct {
							Name, State      string
							RxBytes, TxBytes int64
						}
					}
					if json.Unmarshal(out, &st) == nil {
						lk := look{at: at, peers: map[string]peerLook{}}
						for _, p := range st.Peers {
							lk.peers[p.Name] = peerLook{p.State, p.RxBytes, p.TxBytes}
						}
						mu.Lock()
						looks[n] = append(looks[n], lk)
						mu.Unlock()
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(at.Add(2 * time.Second))):
				}
			}
		}()
	}
	wg.Wait()
	var problems []string
	minLooks, minTx := 1<<30, int64(1)<<62
	for _, n := range nodes {
		ls := looks[n]
		minLooks = min(minLooks, len(ls))
		if len(ls) < 3 {
			problems = append(problems, fmt.Sprintf("%s answered `meshspan-agent status` only %d times in %v", n, len(ls), idleWindow))
			continue
		}
		for _, p := range nodes {
			if p == n {
				continue
			}
			// Down in two looks in a row (2 s apart at least): not one
			// late tick of a busy machine.
			var states []string
			bad := false
			for i, lk := range ls {
				st := lk.peers[p].State
				if st == "" {
					st = "absent"
				}
				states = append(states, fmt.Sprintf("%s@%ds(rx %d tx %d)", st, int(lk.at.Sub(ls[0].at).Seconds()), lk.peers[p].RxBytes, lk.peers[p].TxBytes))
				if i > 0 && st != "up" && ls[i-1].peers[p].State != "up" {
					bad = true
				}
			}
			if bad {
				problems = append(problems, fmt.Sprintf("%s saw %s not up in consecutive looks on the idle mesh: %s", n, p, strings.Join(states, " ")))
			}
			if _, isVM := l.VMs()[n]; isVM {
				tx := ls[len(ls)-1].peers[p].TxBytes - ls[0].peers[p].TxBytes
				span := ls[len(ls)-1].at.Sub(ls[0].at)
				minTx = min(minTx, tx)
				// A keepalive is 32 bytes; a healthy end sends one every
				// few seconds. Fewer than two over the window is silence.
				if span >= idleWindow/2 && tx < 64 {
					problems = append(problems, fmt.Sprintf("kernel-WireGuard VM %s sent %s only %d bytes in %v of idle mesh (want keepalives: >= 64)", n, p, tx, span.Round(time.Second)))
				}
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("idle mesh:\n  %s", strings.Join(problems, "\n  "))
	}
	l.Say("  idle mesh: %v without test traffic, >= %d looks per node: every node saw every peer up; each kernel-WireGuard VM sent each peer >= %d bytes of keepalives",
		idleWindow, minLooks, minTx)
	return nil
}
