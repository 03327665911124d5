package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerOptions configure the gRPC discovery service.
type ServerOptions struct {
	Store  Store
	Limits Limits
	// TrustedProxies are the peers whose X-Real-IP / X-Forwarded-For headers
	// are believed. Empty: headers are ignored, the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// AllowedClusters, when non-empty, is the admission list: other cluster
	// IDs get PermissionDenied.
	AllowedClusters []string
	// RateLimit per client IP (requests per second, burst). Zero RPS: the
	// reference's 15/s, burst 60. Negative RPS: no limit.
	RateLimitRPS   float64
	RateLimitBurst int
	// RedirectEndpoint, if set, is sent in every Hello (host:port).
	RedirectEndpoint string
	// WatchersPerAddress bounds open watches per client IP (0 or less: no
	// limit).
	WatchersPerAddress int
	Logger             *slog.Logger
	Metrics            *Metrics

	conns *connTracker // set by Start: refuses RPCs on over-limit connections
}

// Server implements the sidero.discovery.server.Cluster service.
type Server struct {
	serverpb.UnimplementedClusterServer

	store    Store
	limits   Limits
	trusted  []netip.Prefix
	allowed  map[string]struct{}
	redirect string
	log      *slog.Logger
	metrics  *Metrics
	limiter  *ipLimiter
	watchers *watcherCounter
	conns    *connTracker
	// sharedEncoding: GRPCOptions installed the codec that passes
	// pre-encoded watch messages through (see change.message).
	sharedEncoding atomic.Bool
}

// NewServer checks opts and builds the service.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("discovery: server: no store configured")
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil, opts.Store)
	}
	s := &Server{
		store:    opts.Store,
		limits:   opts.Limits,
		trusted:  opts.TrustedProxies,
		redirect: opts.RedirectEndpoint,
		log:      opts.Logger,
		metrics:  opts.Metrics,
		conns:    opts.conns,
		watchers: &watcherCounter{max: opts.WatchersPerAddress, n: make(map[netip.Addr]int)},
	}
	if len(opts.AllowedClusters) > 0 {
		s.allowed = make(map[string]struct{}, len(opts.AllowedClusters))
		for _, id := range opts.AllowedClusters {
			s.allowed[id] = struct{}{}
		}
	}
	rps, burst := opts.RateLimitRPS, opts.RateLimitBurst
	if rps == 0 {
		rps, burst = 15, 60
	}
	if burst <= 0 {
		burst = int(rps * 4)
	}
	if rps > 0 {
		s.limiter = newIPLimiter(rate.Limit(rps), burst)
	}
	return s, nil
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { g.RegisterService(serviceDesc(), s) }

// GRPCOptions returns the interceptors that meter, rate-limit and recover
// every call, and the codec that sends a change encoded once to all the
// watchers of its cluster; pass them to grpc.NewServer.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	s.sharedEncoding.Store(true)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.ForceServerCodecV2(newCodec()),
	}
}

// ExpireLimiter drops rate-limit state of idle clients; call it periodically.
func (s *Server) ExpireLimiter() {
	if s.limiter != nil {
		s.limiter.cleanup()
	}
}

func shortMethod(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

func (s *Server) admit(ctx context.Context, method string) error {
	if s.conns != nil {
		if err := s.conns.refuseOverLimit(ctx); err != nil {
			s.metrics.rejections.WithLabelValues("connections_per_address").Inc()
			return err
		}
	}
	if s.limiter == nil {
		return nil
	}
	ip := s.clientIP(ctx)
	if err := s.limiter.wait(ctx, ip); err != nil {
		s.metrics.rejections.WithLabelValues("rate_limit").Inc()
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.ResourceExhausted, "rate limit of %g requests/s (burst %d) per client address exceeded for %s: retry later", float64(s.limiter.limit), s.limiter.burst, ip)
	}
	return nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	method := shortMethod(info.FullMethod)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("discovery: handler panic", "method", method, "panic", r)
			err = status.Errorf(codes.Internal, "internal error in %s", method)
		}
		s.metrics.observe(method, status.Code(err), time.Since(start))
	}()
	if err := s.admit(ctx, method); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	method := shortMethod(info.FullMethod)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("discovery: handler panic", "method", method, "panic", r)
			err = status.Errorf(codes.Internal, "internal error in %s", method)
		}
		// Streams are metered at their end; latency is how long they lived.
		s.metrics.observe(method, status.Code(err), time.Since(start))
	}()
	// Streams (Watch) admit themselves, off the stream's goroutine (see
	// serveWatch).
	return handler(srv, ss)
}

