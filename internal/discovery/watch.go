package discovery

import (
	"context"
	"errors"
	"sync"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxBatchBytes bounds one watch message that carries several queued
// changes: far below gRPC's 4 MB default receive limit, large enough that a
// watcher catching up after a burst (a 1,000-member cluster starting) gets
// tens of messages instead of a thousand. At N = 1,000 members, 16 KB
// converged as fast as 64 KB with a third less peak memory (673 against
// 998 MiB in one run each): fewer bytes are encoded and queued at once.
const maxBatchBytes = 16 << 10

// serviceDesc is the Cluster service with its Watch handler replaced by
// one that receives the request on the sender goroutine (see serveWatch);
// the generated one receives it on the stream's own goroutine, and that
// alone grows the goroutine's stack to 8 KB for the life of the watch.
func serviceDesc() *grpc.ServiceDesc {
	d := serverpb.Cluster_ServiceDesc
	d.Streams = []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(*Server).serveWatch(stream, nil)
		},
	}}
	return &d
}

// Watch implements serverpb.ClusterServer: a full snapshot first (even when
// empty), then the changes; each message holds one affiliate, or several
// when changes queued up while the previous message was being sent.
func (s *Server) Watch(req *serverpb.WatchRequest, stream serverpb.Cluster_WatchServer) error {
	return s.serveWatch(stream, req)
}

// serveWatch runs one watch. gRPC gives every stream a goroutine that must
// live as long as the stream; here it only waits. Receiving the request,
// admission, the store call, the snapshot and every send run on a
// short-lived sender goroutine, started when there is something to send.
// An idle watch is then a goroutine parked a few frames below gRPC's
// handler whose stack never grew past 4 KB, instead of one that receiving
// and sending grew to 8 KB and that keeps it for the stream's life (the
// stack was two thirds of an idle watcher's memory).
func (s *Server) serveWatch(stream grpc.ServerStream, req *serverpb.WatchRequest) error {
	w := &watchStream{srv: s, stream: stream, done: make(chan struct{}), sending: true}
	go w.open(req)
	select {
	case <-w.done:
	case <-stream.Context().Done():
		w.finish(status.FromContextError(stream.Context().Err()).Err())
		<-w.done // a sender still in SendMsg returns: the stream is done
	}
	return w.close()
}

// watchStream is one open Watch.
type watchStream struct {
	srv    *Server
	stream grpc.ServerStream

	mu      sync.Mutex
	slot    bool          // a per-address watch slot is held (for clientIP)
	sub     *Subscription // nil until the store answered
	sending bool          // a sender goroutine runs
	dirty   bool          // changes were announced since the sender last looked
	ended   bool
	err     error         // why the watch ended; nil: cleanly (shutdown)
	done    chan struct{} // closed once ended and no sender runs
}

// open receives the request (unless the caller had it), admits it,
// subscribes, sends the snapshot, then sends what queued meanwhile.
func (w *watchStream) open(req *serverpb.WatchRequest) {
	defer w.recover()
	ctx := w.stream.Context()
	sub, err := w.subscribe(ctx, req)
	if err != nil {
		w.finish(err)
		w.drain()
		return
	}
	w.mu.Lock()
	w.sub = sub
	w.dirty = true // whatever queued before notify is taken by drain
	w.mu.Unlock()
	sub.notify(w.wake)
	w.drain()
}

// subscribe does what the generated handler and the interceptor would
// have done on the stream's goroutine, opens the store's watch and sends
// its snapshot.
func (w *watchStream) subscribe(ctx context.Context, req *serverpb.WatchRequest) (*Subscription, error) {
	s := w.srv
	if req == nil {
		req = new(serverpb.WatchRequest)
		if err := w.stream.RecvMsg(req); err != nil {
			return nil, err
		}
	}
	if err := s.admit(ctx, "Watch"); err != nil {
		return nil, err
	}
	if err := s.checkCluster(req.ClusterId); err != nil {
		return nil, err
	}
	ip := s.clientIP(ctx)
	if err := s.watchers.acquire(ip); err != nil {
		s.metrics.rejections.WithLabelValues("watchers_per_address").Inc()
		return nil, err
	}
	w.mu.Lock()
	w.slot = true
	w.mu.Unlock()
	snap, sub, err := s.store.Watch(ctx, req.ClusterId)
	if err != nil {
		return nil, s.storeError(err)
	}
	w.mu.Lock()
	w.sub = sub // closed by close() from here on, whatever happens
	w.mu.Unlock()
	if err := w.stream.SendMsg(&serverpb.WatchResponse{Affiliates: snap}); err != nil {
		return nil, err
	}
	return sub, nil
}

