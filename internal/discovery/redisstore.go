package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
)

// RedisStore keeps all state in Redis, so any number of replicas can serve
// the same clusters; a replica holds only its own watchers.
//
// Layout (P = key prefix, C = len(cluster ID) ":" cluster ID, which keeps
// the boundary between cluster and affiliate IDs unambiguous):
//
//	P "clusters"           set of cluster IDs, walked by GC
//	P "c:" C ":a"          hash   affiliate ID -> sealed data
//	P "c:" C ":x"          zset   affiliate ID, score = expiry (unix ms)
//	P "c:" C ":e:" ID      zset   sealed endpoint blob, score = expiry (unix ms)
//	P "events"             pub/sub channel: one message per change
//
// Every mutation is one Lua script, so replicas never interleave inside a
// merge, and the script publishes the affiliate's resulting state (or its
// deletion) in the same atomic step. Redis delivers a channel's messages in
// publish order, so a replica's watchers converge on the latest state with
// no read-back. Keys also carry a Redis TTL just past the longest expiry
// they hold, so state left behind by dead replicas disappears on its own.
//
// A change message is a sequence of netstrings (len ":" bytes): cluster ID,
// affiliate ID, "u" or "d", then for "u" the data and each live endpoint.
type RedisStore struct {
	rdb  redis.UniversalClient
	cc   *redis.ClusterClient // Redis Cluster mode; nil for one Redis
	wait int                  // replicas a write must reach before it is acknowledged
	// degraded: master address -> until when it is known to have no
	// replica (writes are acknowledged without WAIT meanwhile).
	degraded sync.Map
	prefix   string
	gcLock   time.Duration
	limits   Limits
	now      func() time.Time
	log      *slog.Logger

	mu     sync.Mutex
	closed bool // guarded by mu: no new watches once closing
	subs   map[string]map[*Subscription]struct{}

	ps     *redis.PubSub // one Redis: the global channel
	shards *shardFeeds   // Redis Cluster: sharded channels, per master
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// RedisOptions configure a RedisStore.
type RedisOptions struct {
	// URL as go-redis parses it: redis://[user:pass@]host:port/db or
	// unix:///path/to/socket.
	URL    string
	Prefix string // default "meshspan:discovery:"
	Limits Limits
	Now    func() time.Time
	Logger *slog.Logger
	// GCInterval, if set, makes GC a no-op on a replica while another ran
	// it less than 90% of an interval ago (a lock in Redis), so N replicas
	// do not collect N times. Zero: every GC call runs.
	GCInterval time.Duration
	// Cluster treats URL as a seed node of a Redis Cluster (more seeds:
	// ?addr=host:port&addr=...). Each discovery cluster's keys share one
	// hash slot ({...} hash tag), its changes go to a sharded channel in the
	// same slot (SPUBLISH, Redis >= 7.0), and a write is acknowledged only
	// once a replica has it (WAIT), so a master failover loses nothing
	// acknowledged.
	Cluster bool
	// WaitReplicas is how many replicas must confirm a write before it is
	// acknowledged (WAIT); zero: 1 in cluster mode, 0 otherwise.
	WaitReplicas int
}

// NewRedisStore connects lazily: the first failing call returns
// ErrUnavailable, and the store recovers by itself once Redis answers.
func NewRedisStore(opts RedisOptions) (*RedisStore, error) {
	var rdb redis.UniversalClient
	var cc *redis.ClusterClient
	if opts.Cluster {
		co, err := parseRedisClusterURL(opts.URL)
		if err != nil {
			return nil, err
		}
		// Fail fast while a shard is away: clients retry with backoff.
		co.DialTimeout, co.ReadTimeout, co.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		co.MaxRedirects = 3
		cc = redis.NewClusterClient(co)
		rdb = cc
		if opts.WaitReplicas == 0 {
			opts.WaitReplicas = 1
		}
	} else {
		ro, err := parseRedisURL(opts.URL)
		if err != nil {
			return nil, err
		}
		// Fail fast while Redis is away: clients retry with backoff anyway.
		ro.DialTimeout = 2 * time.Second
		ro.ReadTimeout = 2 * time.Second
		ro.WriteTimeout = 2 * time.Second
		ro.MaxRetries = 1
		rdb = redis.NewClient(ro)
	}
	if opts.Prefix == "" {
		opts.Prefix = "meshspan:discovery:"
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &RedisStore{
		rdb:    rdb,
		cc:     cc,
		wait:   max(opts.WaitReplicas, 0),
		prefix: opts.Prefix,
		gcLock: opts.GCInterval * 9 / 10,
		limits: opts.Limits,
		now:    opts.Now,
		log:    opts.Logger,
		subs:   make(map[string]map[*Subscription]struct{}),
		cancel: cancel,
	}
	if cc != nil {
		r.shards = newShardFeeds(r)
		return r, nil
	}
	r.ps = r.rdb.Subscribe(ctx, r.channel())
	r.done.Add(1)
	go r.listen(ctx)
	return r, nil
}

func parseRedisClusterURL(u string) (*redis.ClusterOptions, error) {
	co, err := redis.ParseClusterURL(u)
	if err != nil {
		return nil, fmt.Errorf("discovery: redis: parse --redis-url %q as a Redis Cluster seed: %w (want redis://host:port?addr=host2:port&addr=host3:port)", u, err)
	}
	return co, nil
}

func parseRedisURL(u string) (*redis.Options, error) {
	ro, err := redis.ParseURL(u)
	if err != nil {
		return nil, fmt.Errorf("discovery: redis: parse --redis-url %q: %w (want redis://host:port/db or unix:///path)", u, err)
	}
	return ro, nil
}

// clusterKey is the common prefix of a discovery cluster's keys. In cluster
// mode the length and ID are a hash tag: the tag ends at the first "}",
// which may fall inside the ID, but it is the same for every key of the
// cluster and never empty (it starts with the length), so all of them share
// one slot and one script can touch them together.
func (r *RedisStore) clusterKey(cid string) string {
	if r.cc != nil {
		return r.prefix + "{" + strconv.Itoa(len(cid)) + ":" + cid + "}"
	}
	return r.prefix + "c:" + strconv.Itoa(len(cid)) + ":" + cid
}

func (r *RedisStore) channel() string { return r.prefix + "events" }

// changeChannel is where a cluster's changes are published, and with which
// command: one global channel on one Redis; on Redis Cluster a sharded
// channel in the cluster's own slot, so a change travels only to the
// shard's nodes and the replicas that watch that cluster.
func (r *RedisStore) changeChannel(cid string) (channel, publish string) {
	if r.cc != nil {
		return r.clusterKey(cid) + ":ev", "SPUBLISH"
	}
	return r.channel(), "PUBLISH"
}

func unavailable(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
}

const luaHelpers = `
local function ns(x) return string.len(x) .. ':' .. x end
local function state(affKey, epKey, cid, aid, now)
  local out = {ns(cid), ns(aid), ns('u'), ns(redis.call('HGET', affKey, aid) or '')}
  for _, e in ipairs(redis.call('ZRANGEBYSCORE', epKey, '(' .. now, '+inf')) do out[#out+1] = ns(e) end
  return table.concat(out)
end
`

// Scripts. Times are unix milliseconds passed in by the caller (replicas
// are expected to run NTP, as any TTL-based service).

// KEYS: aff, exp, ep. ARGV: now, expires, maxAff, maxEp, cid, aid,
// channel, data, publish command, endpoints...  Returns 0 ok, 1 too many
// affiliates, 2 too many endpoints (data already stored; an update with
// data replaces others' endpoints rather than fail), 3 ok and the
// affiliate is new (the caller registers the cluster for GC).
var updateScript = redis.NewScript(luaHelpers + `
local now, exp = tonumber(ARGV[1]), tonumber(ARGV[2])
local aid, data = ARGV[6], ARGV[8]
local created = false
local changed = false
local result = 0
local cur = redis.call('ZSCORE', KEYS[2], aid)
if not cur then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 1 end
  redis.call('HSET', KEYS[1], aid, data)
  redis.call('ZADD', KEYS[2], exp, aid)
  redis.call('DEL', KEYS[3])
  created = true
  changed = true
  cur = exp
else
  cur = tonumber(cur)
  if data ~= '' then
    redis.call('HSET', KEYS[1], aid, data)
    redis.call('ZADD', KEYS[2], exp, aid)
    cur = exp
    changed = true
  end
end
for i = 10, #ARGV do
  local blob = ARGV[i]
  local s = redis.call('ZSCORE', KEYS[3], blob)
  if s then
    s = tonumber(s)
    if s < exp then
      if s <= now then changed = true end
      redis.call('ZADD', KEYS[3], exp, blob)
    end
  else
    if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then
      -- Full: only the affiliate's own update (with data) makes room, by
      -- replacing the endpoint expiring first that it does not carry.
      local victim = nil
      if data ~= '' then
        local mine = {}
        for j = 10, #ARGV do mine[ARGV[j]] = true end
        for _, e in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
          if not mine[e] then victim = e break end
        end
      end
      if not victim then
        result = 2
        break
      end
      redis.call('ZREM', KEYS[3], victim)
    end
    redis.call('ZADD', KEYS[3], exp, blob)
    changed = true
  end
end
if cur < exp then redis.call('ZADD', KEYS[2], exp, aid) end
local keep = exp - now + 120000
for k = 1, 3 do
  local p = redis.call('PTTL', KEYS[k])
  if p == -1 or (p >= 0 and p < keep) then redis.call('PEXPIRE', KEYS[k], keep) end
end
if changed then redis.call(ARGV[9], ARGV[7], state(KEYS[1], KEYS[3], ARGV[5], aid, ARGV[1])) end
if result == 0 and created then return 3 end
return result
`)

// KEYS: aff, exp, ep. ARGV: cid, aid, channel, publish command.
var deleteScript = redis.NewScript(luaHelpers + `
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call(ARGV[4], ARGV[3], ns(ARGV[1]) .. ns(ARGV[2]) .. ns('d'))
end
return 0
`)

// KEYS: aff, exp. ARGV: now, epPrefix, aid (optional). Returns a flat list:
// aid, data, n, n endpoint blobs, ... for live affiliates.
var listScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local ids
if ARGV[3] then
  local s = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if not s or tonumber(s) <= now then return {} end
  ids = {ARGV[3]}
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
end
local out = {}
for _, aid in ipairs(ids) do
  local data = redis.call('HGET', KEYS[1], aid) or ''
  local eps = redis.call('ZRANGEBYSCORE', ARGV[2] .. aid, '(' .. ARGV[1], '+inf')
  out[#out+1] = aid
  out[#out+1] = data
  out[#out+1] = #eps
  for _, e in ipairs(eps) do out[#out+1] = e end
end
return out
`)

// KEYS: aff, exp. ARGV: now, cid, channel, epPrefix, publish command.
// Returns the number of affiliates left.
var gcScript = redis.NewScript(luaHelpers + `
local now = tonumber(ARGV[1])
for _, aid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  redis.call('ZREM', KEYS[2], aid)
  redis.call('HDEL', KEYS[1], aid)
  redis.call('DEL', ARGV[4] .. aid)
  redis.call(ARGV[5], ARGV[3], ns(ARGV[2]) .. ns(aid) .. ns('d'))
end
for _, aid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('ZREMRANGEBYSCORE', ARGV[4] .. aid, '-inf', ARGV[1]) > 0 then
    redis.call(ARGV[5], ARGV[3], state(KEYS[1], ARGV[4] .. aid, ARGV[2], aid, ARGV[1]))
  end
end
return redis.call('ZCARD', KEYS[2])
`)

func (r *RedisStore) nowMS() int64 { return r.now().UnixMilli() }

// Update implements Store.
func (r *RedisStore) Update(ctx context.Context, u Update) error {
	ck := r.clusterKey(u.ClusterID)
	now := r.nowMS()
	ch, pub := r.changeChannel(u.ClusterID)
	args := make([]any, 0, 9+len(u.Endpoints))
	args = append(args, now, now+u.TTL.Milliseconds(), r.limits.AffiliatesPerCluster, r.limits.EndpointsPerAffiliate,
		u.ClusterID, u.AffiliateID, ch, u.Data, pub)
	for _, ep := range u.Endpoints {
		args = append(args, ep)
	}
	v, err := r.write(ctx, updateScript, []string{ck + ":a", ck + ":x", ck + ":e:" + u.AffiliateID}, args...)
	if err != nil {
		return err
	}
	res, _ := v.(int64)
	switch res {
	case 1:
		return ErrTooManyAffiliates
	case 2:
		return ErrTooManyEndpoints
	case 3:
		// A new affiliate: make sure GC walks its cluster. Outside the
		// script, since on Redis Cluster the registry lives in another slot
		// (see GC for the race with a cluster being unregistered).
		if err := r.rdb.SAdd(ctx, r.prefix+"clusters", u.ClusterID).Err(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// write runs a mutating script. With WaitReplicas set it runs on the
// master that owns the keys, over one connection, followed by WAIT on that
// same connection: the write is acknowledged only once enough replicas
// hold it, so a failover cannot lose it.
func (r *RedisStore) write(ctx context.Context, sc *redis.Script, keys []string, args ...any) (any, error) {
	if r.wait == 0 {
		v, err := sc.Run(ctx, r.rdb, keys, args...).Result()
		return v, unavailable(err)
	}
	var node *redis.Client
	if r.cc != nil {
		n, err := r.cc.MasterForKey(ctx, keys[0])
		if err != nil {
			r.cc.ReloadState(ctx)
			return nil, unavailable(err)
		}
		node = n
	} else {
		node = r.rdb.(*redis.Client)
	}
	conn := node.Conn()
	defer conn.Close() //nolint:errcheck // back to the pool
	v, err := sc.Run(ctx, conn, keys, args...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		// The master may have died or handed its slots over (MOVED,
		// CLUSTERDOWN, connection refused): look the slot map up again
		// before the client retries.
		if r.cc != nil {
			r.cc.ReloadState(ctx)
		}
		return nil, unavailable(err)
	}
	addr := node.Options().Addr
	if until, ok := r.degraded.Load(addr); ok && time.Now().Before(until.(time.Time)) {
		return v, nil
	}
	n, err := conn.Do(ctx, "WAIT", r.wait, 1000).Int()
	if err != nil {
		return nil, unavailable(err)
	}
	if n >= r.wait {
		return v, nil
	}
	// No replica confirmed. If the master has none at all (its replica was
	// promoted after a failover and nothing rejoined yet), there is nothing
	// to wait for: refusing would only take the shard down. Acknowledge,
	// and stop waiting on it for a few seconds.
	if have, err := connectedReplicas(ctx, conn); err == nil && have == 0 {
		r.degraded.Store(addr, time.Now().Add(5*time.Second))
		r.log.Warn("discovery: redis: master has no replica: writes are acknowledged without one until a replica rejoins", "master", addr)
		return v, nil
	}
	return nil, fmt.Errorf("%w: redis: write reached %d of %d replicas within 1s", ErrUnavailable, n, r.wait)
}

// connectedReplicas asks a master how many replicas it has (ROLE).
func connectedReplicas(ctx context.Context, conn *redis.Conn) (int, error) {
	v, err := conn.Do(ctx, "ROLE").Slice()
	if err != nil {
		return 0, err
	}
	if len(v) < 3 {
		return 0, fmt.Errorf("ROLE reply of %d elements", len(v))
	}
	reps, _ := v[2].([]any)
	return len(reps), nil
}

// Delete implements Store.
func (r *RedisStore) Delete(ctx context.Context, clusterID, affiliateID string) error {
	ck := r.clusterKey(clusterID)
	ch, pub := r.changeChannel(clusterID)
	_, err := r.write(ctx, deleteScript, []string{ck + ":a", ck + ":x", ck + ":e:" + affiliateID}, clusterID, affiliateID, ch, pub)
	return err
}

func parseList(v any) ([]*serverpb.Affiliate, error) {
	flat, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("discovery: redis: list reply is %T", v)
	}
	out := make([]*serverpb.Affiliate, 0, len(flat)/3)
	for i := 0; i+2 < len(flat); {
		id, _ := flat[i].(string)
		data, _ := flat[i+1].(string)
		n, _ := flat[i+2].(int64)
		i += 3
		a := &serverpb.Affiliate{Id: id}
		if data != "" {
			a.Data = []byte(data)
		}
		for j := int64(0); j < n && i < len(flat); j++ {
			ep, _ := flat[i].(string)
			a.Endpoints = append(a.Endpoints, []byte(ep))
			i++
		}
		out = append(out, a)
	}
	return out, nil
}

// List implements Store.
func (r *RedisStore) List(ctx context.Context, clusterID string) ([]*serverpb.Affiliate, error) {
	ck := r.clusterKey(clusterID)
	v, err := listScript.Run(ctx, r.rdb, []string{ck + ":a", ck + ":x"}, r.nowMS(), ck+":e:").Result()
	if err != nil {
		if r.cc != nil {
			r.cc.ReloadState(ctx) // a failover may have moved the slot
		}
		return nil, unavailable(err)
	}
	return parseList(v)
}

// Watch implements Store.
func (r *RedisStore) Watch(ctx context.Context, clusterID string) ([]*serverpb.Affiliate, *Subscription, error) {
	var sub *Subscription
	sub = newSubscription(2*r.limits.AffiliatesPerCluster+64, func() {
		r.mu.Lock()
		delete(r.subs[clusterID], sub)
		last := len(r.subs[clusterID]) == 0
		if last {
			delete(r.subs, clusterID)
		}
		r.mu.Unlock()
		if last && r.shards != nil {
			r.shards.unsubscribe(clusterID)
		}
	})
	// Subscribe before reading the snapshot so no change falls in between.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if r.subs[clusterID] == nil {
		r.subs[clusterID] = make(map[*Subscription]struct{})
	}
	r.subs[clusterID][sub] = struct{}{}
	r.mu.Unlock()
	if r.shards != nil {
		if err := r.shards.subscribe(ctx, clusterID); err != nil {
			sub.Close()
			return nil, nil, err
		}
	}
	snap, err := r.List(ctx, clusterID)
	if err != nil {
		sub.Close()
		return nil, nil, err
	}
	return snap, sub, nil
}

// GC implements Store. Every replica may run it: the script is idempotent.
func (r *RedisStore) GC(ctx context.Context) error {
	if r.gcLock > 0 {
		ok, err := r.rdb.SetNX(ctx, r.prefix+"gc-lock", "1", r.gcLock).Result()
		if err != nil {
			return unavailable(err)
		}
		if !ok {
			return nil // another replica collected recently
		}
	}
	ids, err := r.rdb.SMembers(ctx, r.prefix+"clusters").Result()
	if err != nil {
		return unavailable(err)
	}
	now := r.nowMS()
	for _, cid := range ids {
		ck := r.clusterKey(cid)
		ch, pub := r.changeChannel(cid)
		left, err := gcScript.Run(ctx, r.rdb, []string{ck + ":a", ck + ":x"}, now, cid, ch, ck+":e:", pub).Int()
		if err != nil {
			return unavailable(err)
		}
		if left > 0 {
			continue
		}
		// Unregister the empty cluster, then look again: an affiliate
		// created in between registered the cluster before or after our
		// SREM; in the first case this check sees it and puts it back.
		if err := r.rdb.SRem(ctx, r.prefix+"clusters", cid).Err(); err != nil {
			return unavailable(err)
		}
		if n, err := r.rdb.ZCard(ctx, ck+":x").Result(); err != nil {
			return unavailable(err)
		} else if n > 0 {
			if err := r.rdb.SAdd(ctx, r.prefix+"clusters", cid).Err(); err != nil {
				return unavailable(err)
			}
		}
	}
	return nil
}

// Stats implements Store.
func (r *RedisStore) Stats(ctx context.Context) (Stats, error) {
	ids, err := r.rdb.SMembers(ctx, r.prefix+"clusters").Result()
	if err != nil {
		return Stats{}, unavailable(err)
	}
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, cid := range ids {
		cmds[i] = pipe.ZCard(ctx, r.clusterKey(cid)+":x")
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return Stats{}, unavailable(err)
		}
	}
	st := Stats{Clusters: len(ids)}
	for _, c := range cmds {
		st.Affiliates += int(c.Val())
	}
	r.mu.Lock()
	for _, m := range r.subs {
		st.Watchers += len(m)
	}
	r.mu.Unlock()
	return st, nil
}

// Ping reports whether Redis answers.
func (r *RedisStore) Ping(ctx context.Context) error { return unavailable(r.rdb.Ping(ctx).Err()) }

// Close implements Store: watchers end cleanly, the connection closes.
func (r *RedisStore) Close() error {
	r.failAll(ErrClosed)
	r.cancel()
	r.mu.Lock()
	if r.ps != nil {
		r.ps.Close() //nolint:errcheck // unblocks listen's read
	}
	r.mu.Unlock()
	if r.shards != nil {
		r.shards.close()
	}
	r.done.Wait()
	return r.rdb.Close()
}

func (r *RedisStore) failAll(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if errors.Is(err, ErrClosed) {
		r.closed = true
	}
	for _, m := range r.subs {
		for s := range m {
			s.fail(err)
		}
	}
}

// listen follows the change channel. If the subscription breaks, changes
// may have been missed, so every local watch ends with Unavailable and its
// client resyncs from a fresh snapshot once Redis is back.
func (r *RedisStore) listen(ctx context.Context) {
	defer r.done.Done()
	r.mu.Lock()
	ps := r.ps
	r.mu.Unlock()
	pause := 50 * time.Millisecond
	pinged := false
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, 15*time.Second)
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			// Quiet channel: make sure the connection is alive, since a
			// silent partition would otherwise hide missed changes.
			if !pinged {
				pinged = true
				err = ps.Ping(ctx)
			} else {
				err = errors.New("no answer to ping within 15s")
				// Start over on a fresh connection.
				r.mu.Lock()
				ps.Close() //nolint:errcheck
				ps = r.rdb.Subscribe(ctx, r.channel())
				r.ps = ps
				r.mu.Unlock()
				pinged = false
			}
			if err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("discovery: redis: change feed broken, ending watches", "err", err)
			r.failAll(fmt.Errorf("%w: redis change feed: %v", ErrUnavailable, err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, 2*time.Second)
			continue
		}
		pause, pinged = 50*time.Millisecond, false
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		r.deliver(m.Payload)
	}
}

// deliver hands one change message to this replica's watchers.
func (r *RedisStore) deliver(payload string) {
	cid, aid, state, ok := parseChange(payload)
	if !ok {
		r.log.Warn("discovery: redis: malformed change message ignored")
		return
	}
	ch := newChange(aid, state)
	r.mu.Lock()
	for sub := range r.subs[cid] {
		sub.pushChange(ch)
	}
	r.mu.Unlock()
}

// failCluster ends the local watches of one cluster (their feed broke).
func (r *RedisStore) failCluster(cid string, err error) {
	r.mu.Lock()
	for sub := range r.subs[cid] {
		sub.fail(err)
	}
	r.mu.Unlock()
}

// parseChange decodes a change message; state is nil for a deletion.
func parseChange(p string) (cid, aid string, state *serverpb.Affiliate, ok bool) {
	var fields []string
	for len(p) > 0 {
		i := strings.IndexByte(p, ':')
		if i <= 0 {
			return "", "", nil, false
		}
		n, err := strconv.Atoi(p[:i])
		if err != nil || n < 0 || n > len(p)-i-1 {
			return "", "", nil, false
		}
		fields = append(fields, p[i+1:i+1+n])
		p = p[i+1+n:]
	}
	if len(fields) < 3 {
		return "", "", nil, false
	}
	cid, aid = fields[0], fields[1]
	switch fields[2] {
	case "d":
		return cid, aid, nil, len(fields) == 3
	case "u":
		if len(fields) < 4 {
			return "", "", nil, false
		}
		state = &serverpb.Affiliate{Id: aid}
		if fields[3] != "" {
			state.Data = []byte(fields[3])
		}
		for _, e := range fields[4:] {
			state.Endpoints = append(state.Endpoints, []byte(e))
		}
		return cid, aid, state, true
	}
	return "", "", nil, false
}
