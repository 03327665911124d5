package discovery

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Scale benchmark (issue 4): 1,000 clusters x 10 affiliates, one watcher
// per cluster, on loopback. Run it once:
//
//	go test -run XXX -bench Scale -benchtime 1x ./internal/discovery/
//
// It prints, per store: saturated updates/s with its p99 watch latency,
// p99 at a paced 2x-reference rate (200/s), heap per affiliate, and the
// Redis 2-replica / 1-replica throughput ratio. Load generator, watchers and
// servers share this process and its cores, so figures are conservative.

const (
	benchClusters   = 1000
	benchAffiliates = 10
	benchDataSize   = 320 // a sealed Talos affiliate is ~250-400 bytes
)

type scaleResult struct {
	updatesPerSec float64
	p99Saturated  time.Duration
	paced         []pacedResult
	heapPerAff    float64 // bytes, whole process (servers + in-process clients)
	redisPerAff   float64 // bytes of Redis used_memory, redis runs only
	redisCPU      float64 // Redis CPU seconds per second of saturation
}

type pacedResult struct {
	rate float64 // achieved updates/s
	p99  time.Duration
}

func benchData(ts int64) []byte {
	b := make([]byte, benchDataSize)
	rand.Read(b[8:])
	binary.LittleEndian.PutUint64(b, uint64(ts))
	return b
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// latencyLog collects watch latencies per benchmark phase.
type latencyLog struct {
	phase   atomic.Int32 // 0: not recording
	mu      sync.Mutex
	samples map[int32][]time.Duration
}

func (l *latencyLog) add(data []byte) {
	ph := l.phase.Load()
	if ph == 0 || len(data) < 8 {
		return
	}
	d := time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(data)))
	l.mu.Lock()
	l.samples[ph] = append(l.samples[ph], d)
	l.mu.Unlock()
}

func (l *latencyLog) p99(ph int32) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.samples[ph]
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	return s[len(s)*99/100]
}

func runScale(b *testing.B, addrs []string, redisURL string) scaleResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rdb *redis.Client
	redisMem := func() float64 { return 0 }
	if redisURL != "" {
		opt, _ := redis.ParseURL(redisURL)
		rdb = redis.NewClient(opt)
		defer rdb.Close()
		redisMem = func() float64 {
			info, _ := rdb.Info(ctx, "memory").Result()
			for _, l := range strings.Split(info, "\r\n") {
				if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
					f, _ := strconv.ParseFloat(v, 64)
					return f
				}
			}
			return 0
		}
	}
	redisInfo := func(section, field string) float64 {
		if rdb == nil {
			return 0
		}
		info, _ := rdb.Info(ctx, section).Result()
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, field+":"); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	redisCPU := func() float64 { return redisInfo("cpu", "used_cpu_user") + redisInfo("cpu", "used_cpu_sys") }
	heap0, redis0 := heapAlloc(), redisMem()

	// A few connections per replica, streams multiplexed over them.
	var clients []serverpb.ClusterClient
	for _, a := range addrs {
		for range 4 {
			conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			clients = append(clients, serverpb.NewClusterClient(conn))
		}
	}
	cluster := func(i int) string { return fmt.Sprintf("bench-cluster-%04d", i) }

	// Watchers: one per cluster, timing each change from the send
	// timestamp inside its data.
	lat := &latencyLog{samples: make(map[int32][]time.Duration)}
	var ready sync.WaitGroup
	for i := range benchClusters {
		ready.Add(1)
		go func() {
			st, err := clients[i%len(clients)].Watch(ctx, &serverpb.WatchRequest{ClusterId: cluster(i)})
			if err == nil {
				_, err = st.Recv()
			}
			ready.Done()
			for err == nil {
				var m *serverpb.WatchResponse
				if m, err = st.Recv(); err == nil && !m.Deleted {
					lat.add(m.Affiliates[0].Data)
				}
			}
		}()
	}
	ready.Wait()

	update := func(c serverpb.ClusterClient, n int) error {
		cl, af := (n/benchAffiliates)%benchClusters, n%benchAffiliates
		ep := []byte{byte(af), byte(cl), byte(cl >> 8), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
		_, err := c.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{
			ClusterId: cluster(cl), AffiliateId: fmt.Sprintf("affiliate-%02d-%s", af, strings.Repeat("x", 30)),
			AffiliateData: benchData(time.Now().UnixNano()), AffiliateEndpoints: [][]byte{ep},
			Ttl: durationpb.New(30 * time.Minute),
		})
		return err
	}
	// Populate all 10,000 affiliates.
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int(next.Add(1) - 1); n < benchClusters*benchAffiliates; n = int(next.Add(1) - 1) {
				if err := update(clients[w%len(clients)], n); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var res scaleResult
	res.heapPerAff = float64(heapAlloc()-heap0) / (benchClusters * benchAffiliates)
	if rdb != nil {
		res.redisPerAff = (redisMem() - redis0) / (benchClusters * benchAffiliates)
	}

	// Phase 1: saturate for 2 s with 32 concurrent updaters.
	lat.phase.Store(1)
	var done atomic.Int64
	cpu0 := redisCPU()
	stop := time.Now().Add(2 * time.Second)
	start := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := w * 7919; time.Now().Before(stop); n++ {
				if update(clients[w%len(clients)], n) == nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.updatesPerSec = float64(done.Load()) / time.Since(start).Seconds()
	res.redisCPU = (redisCPU() - cpu0) / time.Since(start).Seconds()
	time.Sleep(300 * time.Millisecond) // let the last deltas land
	res.p99Saturated = lat.p99(1)

	// Paced phases: 2x and 20x the reference's 100 updates/s, 1 s each,
	// on a fixed schedule (open loop, so a slow server cannot slow the
	// offered load down and hide its latency).
	for i, rate := range []float64{200, 2000} {
		ph := int32(2 + i)
		lat.phase.Store(ph)
		n := int(rate)
		interval := time.Duration(float64(time.Second) / rate)
		start := time.Now()
		for k := range n {
			if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
				time.Sleep(d)
			}
			wg.Add(1)
			go func() { defer wg.Done(); update(clients[k%len(clients)], k*13+int(ph)) }()
		}
		wg.Wait()
		achieved := float64(n) / time.Since(start).Seconds()
		time.Sleep(300 * time.Millisecond)
		res.paced = append(res.paced, pacedResult{rate: achieved, p99: lat.p99(ph)})
	}
	lat.phase.Store(0)
	return res
}

