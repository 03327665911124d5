package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// iperf runs one iperf3 test from client to server's addr and returns the
// received rate in bit/s.
func iperf(tb testing.TB, client, server *node, addr string, seconds int) float64 {
	tb.Helper()
	srv, err := server.NS.Start(exec.Command("iperf3", "-s", "-1", "-B", addr))
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Kill()
	type result struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+15)*time.Second)
		out, err := client.NS.Exec(ctx, "iperf3", "-c", addr, "-t", strconv.Itoa(seconds), "-J")
		cancel()
		var r result
		if jerr := json.Unmarshal(out, &r); jerr != nil && err == nil {
			err = jerr
		}
		if err == nil && r.Error == "" && r.End.SumReceived.BitsPerSecond > 0 {
			return r.End.SumReceived.BitsPerSecond
		}
		if time.Now().After(deadline) {
			tb.Fatalf("iperf3 to %s: %v %s\n%s", addr, err, r.Error, out)
		}
		time.Sleep(200 * time.Millisecond) // server not listening yet
	}
}

// plainWireGuard runs wireguard-go (the standalone program, same library
// version, default settings) between a and b on 10.99.0.0/24, configured
// with wg, as the reference the agent's userspace path must match.
func plainWireGuard(b *testing.B, c *cluster, a, z *node) (addr string, pids []int) {
	b.Helper()
	bin := filepath.Join(c.dir, "wireguard-go")
	if out, err := exec.Command("go", "build", "-o", bin, "golang.zx2c4.com/wireguard").CombinedOutput(); err != nil {
		b.Fatalf("build wireguard-go: %v\n%s", err, out)
	}
	keys := make([]wgtypes.Key, 2)
	for i := range keys {
		keys[i], _ = wgtypes.GeneratePrivateKey()
	}
	nodes := []*node{a, z}
	for i, n := range nodes {
		p, err := n.NS.Start(exec.Command(bin, "-f", "wgref0"))
		if err != nil {
			b.Fatal(err)
		}
		pids = append(pids, p.PID())
		keyFile := filepath.Join(c.dir, fmt.Sprintf("ref%d.key", i))
		os.WriteFile(keyFile, []byte(keys[i].String()), 0o600)
		o := nodes[1-i]
		pid := strconv.Itoa(p.PID())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := e2e.Poll(10*time.Second, 100*time.Millisecond, func() (bool, string) {
			out, err := n.NS.Exec(ctx, "nsenter", "-t", pid, "-m", "wg", "set", "wgref0", "private-key", keyFile, "listen-port", "51900",
				"peer", keys[1-i].PublicKey().String(), "allowed-ips", fmt.Sprintf("10.99.0.%d/32", 2-i),
				"endpoint", o.ip.String()+":51900", "persistent-keepalive", "25")
			return err == nil, string(out)
		}); err != nil {
			b.Fatal(err)
		}
		for _, cmd := range [][]string{
			{"ip", "addr", "add", fmt.Sprintf("10.99.0.%d/24", i+1), "dev", "wgref0"},
			{"ip", "link", "set", "wgref0", "mtu", "1420", "up"},
		} {
			if out, err := n.NS.Exec(ctx, cmd[0], cmd[1:]...); err != nil {
				b.Fatalf("%v: %v\n%s", cmd, err, out)
			}
		}
		cancel()
	}
	return "10.99.0.2", pids
}

// BenchmarkThroughput compares one TCP stream (iperf3, 5 s) between the
// same two namespaces over the raw underlay, plain wireguard-go, and the
// meshspan mesh, and reports the agents' peak memory under that load.
func BenchmarkThroughput(b *testing.B) {
	for range b.N {
		c := newCluster(b, 2, false)
		c.staticMesh()
		for _, n := range c.nodes {
			if v := os.Getenv("BENCH_AGENT_ENV"); v != "" {
				n.Env = strings.Fields(v)
			}
			if v := os.Getenv("BENCH_AGENT_ARGS"); v != "" {
				n.start(strings.Fields(v)...)
			} else {
				n.start()
			}
		}
		c.waitAllUp(c.nodes, 15*time.Second)
		n1, n2 := c.nodes[0], c.nodes[1]
		refAddr, refPIDs := plainWireGuard(b, c, n1, n2)

		// Plain wireguard-go and the mesh alternate, so drift in the shared
		// machine's load hits both alike; each round's ratio is paired.
		const secs, rounds = 4, 3
		raw := iperf(b, n1, n2, n2.ip.String(), secs)
		var refs, meshes, ratios []float64
		for range rounds {
			ref := iperf(b, n1, n2, refAddr, secs)
			m := iperf(b, n1, n2, n2.ID.Address, secs)
			refs, meshes, ratios = append(refs, ref), append(meshes, m), append(ratios, m/ref)
		}
		ref, meshRate, ratio := median(refs), median(meshes), median(ratios)

		_, peak1, _ := rssKB(n1.Proc.PID())
		_, peak2, _ := rssKB(n2.Proc.PID())
		_, refPeak1, _ := rssKB(refPIDs[0])
		_, refPeak2, _ := rssKB(refPIDs[1])
		b.ReportMetric(raw/1e9, "raw-Gbit/s")
		b.ReportMetric(ref/1e9, "wggo-Gbit/s")
		b.ReportMetric(meshRate/1e9, "mesh-Gbit/s")
		b.ReportMetric(ratio, "mesh/wggo")
		b.ReportMetric(meshRate/raw, "mesh/raw")
		b.ReportMetric(float64(max(peak1, peak2))/1024, "agent-peak-MB")
		b.Logf("medians of %d rounds: raw underlay %.2f Gbit/s | plain wireguard-go %.2f Gbit/s | meshspan %.2f Gbit/s | mesh/wireguard-go %.2fx (paired rounds %.2f) | mesh/raw %.2fx",
			rounds, raw/1e9, ref/1e9, meshRate/1e9, ratio, ratios, meshRate/raw)
		b.Logf("peak RSS: agent sender %.1f MB, receiver %.1f MB | plain wireguard-go sender %.1f MB, receiver %.1f MB",
			float64(peak1)/1024, float64(peak2)/1024, float64(refPeak1)/1024, float64(refPeak2)/1024)
	}
}

