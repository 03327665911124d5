package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// shardFeeds follows the sharded change channels of the clusters this
// replica has watchers for, on Redis Cluster. A sharded channel lives on
// the master that owns its slot, so there is one pub/sub connection per
// master in use, each subscribed to that master's channels. When a feed
// breaks (its master died, a slot moved), changes may have been missed:
// the watches of its clusters end with Unavailable and clients resync,
// subscribing again on whichever master owns the slot by then.
type shardFeeds struct {
	r     *RedisStore
	mu    sync.Mutex
	feeds map[string]*shardFeed // by master address
	byCID map[string]*shardFeed
}

type shardFeed struct {
	addr    string
	ps      *redis.PubSub
	cancel  context.CancelFunc
	chans   map[string]string        // channel -> cluster ID
	confirm map[string]chan struct{} // channel -> closed once Redis confirmed the subscription
	unsubs  map[string]int           // our own pending SUNSUBSCRIBEs, per channel
}

func newShardFeeds(r *RedisStore) *shardFeeds {
	return &shardFeeds{r: r, feeds: make(map[string]*shardFeed), byCID: make(map[string]*shardFeed)}
}

// subscribe makes sure cid's changes reach this replica, and returns once
// Redis has confirmed it, so a snapshot read afterwards misses nothing.
func (f *shardFeeds) subscribe(ctx context.Context, cid string) error {
	ch, _ := f.r.changeChannel(cid)
	f.mu.Lock()
	if feed := f.byCID[cid]; feed != nil {
		c := feed.confirm[ch]
		f.mu.Unlock()
		return waitConfirm(ctx, c)
	}
	f.mu.Unlock()
	node, err := f.r.cc.MasterForKey(ctx, ch)
	if err != nil {
		return unavailable(err)
	}
	addr := node.Options().Addr
	f.mu.Lock()
	if feed := f.byCID[cid]; feed != nil { // subscribed meanwhile
		c := feed.confirm[ch]
		f.mu.Unlock()
		return waitConfirm(ctx, c)
	}
	feed := f.feeds[addr]
	if feed == nil {
		lctx, cancel := context.WithCancel(context.Background())
		feed = &shardFeed{addr: addr, ps: node.SSubscribe(lctx), cancel: cancel,
			chans: make(map[string]string), confirm: make(map[string]chan struct{}), unsubs: make(map[string]int)}
		f.feeds[addr] = feed
		f.r.done.Add(1)
		go f.listen(lctx, feed)
	}
	c := make(chan struct{})
	feed.chans[ch], feed.confirm[ch], f.byCID[cid] = cid, c, feed
	err = feed.ps.SSubscribe(ctx, ch)
	f.mu.Unlock()
	if err != nil {
		f.drop(feed, err)
		return unavailable(err)
	}
	return waitConfirm(ctx, c)
}

func waitConfirm(ctx context.Context, c chan struct{}) error {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%w: redis: sharded subscription not confirmed within 5s", ErrUnavailable)
	}
}

// unsubscribe drops cid's channel once no local watcher needs it.
func (f *shardFeeds) unsubscribe(cid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r.mu.Lock()
	still := len(f.r.subs[cid]) > 0
	f.r.mu.Unlock()
	feed := f.byCID[cid]
	if still || feed == nil {
		return
	}
	ch, _ := f.r.changeChannel(cid)
	delete(f.byCID, cid)
	delete(feed.chans, ch)
	delete(feed.confirm, ch)
	if len(feed.chans) == 0 {
		delete(f.feeds, feed.addr)
		feed.cancel()
		feed.ps.Close() //nolint:errcheck
		return
	}
	feed.unsubs[ch]++
	_ = feed.ps.SUnsubscribe(context.Background(), ch) // a failure breaks the feed, which listen handles
}

// drop retires a broken feed and ends the watches that relied on it.
func (f *shardFeeds) drop(feed *shardFeed, cause error) {
	f.mu.Lock()
	if f.feeds[feed.addr] == feed {
		delete(f.feeds, feed.addr)
	}
	var cids []string
	for _, cid := range feed.chans {
		if f.byCID[cid] == feed {
			delete(f.byCID, cid)
		}
		cids = append(cids, cid)
	}
	feed.chans = map[string]string{}
	f.mu.Unlock()
	feed.cancel()
	feed.ps.Close() //nolint:errcheck
	if len(cids) > 0 {
		f.r.log.Warn("discovery: redis cluster: change feed broken, ending watches", "master", feed.addr, "clusters", len(cids), "err", cause)
	}
	for _, cid := range cids {
		f.r.failCluster(cid, fmt.Errorf("%w: redis change feed from %s: %v", ErrUnavailable, feed.addr, cause))
	}
	// The slot map may be stale (a failover): refresh it before clients
	// come back.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	f.r.cc.ReloadState(ctx)
	cancel()
}

func (f *shardFeeds) listen(ctx context.Context, feed *shardFeed) {
	defer f.r.done.Done()
	pinged := false
	for ctx.Err() == nil {
		msg, err := feed.ps.ReceiveTimeout(ctx, 15*time.Second)
		if ctx.Err() != nil {
			return
		}
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			if pinged {
				err = errors.New("no answer to ping within 15s")
			} else {
				pinged = true
				err = feed.ps.Ping(ctx)
			}
		}
		if err != nil {
			f.drop(feed, err)
			return
		}
		switch m := msg.(type) {
		case *redis.Message:
			pinged = false
			f.r.deliver(m.Payload)
		case *redis.Pong:
			pinged = false
		case *redis.Subscription:
			f.mu.Lock()
			switch m.Kind {
			case "ssubscribe":
				if c := feed.confirm[m.Channel]; c != nil {
					select {
					case <-c:
					default:
						close(c)
					}
				}
				f.mu.Unlock()
			case "sunsubscribe":
				if feed.unsubs[m.Channel] > 0 {
					feed.unsubs[m.Channel]--
					f.mu.Unlock()
					continue
				}
				// Redis dropped us: the slot moved to another master.
				cid, ok := feed.chans[m.Channel]
				if ok {
					delete(feed.chans, m.Channel)
					delete(feed.confirm, m.Channel)
					if f.byCID[cid] == feed {
						delete(f.byCID, cid)
					}
				}
				f.mu.Unlock()
				if ok {
					f.r.failCluster(cid, fmt.Errorf("%w: redis cluster: slot of %q moved", ErrUnavailable, cid))
				}
			default:
				f.mu.Unlock()
			}
		}
	}
}

func (f *shardFeeds) close() {
	f.mu.Lock()
	feeds := make([]*shardFeed, 0, len(f.feeds))
	for _, feed := range f.feeds {
		feeds = append(feeds, feed)
	}
	f.feeds = map[string]*shardFeed{}
	f.byCID = map[string]*shardFeed{}
	f.mu.Unlock()
	for _, feed := range feeds {
		feed.cancel()
		feed.ps.Close() //nolint:errcheck
	}
}