func report(b *testing.B, name string, r scaleResult) {
	b.ReportMetric(r.updatesPerSec, "updates/s")
	b.ReportMetric(float64(r.p99Saturated.Microseconds())/1000, "p99-ms-saturated")
	b.ReportMetric(r.heapPerAff, "heap-B/affiliate")
	if r.redisPerAff > 0 {
		b.ReportMetric(r.redisPerAff, "redis-B/affiliate")
	}
	line := fmt.Sprintf("%-9s %6.0f updates/s (p99 %5.1f ms)", name, r.updatesPerSec, float64(r.p99Saturated.Microseconds())/1000)
	for _, p := range r.paced {
		b.ReportMetric(float64(p.p99.Microseconds())/1000, fmt.Sprintf("p99-ms-at-%.0f/s", p.rate))
		line += fmt.Sprintf(" | %4.0f/s: p99 %5.1f ms", p.rate, float64(p.p99.Microseconds())/1000)
	}
	line += fmt.Sprintf(" | heap %5.0f B/aff", r.heapPerAff)
	if r.redisPerAff > 0 {
		line += fmt.Sprintf(" | redis %4.0f B/aff, %.2f cores busy", r.redisPerAff, r.redisCPU)
	}
	fmt.Println(line)
}

func BenchmarkScale(b *testing.B) {
	var mem, r1, r2 scaleResult
	b.Run("memory", func(b *testing.B) {
		svc := startService(b, ServiceConfig{RateLimitRPS: -1})
		mem = runScale(b, []string{svc.Addr().String()}, "")
		report(b, "memory", mem)
	})
	b.Run("redis-1-replica", func(b *testing.B) {
		rs := startRedis(b)
		svc := startService(b, ServiceConfig{Store: "redis", RedisURL: rs.URL(), RateLimitRPS: -1})
		r1 = runScale(b, []string{svc.Addr().String()}, rs.URL())
		report(b, "redis x1", r1)
	})
	b.Run("redis-2-replicas", func(b *testing.B) {
		rs := startRedis(b)
		s1 := startService(b, ServiceConfig{Store: "redis", RedisURL: rs.URL(), RateLimitRPS: -1})
		s2 := startService(b, ServiceConfig{Store: "redis", RedisURL: rs.URL(), RateLimitRPS: -1})
		r2 = runScale(b, []string{s1.Addr().String(), s2.Addr().String()}, rs.URL())
		report(b, "redis x2", r2)
	})
	if r1.updatesPerSec > 0 && r2.updatesPerSec > 0 {
		fmt.Printf("reference: ~100 updates/s at p99 17 ms, ~170 KB/affiliate. memory store: %.0fx rate; redis 2 replicas / 1 replica = %.2fx (target 1.6x; %d cores shared with the load generator)\n",
			mem.updatesPerSec/100, r2.updatesPerSec/r1.updatesPerSec, runtime.NumCPU())
	}
}

// BenchmarkMemoryStoreHeap measures the store alone: heap per affiliate
// with 1,000 clusters x 10 affiliates (320-byte blobs, 2 endpoints) and a
// subscription per cluster, no gRPC or client buffers counted.
func BenchmarkMemoryStoreHeap(b *testing.B) {
	ctx := context.Background()
	before := heapAlloc()
	m := NewMemoryStore(DefaultLimits(), nil)
	var subs []*Subscription
	for c := range benchClusters {
		_, s, _ := m.Watch(ctx, fmt.Sprint("cluster-", c))
		subs = append(subs, s)
		for a := range benchAffiliates {
			m.Update(ctx, Update{ClusterID: fmt.Sprint("cluster-", c), AffiliateID: fmt.Sprintf("affiliate-%02d-%s", a, strings.Repeat("x", 30)),
				Data: benchData(0), Endpoints: [][]byte{make([]byte, 16), make([]byte, 32)}, TTL: time.Minute})
		}
		s.Next(ctx) // drain: the steady state holds no backlog
	}
	per := float64(heapAlloc()-before) / (benchClusters * benchAffiliates)
	runtime.KeepAlive(m)
	runtime.KeepAlive(subs)
	b.ReportMetric(per, "heap-B/affiliate")
	fmt.Printf("memory store alone: %.0f B heap per affiliate (blob 320 B + 2 endpoints)\n", per)
}
