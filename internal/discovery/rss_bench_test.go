package discovery

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

// Memory of the service measured honestly: the service runs as its own
// process (`meshspan-agent discovery serve`, default limits), the load
// comes from this one, and the figures are the child's RSS from /proc.
//
//	go test -run '^$' -bench ServiceMemory -benchtime 1x ./internal/discovery/
//
// Reference (issue 18, same machine kind): Sidero's discovery service v1.1.0
// peaked at 1,224 MiB on the saturated 1,000 clusters x 10 affiliates run;
// the target is at most half that, and at most 8 KB per idle watcher.

const sideroPeakMiB = 1224

// childService is a discovery service in its own process.
type childService struct {
	cmd     *exec.Cmd
	addr    string
	metrics string
}

// baselineEnv names other agent binaries (earlier builds) that the
// benchmarks also measure, in the same run, for before/after ratios:
// name=path[,name=path...].
const baselineEnv = "MESHSPAN_BENCH_BASELINE_BIN"

// sideroEnv names a build of Sidero's discovery service (the reference the
// targets are set against), measured in the same run under the same load.
// The project does not build it; to measure against it:
//
//	go install github.com/siderolabs/discovery-service/cmd/discovery-service@v1.1.0
//	MESHSPAN_BENCH_SIDERO_BIN=$(go env GOPATH)/bin/discovery-service make bench
const sideroEnv = "MESHSPAN_BENCH_SIDERO_BIN"

type benchBinary struct {
	name, path string
	sidero     bool // Sidero's command line, not the agent's
}

// benchBinaries are the binaries to measure: the agent, then any named in
// baselineEnv.
func benchBinaries(b *testing.B) []benchBinary {
	bin, err := agentbin.Path()
	if err != nil {
		b.Fatal(err)
	}
	bins := []benchBinary{{name: "agent", path: bin}}
	for _, kv := range strings.Split(os.Getenv(baselineEnv), ",") {
		if name, path, ok := strings.Cut(kv, "="); ok {
			bins = append(bins, benchBinary{name: name, path: path})
		} else if kv != "" {
			bins = append(bins, benchBinary{name: "baseline", path: kv})
		}
	}
	if p := os.Getenv(sideroEnv); p != "" {
		bins = append(bins, benchBinary{name: "sidero", path: p, sidero: true})
	}
	return bins
}

func freeLoopbackAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startChildService(b *testing.B, bin benchBinary) *childService {
	b.Helper()
	addr, maddr := freeLoopbackAddr(b), freeLoopbackAddr(b)
	args := []string{"discovery", "serve", "--listen", addr, "--metrics-listen", maddr, "--snapshot-path", "", "--firewall-mark", "0", "--log-level", "warn"}
	if bin.sidero {
		args = []string{"--addr", addr, "--metrics-addr", maddr, "--landing-addr", "", "--snapshots-enabled=false"}
	}
	cmd := exec.Command(bin.path, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &childService{cmd: cmd, addr: addr, metrics: maddr}
	b.Cleanup(c.stop)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	eventually(b, 20*time.Second, "child discovery service answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := serverpb.NewClusterClient(conn).Hello(ctx, &serverpb.HelloRequest{ClusterId: "probe"})
		return err == nil
	})
	return c
}

// goStats reads the child's Go runtime figures from its metrics endpoint:
// stack and heap in use (bytes) and goroutines.
func (c *childService) goStats() (stack, heap, goroutines float64) {
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		return 0, 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "go_memstats_stack_inuse_bytes":
			stack = f
		case "go_memstats_heap_inuse_bytes":
			heap = f
		case "go_goroutines":
			goroutines = f
		}
	}
	return stack, heap, goroutines
}

func (c *childService) stop() {
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

// procCPU is a process's CPU time so far (utime + stime).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// procKB reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procKB(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	return 0
}

// settledRSS waits until the child's RSS stops moving (a goroutine's stack
// or a GC cycle lands late) and returns it in bytes.
func settledRSS(pid int) float64 {
	prev := procKB(pid, "VmRSS")
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		cur := procKB(pid, "VmRSS")
		if d := cur - prev; d < 64 && d > -64 {
			return cur * 1024
		}
		prev = cur
	}
	return prev * 1024
}