// BenchmarkConvergence starts N agents that know only the discovery
// service and measures until every agent sees every other up; at N = 20 it
// also reports the agents' idle memory.
func BenchmarkConvergence(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for range b.N {
				c := newCluster(b, n, true)
				c.discoveryMesh()
				first := time.Now()
				c.startAll()
				last := c.nodes[len(c.nodes)-1].Started
				done := c.waitAllUp(c.nodes, 60*time.Second)
				b.ReportMetric(done.Sub(last).Seconds(), "s-after-last-start")
				b.ReportMetric(done.Sub(first).Seconds(), "s-after-first-start")
				b.Logf("N=%d: all %d peers up %.2f s after the last agent started (%.2f s after the first)",
					n, n*(n-1), done.Sub(last).Seconds(), done.Sub(first).Seconds())
				if n == 20 {
					// Idle: the agents go to their idle memory regime after 30 s
					// without traffic; from 35 s on, sample every agent once a
					// second for 10 s and report the worst sample.
					time.Sleep(35 * time.Second)
					s, err := sampleRSS(c.nodes)
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(mb(s.top), "idle-max-RSS-MB")
					b.ReportMetric(mb(s.topAnon), "idle-anon-MB")
					b.ReportMetric(mb(s.topPSS), "idle-PSS-MB")
					// The binary's pages are shared by every agent here (one
					// per host in production): PSS divides them among the 20.
					b.Logf("N=20 idle RSS over 10 s: max %.1f MB (%.1f MB private heap/stacks + %.1f MB pages of the binary; PSS %.1f MB), mean %.1f MB",
						mb(s.top), mb(s.topAnon), mb(s.topFile), mb(s.topPSS), s.mean())
					// Where the private part goes, as the Go runtime sees it
					// (read after sampling: serving /metrics allocates).
					gm := map[string]float64{}
					for _, l := range strings.Split(metrics(b, s.topNode), "\n") {
						if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[0], "go_") {
							gm[f[0]], _ = strconv.ParseFloat(f[1], 64)
						}
					}
					b.Logf("its Go runtime: heap in use %.1f MB, stacks %.1f MB (%v goroutines), runtime structures %.1f MB, heap idle not returned %.1f MB",
						gm["go_memstats_heap_inuse_bytes"]/(1<<20), gm["go_memstats_stack_inuse_bytes"]/(1<<20), gm["go_goroutines"],
						(gm["go_memstats_mspan_inuse_bytes"]+gm["go_memstats_mcache_inuse_bytes"]+gm["go_memstats_buck_hash_sys_bytes"]+gm["go_memstats_gc_sys_bytes"]+gm["go_memstats_other_sys_bytes"])/(1<<20),
						(gm["go_memstats_heap_idle_bytes"]-gm["go_memstats_heap_released_bytes"])/(1<<20))
				}
			}
		})
	}
}

