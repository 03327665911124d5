package nat

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// pause stops n's reconcile loop, leaving its device as it is.
func (n *node) pause() {
	n.mu.Lock()
	stop := n.stop
	n.stop = nil
	n.mu.Unlock()
	if stop != nil {
		stop()
		<-n.done
	}
}

// pin sets n's endpoint for peer p by hand.
func (w *world) pin(n, p *node, ep netip.AddrPort) {
	w.t.Helper()
	cur, err := n.dev.Peers()
	if err != nil {
		w.t.Fatal(err)
	}
	var want []wg.PeerConfig
	for _, c := range cur {
		pc := wg.PeerConfig{PublicKey: c.PublicKey, PresharedKey: w.psk, AllowedIPs: c.AllowedIPs, Keepalive: c.Keepalive}
		if c.PublicKey == p.key.PublicKey() {
			pc.Endpoint = ep
		}
		want = append(want, pc)
	}
	if err := n.dev.SyncPeers(want); err != nil {
		w.t.Fatal(err)
	}
}

func medianRTT(t testing.TB, n *node, to netip.AddrPort, count int) time.Duration {
	rtts := make([]time.Duration, count)
	for i := range rtts {
		rtts[i] = roundTrip(t, n, to, []byte("rtt"), 5*time.Second)
	}
	slices.Sort(rtts)
	return rtts[count/2]
}

// BenchmarkRelayedVsDirect measures TCP throughput and round-trip time
// between the same two NATed nodes on their direct path and pinned to a
// relay, alternating rounds in one run so that load from elsewhere on the
// machine hits both alike. Target: relayed >= 0.8x direct.
//
// The relay runs in its own process, as on a real relay node, in both of
// its modes: "shared", a member relaying on its WireGuard port (wireguard-go
// with the relay Bind, as `meshspan-agent run` with relay.enabled), and
// "own-port", relay.Server on a socket of its own (relay.port, or kernel
// WireGuard holding the WireGuard port).
// Run once: go test -run '^$' -bench RelayedVsDirect -benchtime 1x ./tests/nat
func BenchmarkRelayedVsDirect(b *testing.B) {
	for _, mode := range []string{"shared", "own-port"} {
		b.Run(mode, func(b *testing.B) { benchRelayedVsDirect(b, mode) })
	}
}