// invalid counts a rejection and builds its status.
func (s *Server) invalid(reason string, code codes.Code, err error) error {
	s.metrics.rejections.WithLabelValues(reason).Inc()
	return status.Error(code, err.Error())
}

func (s *Server) checkCluster(clusterID string) error {
	if err := s.limits.validateIDs(clusterID, "", false); err != nil {
		return s.invalid("invalid_cluster_id", codes.InvalidArgument, err)
	}
	if s.allowed != nil {
		if _, ok := s.allowed[clusterID]; !ok {
			return s.invalid("cluster_not_admitted", codes.PermissionDenied,
				fmt.Errorf("cluster ID %q is not admitted by this discovery service: add it to --allowed-clusters", clusterID))
		}
	}
	return nil
}

// storeError maps store failures to status codes.
func (s *Server) storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrTooManyAffiliates):
		return s.invalid("affiliates_per_cluster", codes.ResourceExhausted,
			fmt.Errorf("cluster already has the maximum of %d affiliates", s.limits.AffiliatesPerCluster))
	case errors.Is(err, ErrTooManyEndpoints):
		return s.invalid("endpoints_per_affiliate", codes.ResourceExhausted,
			fmt.Errorf("affiliate already has the maximum of %d endpoints; endpoints reported for it by others are refused until some expire, while its own updates replace the oldest", s.limits.EndpointsPerAffiliate))
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
		return status.Errorf(codes.Unavailable, "discovery store unavailable: %v", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	s.log.Error("discovery: store", "err", err)
	return status.Error(codes.Internal, "discovery store error")
}

