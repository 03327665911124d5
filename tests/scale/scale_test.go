// Package scale runs the control planes of N cluster members against one
// real discovery service on loopback: per member the real discovery client
// (sealing and opening blobs as Talos does) and the real peer computation
// (internal/mesh), with WireGuard replaced by a recording fake. No packet
// leaves the host: endpoints are documentation addresses nothing is sent to.
//
//	go test ./tests/scale/                                  N = 10 and 100
//	go test -run '^$' -bench Scale -benchtime 1x ./tests/scale/   N = 10, 100, 500 and 1000
//
// It measures, per N: time from start until every member knows every other
// (with its endpoint), time for one member's endpoint change to reach all,
// control-plane CPU and memory per member, and the service's CPU, memory
// and watch messages.
package scale

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

// prefix is the cluster's mesh /64 (ULA).
var prefix = netip.MustParsePrefix("fd7f:175a:b97c:5602::/64")

// fakeDevice records the peer set the control plane configures: public
// key -> candidate endpoints (the device holds one at a time, rotating
// through them; a new endpoint is usable once it is a candidate).
type fakeDevice struct {
	mu      sync.Mutex
	peers   map[wgtypes.Key][]netip.AddrPort
	applies int
}

func (d *fakeDevice) apply(peers []mesh.Peer) {
	m := make(map[wgtypes.Key][]netip.AddrPort, len(peers))
	for _, p := range peers {
		m[p.PublicKey] = p.Endpoints
	}
	d.mu.Lock()
	d.peers = m
	d.applies++
	d.mu.Unlock()
}

func (d *fakeDevice) hasEndpoint(k wgtypes.Key, ep netip.AddrPort) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.peers[k], ep)
}

func (d *fakeDevice) peerKeys() map[wgtypes.Key][]netip.AddrPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.peers
}

func (d *fakeDevice) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.peers)
}

// member is one node's control plane.
type member struct {
	i      int
	key    wgtypes.Key
	self   discovery.Affiliate
	client *discovery.Client
	dev    fakeDevice
	// computeNS is time spent in mesh.Peers (the per-event recompute).
	computeNS atomic.Int64
	warning   atomic.Value // first warning mesh.Peers gave, if any
}

func endpointFor(i, gen int) netip.AddrPort {
	// 198.51.100.0/24 and 203.0.113.0/24 (documentation) give 512
	// addresses; the port tells members and generations apart.
	base := [4]byte{198, 51, 100, byte(i % 256)}
	if i%512 >= 256 {
		base = [4]byte{203, 0, 113, byte(i % 256)}
	}
	return netip.AddrPortFrom(netip.AddrFrom4(base), uint16(20000+i/512*1000+gen))
}

func newMember(i int, addr, clusterID, secret string) (*member, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	m := &member{i: i, key: k.PublicKey()}
	var a [16]byte
	copy(a[:8], prefix.Addr().AsSlice())
	a[14], a[15] = byte(i>>8), byte(i)
	a[8] = 0x02
	m.self = discovery.Affiliate{
		ID: fmt.Sprintf("node-%04d", i), NodeName: fmt.Sprintf("node-%04d", i), Hostname: fmt.Sprintf("node-%04d", i),
		MachineType: "worker", OperatingSystem: "meshspan", PublicKey: m.key.String(),
		Address:   netip.AddrFrom16(a),
		Endpoints: []netip.AddrPort{endpointFor(i, 0)},
	}
	// Each member connects from its own loopback address, as members behind
	// their own public addresses do, so the service's per-address limits
	// (rate, connections, watches) stay at their defaults.
	src := net.IPv4(127, 1+byte(i/250), byte(i%250), 1)
	m.client, err = discovery.NewClient(discovery.ClientOptions{
		Endpoints: []string{"http://" + addr}, ClusterID: clusterID, ClusterSecret: secret,
		AffiliateID: m.self.ID, TTL: 30 * time.Minute,
		Dialer: func(ctx context.Context, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return d.DialContext(ctx, "tcp", a)
		},
	})
	return m, err
}

// run is the control loop: on every discovery change, recompute the peer
// set and configure the device, as the agent's reconcile pass does.
func (m *member) run(ctx context.Context) {
	go m.client.Run(ctx) //nolint:errcheck // ends with ctx
	m.client.SetLocal(m.self, nil)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.client.Changes():
		}
		affs := m.client.Affiliates()
		in := mesh.Input{Self: m.key, Prefix: prefix, Affiliates: make([]mesh.Affiliate, 0, len(affs))}
		for _, a := range affs {
			in.Affiliates = append(in.Affiliates, mesh.Affiliate{ID: a.ID, NodeName: a.NodeName, PublicKey: a.PublicKey,
				Address: a.Address, Addresses: a.Addresses, Networks: a.Networks, ExcludeNetworks: a.ExcludeNetworks, Endpoints: a.Endpoints})
		}
		start := time.Now()
		peers, warns := mesh.Peers(in)
		m.computeNS.Add(int64(time.Since(start)))
		if len(warns) > 0 && m.warning.Load() == nil {
			m.warning.Store(warns[0])
		}
		m.dev.apply(peers)
	}
}