// benchSizes are the cluster sizes BenchmarkConvergence runs; BENCH_N
// ("3,10") overrides the default 3, 10, 20.
func benchSizes() []int {
	v := os.Getenv("BENCH_N")
	if v == "" {
		return []int{3, 10, 20}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkIdleRSS starts 20 agents (discovery, full mesh), waits until all
// are up and then reports their memory twice while the mesh stays idle:
// 35-45 s after all are up (the agents enter their idle regime after 30 s
// of quiet) and again 130-140 s after, when the periodic paths (discovery
// refresh, keepalives, the 2 min rekey) have run once more, so memory the
// agent gave back and took again shows (BENCH_IDLE_LATE=10m looks later).
// The target is VmRSS <= 30 MB.
//
// MESHSPAN_BENCH_BASELINE_BIN (name=path[,name=path...], as for the
// discovery benchmarks) names earlier builds, each measured the same way in
// a sub-benchmark of its own after the agent's, so before and after come
// from one run. One cluster at a time: the kernel's neighbour table is
// shared by all namespaces (gc_thresh3, 1024 entries), and three 20-node
// clusters overflow it.
func BenchmarkIdleRSS(b *testing.B) {
	for _, bin := range benchBinaries() {
		b.Run(bin.name, func(b *testing.B) {
			for range b.N {
				idleRSS(b, bin.path)
			}
		})
	}
}

func idleRSS(b *testing.B, bin string) {
	const n = 20
	c := newClusterOf(b, bin, n, true)
	c.discoveryMesh()
	c.startAll()
	up := c.waitAllUp(c.nodes, 60*time.Second)
	late := 130 * time.Second
	if d, err := time.ParseDuration(os.Getenv("BENCH_IDLE_LATE")); err == nil && d > 45*time.Second {
		late = d // a longer look: BENCH_IDLE_LATE=10m
	}
	for _, w := range []struct {
		name string
		from time.Duration
	}{{"early", 35 * time.Second}, {"late", late}} {
		time.Sleep(time.Until(up.Add(w.from)))
		s, err := sampleRSS(c.nodes)
		if err != nil {
			b.Fatal(err)
		}
		meanPriv := mb(s.priv) / float64(s.samples)
		b.ReportMetric(mb(s.top), w.name+"-max-RSS-MB")
		b.ReportMetric(s.mean(), w.name+"-mean-RSS-MB")
		b.ReportMetric(mb(s.anonSum)/float64(s.samples), w.name+"-mean-anon-MB")
		b.ReportMetric(mb(s.fileSum)/float64(s.samples), w.name+"-mean-file-MB")
		b.Logf("N=%d idle, %v-%v after all up: VmRSS max %.1f MB (%s: %.1f MB RssAnon + %.1f MB RssFile, pages of the binary), mean %.1f MB (RssAnon %.1f + RssFile %.1f), %d of %d samples over 30 MB; Private_Dirty mean %.1f MB",
			n, w.from, w.from+10*time.Second, mb(s.top), s.topNode.Name, mb(s.topAnon), mb(s.topFile), s.mean(),
			mb(s.anonSum)/float64(s.samples), mb(s.fileSum)/float64(s.samples), s.over, s.samples, meanPriv)
	}
}

// benchBinary is an agent binary a benchmark measures.
type benchBinary struct{ name, path string }

// benchBinaries are the agent under test, then the builds named in
// MESHSPAN_BENCH_BASELINE_BIN (name=path, or a bare path named baseline).
func benchBinaries() []benchBinary {
	bins := []benchBinary{{name: "agent", path: agentBin}}
	for _, kv := range strings.Split(os.Getenv("MESHSPAN_BENCH_BASELINE_BIN"), ",") {
		name, path, ok := strings.Cut(kv, "=")
		if !ok {
			name, path = "baseline", kv
		}
		if path != "" {
			bins = append(bins, benchBinary{name: name, path: path})
		}
	}
	return bins
}

// idleRSSTarget is the node agent's idle VmRSS target at N = 20, in kB.
const idleRSSTarget = 30 << 10

// rssSample is what sampleRSS saw, in kB: the largest VmRSS sample with its
// breakdown, and sums over every sample.
type rssSample struct {
	top, topAnon, topFile, topPSS int
	topNode                       *node
	sum, priv, samples, over      int // over: samples above idleRSSTarget
	anonSum, fileSum              int
}

// sampleRSS reads every node's /proc status and smaps_rollup once a second
// for 10 s.
func sampleRSS(nodes []*node) (rssSample, error) {
	var s rssSample
	for range 10 {
		time.Sleep(time.Second)
		for _, nd := range nodes {
			m, err := procStatus(nd.Proc.PID())
			if err != nil {
				return s, err
			}
			rss := m["VmRSS:"]
			s.sum += rss
			s.anonSum += m["RssAnon:"]
			s.fileSum += m["RssFile:"]
			s.priv += m["Private_Dirty:"]
			s.samples++
			if rss > idleRSSTarget {
				s.over++
			}
			if rss > s.top {
				s.top, s.topAnon, s.topFile, s.topPSS, s.topNode = rss, m["RssAnon:"], m["RssFile:"], m["Pss:"], nd
			}
		}
	}
	return s, nil
}

// mean is the mean VmRSS in MB.
func (s rssSample) mean() float64 { return mb(s.sum) / float64(s.samples) }

func mb(kb int) float64 { return float64(kb) / 1024 }
