package discovery

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// redisClusterNodes is a local Redis Cluster: 3 masters and 3 replicas on
// loopback ports, created by the test.
type redisClusterNodes struct {
	ports []int
	mu    sync.Mutex
	cmds  map[int]*exec.Cmd
}

func (c *redisClusterNodes) URL() string {
	u := fmt.Sprintf("redis://127.0.0.1:%d", c.ports[0])
	for i, p := range c.ports[1:3] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += fmt.Sprintf("%saddr=127.0.0.1:%d", sep, p)
	}
	return u
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startRedisCluster(t testing.TB) *redisClusterNodes {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed: apt-get install redis-server redis-tools", bin)
			}
			t.Skipf("%s not installed (apt-get install redis-server redis-tools)", bin)
		}
	}
	c := &redisClusterNodes{cmds: make(map[int]*exec.Cmd)}
	// Cluster bus ports are port+10000: pick ports whose bus port is free too.
	for len(c.ports) < 6 {
		p := freePort(t)
		if p > 55000 {
			continue
		}
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+10000)); err == nil {
			l.Close()
			c.ports = append(c.ports, p)
		}
	}
	base := t.TempDir()
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, cmd := range c.cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	var addrs []string
	for _, p := range c.ports {
		dir := filepath.Join(base, strconv.Itoa(p))
		os.MkdirAll(dir, 0o700)
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(p), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no", "--dir", dir,
			"--logfile", filepath.Join(dir, "redis.log"))
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		c.mu.Lock()
		c.cmds[p] = cmd
		c.mu.Unlock()
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	for _, a := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: a})
		eventually(t, 10*time.Second, "redis node "+a+" answers", func() bool { return rdb.Ping(context.Background()).Err() == nil })
		rdb.Close()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: a})
		eventually(t, 30*time.Second, "cluster state ok on "+a, func() bool {
			info, err := rdb.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		eventually(t, 30*time.Second, "a master on "+a+" has its replica in sync", func() bool {
			info, err := rdb.Info(context.Background(), "replication").Result()
			if err != nil {
				return false
			}
			return strings.Contains(info, "role:slave") || strings.Contains(info, "state=online")
		})
		rdb.Close()
	}
	return c
}