// service is the discovery service under test: in this process for the
// quick runs, its own process for the benchmark (so its CPU and memory are
// its own).
type service struct {
	addr    string
	cmd     *exec.Cmd
	metrics string
	inproc  *discovery.Service
}

func startInProcess(t testing.TB) *service {
	svc, err := discovery.Start(discovery.ServiceConfig{Listen: "127.0.0.1:0", GCInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Shutdown(ctx) //nolint:errcheck
	})
	return &service{addr: svc.Addr().String(), inproc: svc}
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startChild(t testing.TB) *service {
	bin, err := agentbin.Path()
	if err != nil {
		t.Fatal(err)
	}
	s := &service{addr: freeAddr(t), metrics: freeAddr(t)}
	s.cmd = exec.Command(bin, "discovery", "serve", "--listen", s.addr, "--metrics-listen", s.metrics,
		"--snapshot-path", "", "--firewall-mark", "0", "--log-level", "warn")
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("discovery service did not start listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// cpu is the service's CPU time (its process; zero in-process).
func (s *service) cpu() time.Duration {
	if s.cmd == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

func (s *service) peakRSS() float64 {
	if s.cmd == nil {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n / 1024
		}
	}
	return 0
}

func (s *service) watchMessages() float64 {
	if s.metrics == "" {
		return 0
	}
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "meshspan_discovery_watch_messages_total "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

type result struct {
	n                       int
	knownFrac               float64 // of all member-peer pairs, at the end
	fullKnowledge, change   time.Duration
	cpuPerMember            time.Duration
	memPerMember            float64 // bytes
	computePerMember        time.Duration
	serviceCPU              time.Duration
	servicePeakMiB, msgs    float64
	idleCPUPerMemberPercent float64
}

// within polls cond every 20 ms until it holds or limit passes.
func within(limit time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start), true
}

// runScale starts n members and measures. strict (the tests) fails when a
// deadline passes; otherwise (the benchmarks) what was reached is reported.
func runScale(t testing.TB, n int, svc *service, limit time.Duration, strict bool) result {
	secret := make([]byte, 32)
	rand.Read(secret)
	clusterID := base64.StdEncoding.EncodeToString(secret[:16]) + "scale"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mem0, cpu0, scpu0 := heapInUse(), processCPU(), svc.cpu()
	members := make([]*member, n)
	for i := range members {
		m, err := newMember(i, svc.addr, clusterID, base64.StdEncoding.EncodeToString(secret))
		if err != nil {
			t.Fatal(err)
		}
		members[i] = m
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() { defer wg.Done(); m.run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	full, ok := within(limit, func() bool {
		for _, m := range members {
			if m.dev.count() != n-1 {
				return false
			}
		}
		return true
	})
	if !ok {
		known, complete := 0, 0
		missing := map[int]int{} // member index -> how many others lack it
		for _, m := range members {
			known += m.dev.count()
			if m.dev.count() == n-1 {
				complete++
			}
			for _, o := range members {
				if o != m {
					if _, has := m.dev.peerKeys()[o.key]; !has {
						missing[o.i]++
					}
				}
			}
		}
		var diag []string
		for _, m := range members {
			if m.dev.count() < n-1 && len(diag) < 3 {
				diag = append(diag, fmt.Sprintf("member %d configures %d peers, its client sees %d affiliates, Hello answered: %t, applies %d",
					m.i, m.dev.count(), len(m.client.Affiliates()), m.client.ObservedAddress().IsValid(), m.dev.applies))
			}
		}
		for i, c := range missing {
			if len(diag) < 5 {
				w, _ := members[i].warning.Load().(string)
				diag = append(diag, fmt.Sprintf("member %d unknown to %d others (published: %t; its first mesh warning: %q)", i, c, members[i].client.DecryptFailures() == 0, w))
			}
		}
		msg := fmt.Sprintf("N=%d: after %s, %d of %d members know all others (%d of %d peers in total); %s", n, full.Round(time.Millisecond), complete, n, known, n*(n-1), strings.Join(diag, "; "))
		if strict {
			t.Fatal(msg)
		}
		fmt.Println("NOT CONVERGED:", msg)
		return result{n: n, fullKnowledge: full, knownFrac: float64(known) / float64(n*(n-1))}
	}
	res := result{n: n, fullKnowledge: full, knownFrac: 1}
	_ = start
	// Idle: nothing changes for 2 s; what do the control planes burn?
	time.Sleep(500 * time.Millisecond)
	idle0 := processCPU()
	time.Sleep(2 * time.Second)
	res.idleCPUPerMemberPercent = float64(processCPU()-idle0) / float64(2*time.Second) * 100 / float64(n)

	// One member's endpoint changes: how long until all others use it?
	m0 := members[0]
	moved := m0.self
	moved.Endpoints = []netip.AddrPort{endpointFor(0, 1)}
	changed := time.Now()
	m0.client.SetLocal(moved, nil)
	res.change, ok = within(limit, func() bool {
		for _, m := range members[1:] {
			if !m.dev.hasEndpoint(m0.key, moved.Endpoints[0]) {
				return false
			}
		}
		return true
	})
	if !ok {
		if strict {
			t.Fatalf("N=%d: endpoint change did not reach every member within %s", n, limit)
		}
		fmt.Printf("N=%d: endpoint change did not reach every member within %s\n", n, limit)
	}
	_ = changed
	res.cpuPerMember = (processCPU() - cpu0) / time.Duration(n)
	res.memPerMember = float64(heapInUse()-min(mem0, heapInUse())) / float64(n)
	var compute time.Duration
	for _, m := range members {
		compute += time.Duration(m.computeNS.Load())
	}
	res.computePerMember = compute / time.Duration(n)
	res.serviceCPU = svc.cpu() - scpu0
	res.servicePeakMiB = svc.peakRSS()
	res.msgs = svc.watchMessages()
	return res
}

func (r result) String() string {
	if r.knownFrac < 1 {
		return fmt.Sprintf("N=%4d: not converged: after %s members knew %.1f %% of each other", r.n, r.fullKnowledge.Round(time.Millisecond), r.knownFrac*100)
	}
	s := fmt.Sprintf("N=%4d: all know all after %7s; one endpoint change reached all in %6s; per member: CPU %6s (mesh.Peers wall %6s), memory %5.0f KB, idle CPU %.3f%%",
		r.n, r.fullKnowledge.Round(time.Millisecond), r.change.Round(time.Millisecond), r.cpuPerMember.Round(time.Millisecond),
		r.computePerMember.Round(time.Microsecond), r.memPerMember/1024, r.idleCPUPerMemberPercent)
	if r.servicePeakMiB > 0 {
		s += fmt.Sprintf("; service: CPU %s, peak RSS %.0f MiB, %.0f watch messages", r.serviceCPU.Round(time.Millisecond), r.servicePeakMiB, r.msgs)
	}
	return s
}

// TestControlPlaneScale: 10 and 100 members converge and follow a change.
// Deadlines are generous (the machine is shared); the figures are logged.
func TestControlPlaneScale(t *testing.T) {
	for _, n := range []int{10, 100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			svc := startInProcess(t)
			r := runScale(t, n, svc, 60*time.Second, true)
			t.Log(r)
		})
	}
}

// BenchmarkControlPlaneScale: 10, 100, 500 and 1000 members (KubeSpan's
// cap is 1,024 affiliates) against the service in its own process, so its
// CPU and memory are measured at every N. Targets: all know all < 30 s at
// N = 1000, one change reaches all < 2 s, idle CPU < 1 % per member.
func BenchmarkControlPlaneScale(b *testing.B) {
	for _, n := range []int{10, 100, 500, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			svc := startChild(b)
			r := runScale(b, n, svc, 3*time.Minute, false)
			b.ReportMetric(r.knownFrac, "fraction-known")
			b.ReportMetric(r.fullKnowledge.Seconds(), "s-all-know-all")
			b.ReportMetric(r.change.Seconds(), "s-change-reaches-all")
			b.ReportMetric(r.servicePeakMiB, "service-peak-MiB")
			fmt.Println(r)
		})
	}
}

// BenchmarkPeersRecompute: what one discovery event costs a member that
// recomputes its whole peer set (mesh.Peers over all N affiliates), the
// agent's reconcile pass today. Across a cluster one change costs N times
// this; a full start N² times.
func BenchmarkPeersRecompute(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			in := mesh.Input{Prefix: prefix}
			for i := range n {
				m, err := newMember(i, "127.0.0.1:1", "c", base64.StdEncoding.EncodeToString(make([]byte, 32)))
				if err != nil {
					b.Fatal(err)
				}
				a := m.self
				in.Affiliates = append(in.Affiliates, mesh.Affiliate{ID: a.ID, NodeName: a.NodeName, PublicKey: a.PublicKey,
					Address: a.Address, Endpoints: a.Endpoints})
			}
			in.Self = wgtypes.Key{}
			start := time.Now()
			calls := 0
			for time.Since(start) < 2*time.Second || calls < 3 {
				if peers, _ := mesh.Peers(in); len(peers) != n {
					b.Fatalf("%d peers of %d", len(peers), n)
				}
				calls++
			}
			per := time.Since(start) / time.Duration(calls)
			b.ReportMetric(float64(per.Microseconds()), "us/recompute")
			fmt.Printf("N=%4d: one recompute of the peer set %8s; one change across the cluster %8s of CPU; a full start %s\n",
				n, per.Round(time.Microsecond), (per * time.Duration(n)).Round(time.Millisecond), (per * time.Duration(n) * time.Duration(n)).Round(time.Second))
		})
	}
}