// recover turns a panic on a sender goroutine into the end of its watch,
// as the interceptor does for handlers.
func (w *watchStream) recover() {
	if r := recover(); r != nil {
		w.srv.log.Error("discovery: handler panic", "method", "Watch", "panic", r)
		w.mu.Lock()
		if !w.ended {
			w.ended, w.err = true, status.Error(codes.Internal, "internal error in Watch")
		}
		w.sending = false
		w.closeDone()
		w.mu.Unlock()
	}
}

// wake is the subscription's notification: start a sender unless one runs.
func (w *watchStream) wake() {
	w.mu.Lock()
	w.dirty = true
	start := !w.sending && !w.ended
	w.sending = w.sending || start
	w.mu.Unlock()
	if start {
		go func() {
			defer w.recover()
			w.drain()
		}()
	}
}

// drain sends what is queued until nothing is, then the sender ends.
func (w *watchStream) drain() {
	for {
		w.mu.Lock()
		if w.ended || !w.dirty {
			w.sending = false
			if w.ended {
				w.closeDone()
			}
			w.mu.Unlock()
			return
		}
		w.dirty = false
		sub := w.sub
		w.mu.Unlock()
		chs, err := sub.take()
		switch {
		case errors.Is(err, ErrLostUpdates):
			w.srv.metrics.rejections.WithLabelValues("watch_backlog").Inc()
			w.finish(status.Error(codes.Aborted, "lost update: watcher too slow, reconnect to resync"))
		case errors.Is(err, ErrClosed):
			w.finish(nil) // server shutting down: end cleanly, like the reference
		case errors.Is(err, ErrUnavailable):
			w.finish(status.Errorf(codes.Unavailable, "discovery store unavailable, reconnect to resync: %v", err))
		case err != nil:
			w.finish(status.Error(codes.Internal, "discovery watch failed"))
		}
		msgs := messages(chs, w.srv.sharedEncoding.Load())
		for i, m := range msgs {
			if err := w.stream.SendMsg(m); err != nil {
				w.finish(err)
				break
			}
			w.srv.metrics.watchSent.Add(1)
			msgs[i] = nil
		}
	}
}

// finish ends the watch with err (the first reason wins).
func (w *watchStream) finish(err error) {
	w.mu.Lock()
	if !w.ended {
		w.ended, w.err = true, err
		if !w.sending {
			w.closeDone()
		}
	}
	w.mu.Unlock()
}

// closeDone lets the handler return; w.mu is held and no sender runs, so
// nothing touches the stream after the handler has returned.
func (w *watchStream) closeDone() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// close cleans up after the handler's wait; kept out of line so its
// locals do not join the waiting frame. The subscription is closed
// without w.mu held: closing takes the store's cluster lock, under which
// the store calls wake, which takes w.mu.
//
//go:noinline
func (w *watchStream) close() error {
	w.mu.Lock()
	sub, slot, err := w.sub, w.slot, w.err
	w.mu.Unlock()
	if sub != nil {
		sub.Close()
	}
	if slot {
		// The address is found again rather than kept: an idle watch's
		// memory is what this file is about.
		w.srv.watchers.release(w.srv.clientIP(w.stream.Context()))
	}
	return err
}

// messages turns queued changes into the messages to send. Runs of one
// kind (updates, deletions) are merged into messages of at most
// maxBatchBytes: clients apply every affiliate of a message (the snapshot
// is one such message), so a backlog costs a few sends instead of one per
// affiliate. With shared set (the server's codec is installed), a change
// sent alone is the message every watcher of the cluster sends for it,
// encoded once (change.message).
func messages(chs []*change, shared bool) []any {
	out := make([]any, 0, len(chs))
	for i := 0; i < len(chs); {
		first := chs[i]
		j := i + 1
		if j < len(chs) {
			size := proto.Size(first.affiliate())
			for ; j < len(chs) && (chs[j].aff == nil) == (first.aff == nil); j++ {
				n := proto.Size(chs[j].affiliate())
				if size+n > maxBatchBytes {
					break
				}
				size += n
			}
		}
		if j == i+1 && shared {
			out = append(out, first.message())
		} else {
			m := first.response()
			for _, ch := range chs[i+1 : j] {
				m.Affiliates = append(m.Affiliates, ch.affiliate())
			}
			out = append(out, m)
		}
		i = j
	}
	return out
}

// preEncoded is a message already in wire form.
type preEncoded []byte

// codec is gRPC's proto codec, except that it sends a preEncoded message as
// it is: the change every watcher of a cluster sends is encoded once, not
// once per watcher. The bytes are never written to after encoding, so
// sharing them between streams (and gRPC's free of them, a no-op for a
// mem.SliceBuffer) is safe.
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2(grpcproto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.CodecV2.Marshal(v)
}