var versionRe = regexp.MustCompile(`^v(\d+)\.(\d+)\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// versionLabel reduces a client version to vX.Y(-pre) for metrics, so the
// label set stays small.
func versionLabel(v string) string {
	m := versionRe.FindStringSubmatch(v)
	if m == nil {
		return "unknown"
	}
	out := "v" + m[1] + "." + m[2]
	if m[3] != "" {
		out += "-pre"
	}
	return out
}

// Hello implements serverpb.ClusterServer.
func (s *Server) Hello(ctx context.Context, req *serverpb.HelloRequest) (*serverpb.HelloResponse, error) {
	if err := s.checkCluster(req.ClusterId); err != nil {
		return nil, err
	}
	s.metrics.hellos.WithLabelValues(versionLabel(req.ClientVersion)).Inc()
	resp := &serverpb.HelloResponse{}
	if ip := s.clientIP(ctx); ip.IsValid() {
		resp.ClientIp, _ = ip.MarshalBinary()
	}
	if s.redirect != "" {
		resp.Redirect = &serverpb.RedirectMessage{Endpoint: s.redirect}
	}
	return resp, nil
}

// AffiliateUpdate implements serverpb.ClusterServer.
func (s *Server) AffiliateUpdate(ctx context.Context, req *serverpb.AffiliateUpdateRequest) (*serverpb.AffiliateUpdateResponse, error) {
	if err := s.checkCluster(req.ClusterId); err != nil {
		return nil, err
	}
	u := Update{
		ClusterID:   req.ClusterId,
		AffiliateID: req.AffiliateId,
		Data:        req.AffiliateData,
		Endpoints:   req.AffiliateEndpoints,
		TTL:         req.Ttl.AsDuration(),
	}
	if err := req.Ttl.CheckValid(); req.Ttl != nil && err != nil {
		return nil, s.invalid("invalid_ttl", codes.InvalidArgument, fmt.Errorf("ttl: %w", err))
	}
	if err := s.limits.validateUpdate(u); err != nil {
		return nil, s.invalid(updateReason(u, s.limits), codes.InvalidArgument, err)
	}
	if err := s.store.Update(ctx, u); err != nil {
		return nil, s.storeError(err)
	}
	return &serverpb.AffiliateUpdateResponse{}, nil
}

func updateReason(u Update, l Limits) string {
	switch {
	case u.AffiliateID == "" || len(u.AffiliateID) > l.AffiliateIDMax:
		return "invalid_affiliate_id"
	case len(u.Data) > l.AffiliateDataMax:
		return "affiliate_data_size"
	case u.TTL > l.TTLMax || u.TTL < 0:
		return "ttl"
	}
	return "endpoint_size"
}

// AffiliateDelete implements serverpb.ClusterServer.
func (s *Server) AffiliateDelete(ctx context.Context, req *serverpb.AffiliateDeleteRequest) (*serverpb.AffiliateDeleteResponse, error) {
	if err := s.checkCluster(req.ClusterId); err != nil {
		return nil, err
	}
	if err := s.limits.validateIDs(req.ClusterId, req.AffiliateId, true); err != nil {
		return nil, s.invalid("invalid_affiliate_id", codes.InvalidArgument, err)
	}
	if err := s.store.Delete(ctx, req.ClusterId, req.AffiliateId); err != nil {
		return nil, s.storeError(err)
	}
	return &serverpb.AffiliateDeleteResponse{}, nil
}

// List implements serverpb.ClusterServer.
func (s *Server) List(ctx context.Context, req *serverpb.ListRequest) (*serverpb.ListResponse, error) {
	if err := s.checkCluster(req.ClusterId); err != nil {
		return nil, err
	}
	affs, err := s.store.List(ctx, req.ClusterId)
	if err != nil {
		return nil, s.storeError(err)
	}
	return &serverpb.ListResponse{Affiliates: affs}, nil
}

// clientIP is the caller's address: the TCP peer, or, when the peer is a
// trusted proxy, what its X-Real-IP or X-Forwarded-For headers say.
func (s *Server) clientIP(ctx context.Context) netip.Addr {
	var ip netip.Addr
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		switch a := p.Addr.(type) {
		case *net.TCPAddr:
			ip, _ = netip.AddrFromSlice(a.IP)
		default:
			if ap, err := netip.ParseAddrPort(a.String()); err == nil {
				ip = ap.Addr()
			}
		}
		ip = ip.Unmap()
	}
	if !ip.IsValid() || !s.isTrusted(ip) {
		return ip
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-real-ip"); len(v) > 0 {
		if a, err := netip.ParseAddr(strings.TrimSpace(v[0])); err == nil {
			return a.Unmap()
		}
	}
	// X-Forwarded-For: walk from the nearest hop outwards and take the first
	// address that is not one of our proxies; entries further left were
	// written by the client and can be forged.
	var hops []string
	for _, v := range md.Get("x-forwarded-for") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !s.isTrusted(a) {
			return a
		}
		ip = a
	}
	return ip
}

func (s *Server) isTrusted(ip netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ipLimiter is a token bucket per client address.
type ipLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	m     map[netip.Addr]*rate.Limiter
}

func newIPLimiter(limit rate.Limit, burst int) *ipLimiter {
	return &ipLimiter{limit: limit, burst: burst, m: make(map[netip.Addr]*rate.Limiter)}
}

// wait blocks until ip may make a request; it fails at once if that would
// run past ctx's deadline.
func (l *ipLimiter) wait(ctx context.Context, ip netip.Addr) error {
	l.mu.Lock()
	lim := l.m[ip]
	if lim == nil {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[ip] = lim
	}
	l.mu.Unlock()
	return lim.Wait(ctx)
}

// cleanup forgets addresses whose bucket is full again.
func (l *ipLimiter) cleanup() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, lim := range l.m {
		if lim.Tokens() >= float64(l.burst) {
			delete(l.m, ip)
		}
	}
}