func (c *redisClusterNodes) kill(port int) {
	c.mu.Lock()
	cmd := c.cmds[port]
	delete(c.cmds, port)
	c.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// TestRedisClusterSemantics: the store behaves the same on Redis Cluster.
func TestRedisClusterSemantics(t *testing.T) {
	rc := startRedisCluster(t)
	clock := newFakeClock()
	s, err := NewRedisStore(RedisOptions{URL: rc.URL(), Cluster: true, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testStoreSemantics(t, s, clock)
}

// TestRedisClusterFailover: two service replicas on a 3-master Redis
// Cluster. Changes made through one reach watchers on the other, whichever
// shard holds the cluster. Then the master holding one cluster is killed:
// once its replica is promoted, every acknowledged affiliate is there, and
// watchers of that cluster are told to resync and get it all back.
func TestRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 6-node Redis Cluster")
	}
	rc := startRedisCluster(t)
	cfg := ServiceConfig{Store: "redis", RedisURL: rc.URL(), RedisCluster: true, RateLimitRPS: -1, GCInterval: time.Hour}
	a := startService(t, cfg)
	b := startService(t, cfg)
	ca, cb := dial(t, a.Addr().String()), dial(t, b.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Clusters spread over the shards.
	rs := a.Store().(*RedisStore)
	const nClusters, nAffs = 12, 4
	masterOf := map[string]string{}
	shards := map[string]bool{}
	for i := range nClusters {
		cid := fmt.Sprint("cluster-", i)
		ch, _ := rs.changeChannel(cid)
		node, err := rs.cc.MasterForKey(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		masterOf[cid] = node.Options().Addr
		shards[masterOf[cid]] = true
	}
	if len(shards) < 2 {
		t.Fatalf("test clusters all landed on one shard: %v", masterOf)
	}

	// Watchers on replica b, one per cluster.
	type watch struct {
		mu   sync.Mutex
		seen map[string]string // affiliate -> data
		err  error
	}
	watches := map[string]*watch{}
	startWatch := func(cid string) *watch {
		w := &watch{seen: map[string]string{}}
		st, err := cb.Watch(ctx, &serverpb.WatchRequest{ClusterId: cid})
		if err != nil {
			t.Fatal(err)
		}
		first, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, af := range first.Affiliates {
			w.seen[af.Id] = string(af.Data)
		}
		go func() {
			for {
				m, err := st.Recv()
				w.mu.Lock()
				if err != nil {
					w.err = err
					w.mu.Unlock()
					return
				}
				if !m.Deleted {
					w.seen[m.Affiliates[0].Id] = string(m.Affiliates[0].Data)
				}
				w.mu.Unlock()
			}
		}()
		return w
	}
	for cid := range masterOf {
		watches[cid] = startWatch(cid)
	}
	update := func(cid, aid string, n int64) error {
		_, err := ca.AffiliateUpdate(ctx, &serverpb.AffiliateUpdateRequest{ClusterId: cid, AffiliateId: aid,
			AffiliateData: []byte(strconv.FormatInt(n, 10)), Ttl: durationpb.New(10 * time.Minute)})
		return err
	}
	for cid := range masterOf {
		for j := range nAffs {
			if err := update(cid, fmt.Sprint("aff-", j), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	for cid, w := range watches {
		eventually(t, 10*time.Second, "watcher on the other replica sees all of "+cid, func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return len(w.seen) == nAffs
		})
	}

	// Kill the master of cluster-0 while writers keep updating every
	// affiliate; record the last acknowledged value of each.
	victim := masterOf["cluster-0"]
	port, _ := strconv.Atoi(victim[strings.LastIndexByte(victim, ':')+1:])
	var acked sync.Map // cid/aid -> int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var okWrites, failedWrites atomic.Int64
	for cid := range masterOf {
		for j := range nAffs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				aid := fmt.Sprint("aff-", j)
				for n := int64(2); !stop.Load(); n++ {
					if update(cid, aid, n) == nil {
						acked.Store(cid+"/"+aid, n)
						okWrites.Add(1)
					} else {
						failedWrites.Add(1)
						time.Sleep(50 * time.Millisecond)
					}
				}
			}()
		}
	}
	time.Sleep(300 * time.Millisecond)
	rc.kill(port)
	killed := time.Now()
	// Writes to the dead shard succeed again once its replica took over.
	var lastErr error
	var lastLog time.Time
	eventually(t, 60*time.Second, "writes to cluster-0's shard succeed again after failover", func() bool {
		lastErr = update("cluster-0", "probe", 1)
		if lastErr != nil && time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			t.Logf("write to the failed shard: %v", lastErr)
		}
		return lastErr == nil
	})
	t.Logf("failover: writes to the killed shard resumed after %s", time.Since(killed).Round(10*time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d writes acknowledged, %d refused during the failover", okWrites.Load(), failedWrites.Load())

	// Nothing acknowledged is lost: the stored value is at least the last
	// acknowledged one (a refused write may still have landed).
	for cid := range masterOf {
		// A client retries Unavailable; so does this one, briefly, while
		// replica b learns the new slot map.
		var resp *serverpb.ListResponse
		eventually(t, 20*time.Second, "replica b lists "+cid, func() bool {
			var err error
			resp, err = cb.List(ctx, &serverpb.ListRequest{ClusterId: cid})
			return err == nil
		})
		got := map[string]int64{}
		for _, af := range resp.Affiliates {
			got[af.Id], _ = strconv.ParseInt(string(af.Data), 10, 64)
		}
		for j := range nAffs {
			aid := fmt.Sprint("aff-", j)
			want, ok := acked.Load(cid + "/" + aid)
			if !ok {
				want = int64(1)
			}
			if got[aid] < want.(int64) {
				t.Errorf("%s/%s: stored %d, but %d was acknowledged (lost in the failover)", cid, aid, got[aid], want)
			}
		}
	}

	// The watcher of cluster-0 was told to resync; a new watch gets the
	// full state and follows later changes.
	w0 := watches["cluster-0"]
	eventually(t, 20*time.Second, "cluster-0's watcher ends so its client resyncs", func() bool {
		w0.mu.Lock()
		defer w0.mu.Unlock()
		return w0.err != nil
	})
	if c := status.Code(w0.err); c != codes.Unavailable {
		t.Errorf("cluster-0 watch ended with %v, want Unavailable (resync)", w0.err)
	}
	var w *watch
	eventually(t, 20*time.Second, "a new watch of cluster-0 on replica b", func() bool {
		st, err := cb.Watch(ctx, &serverpb.WatchRequest{ClusterId: "cluster-0"})
		if err == nil {
			_, err = st.Recv()
		}
		if err != nil {
			return false
		}
		w = startWatch("cluster-0")
		return true
	})
	w.mu.Lock()
	n := len(w.seen)
	w.mu.Unlock()
	if n != nAffs+1 {
		t.Fatalf("resynced snapshot holds %d affiliates, want %d", n, nAffs+1)
	}
	if err := update("cluster-0", "aff-0", 1_000_000); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new watch follows changes on the promoted master", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.seen["aff-0"] == "1000000"
	})
	// Watchers of clusters on the other shards were not disturbed.
	for cid, wc := range watches {
		if masterOf[cid] == victim {
			continue
		}
		wc.mu.Lock()
		err := wc.err
		wc.mu.Unlock()
		if err != nil {
			t.Errorf("watch of %s (another shard) ended: %v", cid, err)
		}
	}
}