// loadClient dials from one of many loopback addresses (so the service's
// per-address limits stay at their defaults) with small client buffers
// (the load generator's memory is not what is measured).
func loadClient(b testing.TB, addr string, n int) (*grpc.ClientConn, serverpb.ClusterClient) {
	src := net.IPv4(127, 0, byte(1+n/25600), byte(1+(n/100)%254))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return d.DialContext(ctx, "tcp", a)
		}))
	if err != nil {
		b.Fatal(err)
	}
	return conn, serverpb.NewClusterClient(conn)
}

// parallel runs fn(i) for i in [0, n) on w workers.
func parallel(n, w int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// idleResult is what idle connections and watchers cost the service.
type idleResult struct {
	perConn, perWatcher                 float64 // bytes of RSS
	stackPerW, heapPerW, goroutinesPerW float64 // the Go runtime's view of a watcher
}

func measureIdle(b *testing.B, bin benchBinary) idleResult {
	const conns, watchers = 2000, 5000
	svc := startChildService(b, bin)
	defer svc.stop()
	pid := svc.cmd.Process.Pid
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r0 := settledRSS(pid)
	clients := make([]serverpb.ClusterClient, conns)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	var mu sync.Mutex
	parallel(conns, 32, func(i int) {
		conn, c := loadClient(b, svc.addr, i)
		mu.Lock()
		closers = append(closers, func() { conn.Close() })
		mu.Unlock()
		clients[i] = c
		if _, err := c.Hello(ctx, &serverpb.HelloRequest{ClusterId: "idle"}); err != nil {
			b.Error(err)
		}
	})
	r1 := settledRSS(pid)
	s1, h1, g1 := svc.goStats()
	// Watchers: streams over the connections already open, 5 per
	// cluster, each past its first (empty) snapshot.
	parallel(watchers, 32, func(i int) {
		st, err := clients[i%conns].Watch(ctx, &serverpb.WatchRequest{ClusterId: fmt.Sprint("idle-", i/5)})
		if err == nil {
			_, err = st.Recv()
		}
		if err != nil {
			b.Error(err)
		}
	})
	r2 := settledRSS(pid)
	s2, h2, g2 := svc.goStats()
	return idleResult{perConn: (r1 - r0) / conns, perWatcher: (r2 - r1) / watchers,
		stackPerW: (s2 - s1) / watchers, heapPerW: (h2 - h1) / watchers, goroutinesPerW: (g2 - g1) / watchers}
}

// saturatedResult is the 1,000 clusters x 10 affiliates run.
type saturatedResult struct {
	peakMiB, rate, cpuPerUpdate float64 // MiB, updates/s, ns
	p99                         time.Duration
	failed, delivered           int64
	setup                       time.Duration
}

func measureSaturated(b *testing.B, bin benchBinary) saturatedResult {
	const clusters, affs, offered, seconds = benchClusters, benchAffiliates, 1000, 10
	svc := startChildService(b, bin)
	defer svc.stop()
	pid := svc.cmd.Process.Pid
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := clusters * affs
	clients := make([]serverpb.ClusterClient, n)
	conns := make([]*grpc.ClientConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var recvd atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration
	var recording atomic.Bool
	update := func(i int) error {
		cl, af := i/affs, i%affs
		data := benchData(time.Now().UnixNano())
		ep := []byte{byte(af), byte(cl), byte(cl >> 8), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
		_, err := clients[i].AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{
			ClusterId: fmt.Sprintf("bench-cluster-%04d", cl), AffiliateId: fmt.Sprintf("affiliate-%02d-%s", af, strings.Repeat("x", 30)),
			AffiliateData: data, AffiliateEndpoints: [][]byte{ep}, Ttl: durationpb.New(30 * time.Minute),
		})
		return err
	}
	// Every affiliate is a node: its own connection, a watch on its
	// cluster, then its first update.
	start := time.Now()
	parallel(n, 64, func(i int) {
		conn, c := loadClient(b, svc.addr, i)
		conns[i], clients[i] = conn, c
		st, err := c.Watch(ctx, &serverpb.WatchRequest{ClusterId: fmt.Sprintf("bench-cluster-%04d", i/affs)})
		if err == nil {
			_, err = st.Recv()
		}
		if err != nil {
			b.Error(err)
			return
		}
		go func() {
			for {
				m, err := st.Recv()
				if err != nil {
					return
				}
				recvd.Add(int64(len(m.Affiliates)))
				if !recording.Load() || m.Deleted {
					continue
				}
				now := time.Now().UnixNano()
				for _, a := range m.Affiliates {
					if len(a.Data) >= 8 {
						d := time.Duration(now - int64(binary.LittleEndian.Uint64(a.Data)))
						latMu.Lock()
						lat = append(lat, d)
						latMu.Unlock()
					}
				}
			}
		}()
	})
	parallel(n, 64, func(i int) {
		if err := update(i); err != nil {
			b.Error(err)
		}
	})
	setup := time.Since(start)
	fmt.Printf("saturated: service pid %d set up in %s, offering load\n", pid, setup.Round(time.Second))
	// Open loop at the offered rate: a slow service cannot slow the
	// load down and hide its memory or latency.
	recording.Store(true)
	cpu0 := procCPU(pid)
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	total := offered * seconds
	interval := time.Second / offered
	t0 := time.Now()
	for k := range total {
		if d := time.Until(t0.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if update((k*7919)%n) == nil {
				done.Add(1)
			} else {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	rate := float64(done.Load()) / time.Since(t0).Seconds()
	time.Sleep(time.Second)
	res := saturatedResult{rate: rate, failed: failed.Load(), delivered: recvd.Load(), setup: setup,
		cpuPerUpdate: float64(procCPU(pid)-cpu0) / float64(max(done.Load(), 1))}
	recording.Store(false)
	res.peakMiB = procKB(pid, "VmHWM") / 1024
	latMu.Lock()
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p99 = lat[len(lat)*99/100]
	}
	latMu.Unlock()
	return res
}

func BenchmarkServiceMemory(b *testing.B) {
	bins := benchBinaries(b)
	b.Run("idle", func(b *testing.B) {
		var rs []idleResult
		for _, bin := range bins {
			r := measureIdle(b, bin)
			rs = append(rs, r)
			fmt.Printf("idle (%s): %.1f KB per connection (2000), %.1f KB per watcher (5000; target <= 8 KB, reference ~33 KB); per watcher the Go runtime holds %.1f KB of stack, %.1f KB of heap, %.2f goroutines\n",
				bin.name, r.perConn/1024, r.perWatcher/1024, r.stackPerW/1024, r.heapPerW/1024, r.goroutinesPerW)
		}
		b.ReportMetric(rs[0].perConn, "B/idle-conn")
		b.ReportMetric(rs[0].perWatcher, "B/idle-watcher")
		for i, r := range rs[1:] {
			fmt.Printf("idle: agent/%s per connection %.2fx, per watcher %.2fx\n", bins[i+1].name, rs[0].perConn/r.perConn, rs[0].perWatcher/r.perWatcher)
		}
	})
	b.Run("saturated", func(b *testing.B) {
		var rs []saturatedResult
		for _, bin := range bins {
			r := measureSaturated(b, bin)
			rs = append(rs, r)
			fmt.Printf("saturated (%s) %d clusters x %d affiliates (a connection and a watch each; setup %s): offered %d updates/s, achieved %.0f (%d failed), "+
				"p99 watch latency %.1f ms, %d affiliate changes delivered; service CPU %.0f us per update (10 watchers each); service peak RSS %.0f MiB = %.2fx Sidero's %d MiB (target <= 0.5x)\n",
				bin.name, benchClusters, benchAffiliates, r.setup.Round(time.Second), 1000, r.rate, r.failed, float64(r.p99.Microseconds())/1000, r.delivered, r.cpuPerUpdate/1e3, r.peakMiB, r.peakMiB/sideroPeakMiB, sideroPeakMiB)
		}
		r := rs[0]
		b.ReportMetric(r.peakMiB, "peak-RSS-MiB")
		b.ReportMetric(r.rate, "updates/s")
		b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-watch-ms")
		b.ReportMetric(r.cpuPerUpdate/1e3, "service-CPU-us/update")
		for i, o := range rs[1:] {
			fmt.Printf("saturated: agent/%s peak RSS %.2fx, rate %.2fx, service CPU per update %.2fx, p99 %.2fx\n", bins[i+1].name,
				r.peakMiB/o.peakMiB, r.rate/o.rate, r.cpuPerUpdate/o.cpuPerUpdate, float64(r.p99)/float64(max(o.p99, 1)))
		}
	})
}