func benchRelayedVsDirect(b *testing.B, mode string) {
	const size = 96 << 20
	const rounds = 3
	w := newWorld(b, netlab.NATPreservePorts, true)
	w.start()
	w.waitPath(30*time.Second, natpath.ModeDirect, "")
	w.a.pause()
	w.b.pause()
	to := echo(b, w.b)
	da, db := w.a.statusOf(w.b).Endpoint, w.b.statusOf(w.a).Endpoint

	r3, err := w.lab.Host("r3")
	if err != nil {
		b.Fatal(err)
	}
	if err := w.wan.Attach(r3, "eth0", pfx("203.0.113.23/24")); err != nil {
		b.Fatal(err)
	}
	relT, proc := w.relayProcess(r3, ip("203.0.113.23"), wgPort, mode)
	rel := relT.Addr
	for _, n := range []*node{w.a, w.b} {
		n.bind.SetRelays([]relay.Target{{Addr: w.r1.endpoint(), Key: w.r1.key.PublicKey()}, {Addr: w.r2.endpoint(), Key: w.r2.key.PublicKey()}, relT})
	}
	deadline := time.Now().Add(10 * time.Second)
	for !registeredWith(w.a, rel) || !registeredWith(w.b, rel) {
		if time.Now().After(deadline) {
			b.Fatalf("a and b did not register with the relay process at %s", rel)
		}
		time.Sleep(20 * time.Millisecond)
	}
	va, err := w.a.bind.RelayEndpoint(rel, w.b.key.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	vb, err := w.b.bind.RelayEndpoint(rel, w.a.key.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	use := func(ea, eb netip.AddrPort) {
		w.pin(w.a, w.b, ea)
		w.pin(w.b, w.a, eb)
		roundTrip(b, w.a, to, []byte("warm"), 5*time.Second)
		// A packet still in flight on the other path can make WireGuard
		// roam back; the run must use the path it claims to measure.
		if got := liveEndpoint(b, w.a, w.b); got != ea {
			b.Fatalf("a uses %s for b, want %s", got, ea)
		}
	}

	b.ResetTimer()
	var direct, relayed phase
	var rttDirect, rttRelayed time.Duration
	for range b.N {
		for range rounds {
			use(da, db)
			direct.measure(b, w, size, proc.PID())
			rttDirect += medianRTT(b, w.a, to, 100)
			use(va, vb)
			relayed.measure(b, w, size, proc.PID())
			rttRelayed += medianRTT(b, w.a, to, 100)
			if got := liveEndpoint(b, w.a, w.b); got != va {
				b.Fatalf("the relayed round ended on %s, not the relay", got)
			}
		}
	}
	b.StopTimer()
	n := time.Duration(b.N * rounds)
	rttDirect /= n
	rttRelayed /= n
	d, r := direct.rate(), relayed.rate()
	b.ReportMetric(d/1e6, "direct-Mbit/s")
	b.ReportMetric(r/1e6, "relayed-Mbit/s")
	b.ReportMetric(r/d, "relayed/direct")
	b.ReportMetric(float64((rttRelayed - rttDirect).Microseconds()), "added-rtt-µs")
	fmt.Printf("relay on %s: relayed vs direct (same pair, %d alternating rounds of %d MB): direct %.0f Mbit/s, relayed %.0f Mbit/s, ratio %.2f (target >= 0.80); median RTT direct %s, relayed %s, relay adds %s\n",
		mode, rounds, size>>20, d/1e6, r/1e6, r/d, rttDirect.Round(time.Microsecond), rttRelayed.Round(time.Microsecond), (rttRelayed - rttDirect).Round(time.Microsecond))
	fmt.Printf("  direct:  %s\n  relayed: %s\n", direct.String(false), relayed.String(true))
	// The ratio splits exactly into how many cores the lab's processes kept
	// busy and what a Gbit/s cost them: the relay's CPU comes out of the
	// same two cores here, where on a real network it is a third machine's.
	cd, cr := direct.lab()/direct.wall, relayed.lab()/relayed.wall
	kd, kr := cd/(d/1e9), cr/(r/1e9)
	fmt.Printf("  ratio %.2f = busy cores %.2f/%.2f (x%.2f) * cores per Gbit/s %.2f/%.2f (x%.2f)\n", r/d, cr, cd, cr/cd, kd, kr, kd/kr)
	// Other work on a shared machine takes cores from whichever rounds it
	// overlaps, and can move the ratio either way: say how much there was.
	fmt.Printf("  other processes: %.2f cores during direct rounds, %.2f during relayed ones\n",
		max(0, direct.busy/direct.wall-cd), max(0, relayed.busy/relayed.wall-cr))
}

// phase adds up the transfers of one path and the CPU they cost: the
// machine's (all of it: the lab shares it with the endpoints and the relay),
// this process's (wireguard-go for a and b, and their TCP) and the relay
// process's. Cores per Gbit/s tell a path that is slower because it costs
// more CPU on a full machine from one that leaves CPU idle.
type phase struct {
	bits, wall       float64 // bits moved, seconds taken
	busy, steal      float64 // machine CPU-seconds busy, stolen by the hypervisor
	endpoints, relay float64 // CPU-seconds of this process, of the relay process
}

func (p *phase) measure(b *testing.B, w *world, size, relayPID int) {
	b.Helper()
	m0, e0, r0, t0 := machineCPU(), cpuTime(os.Getpid()), cpuTime(relayPID), time.Now()
	rate := throughput(b, w.a, w.b, size)
	m1, e1, r1, el := machineCPU(), cpuTime(os.Getpid()), cpuTime(relayPID), time.Since(t0).Seconds()
	p.bits += rate * el
	p.wall += el
	p.busy += m1.busy - m0.busy
	p.steal += m1.steal - m0.steal
	p.endpoints += (e1 - e0).Seconds()
	p.relay += (r1 - r0).Seconds()
}

func (p *phase) rate() float64 { return p.bits / p.wall }

// lab is the CPU-seconds the endpoints and the relay used.
func (p *phase) lab() float64 { return p.endpoints + p.relay }

func (p *phase) String(relayed bool) string {
	gbps := p.rate() / 1e9
	s := fmt.Sprintf("machine %.2f of %d cores busy (%.2f stolen), endpoints %.2f cores = %.2f cores per Gbit/s",
		p.busy/p.wall, runtime.NumCPU(), p.steal/p.wall, p.endpoints/p.wall, p.endpoints/p.wall/gbps)
	if relayed {
		s += fmt.Sprintf(", relay process %.2f cores = %.2f cores per Gbit/s", p.relay/p.wall, p.relay/p.wall/gbps)
	}
	return s
}

type cpuTimes struct{ busy, steal float64 } // seconds, summed over CPUs

// machineCPU reads the machine's CPU time from /proc/stat: busy is all but
// idle and iowait (steal included: a CPU the hypervisor took is no CPU the
// lab had); zero if unreadable.
func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		n /= 100 // USER_HZ
		switch i {
		case 3, 4, 8, 9: // idle, iowait; guest time is already in user and nice
		case 7:
			t.steal = n
			t.busy += n
		default:
			t.busy += n
		}
	}
	return t
}

func registeredWith(n *node, relay netip.AddrPort) bool {
	for _, r := range n.bind.Relays() {
		if r.Addr == relay && !r.Registered.IsZero() {
			return true
		}
	}
	return false
}

// liveEndpoint is n's device endpoint for peer p.
func liveEndpoint(t testing.TB, n, p *node) netip.AddrPort {
	ps, err := n.dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ps {
		if s.PublicKey == p.key.PublicKey() {
			return s.Endpoint
		}
	}
	return netip.AddrPort{}
}
