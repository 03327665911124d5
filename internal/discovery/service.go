package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/meshspan/terraform-provider-meshspan/internal/fwmark"
)

// ServiceConfig is everything `meshspan-agent discovery serve` configures.
type ServiceConfig struct {
	Listen        string // gRPC, e.g. ":3000"
	MetricsListen string // HTTP /metrics; empty: off
	TLSCert       string // PEM files; both empty: plaintext h2c
	TLSKey        string

	// Mark is a firewall mark set on the gRPC listener, and so on every
	// connection it accepts (0: none). On a mesh member with host policy,
	// WireGuard's mark keeps replies to members on the underlay, as the
	// members' own discovery connections are: routed into the mesh, they
	// would need the tunnel that discovery is there to bring up.
	Mark uint32

	Store            string // "memory" or "redis"
	SnapshotPath     string // memory store; empty: no snapshots
	SnapshotInterval time.Duration
	RedisURL         string
	RedisCluster     bool // RedisURL is a seed of a Redis Cluster

	TrustedProxies   []netip.Prefix
	AllowedClusters  []string
	RedirectEndpoint string
	GCInterval       time.Duration
	Limits           Limits
	RateLimitRPS     float64
	RateLimitBurst   int
	// Conn bounds connections and watches (zero: DefaultConnLimits).
	Conn ConnLimits

	Logger *slog.Logger
	Now    func() time.Time // tests; nil: time.Now
}

// Validate checks cfg as Start would, touching nothing: `serve --check`
// and `serve` fail on the same input with the same message, before anything
// is created on disk or restored.
func (cfg ServiceConfig) Validate() error {
	if cfg.Limits != (Limits{}) {
		if err := cfg.Limits.check(); err != nil {
			return err
		}
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("discovery: serve: set both --tls-cert and --tls-key, or neither for plaintext")
	}
	if cfg.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return fmt.Errorf("discovery: tls: load --tls-cert %q / --tls-key %q: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
	}
	switch cfg.Store {
	case "", "memory":
	case "redis":
		if cfg.RedisURL == "" {
			return errors.New("discovery: serve: --store redis needs --redis-url (e.g. redis://127.0.0.1:6379/0)")
		}
		parse := func(u string) error { _, err := parseRedisURL(u); return err }
		if cfg.RedisCluster {
			parse = func(u string) error { _, err := parseRedisClusterURL(u); return err }
		}
		if err := parse(cfg.RedisURL); err != nil {
			return err
		}
	default:
		return fmt.Errorf("discovery: serve: --store %q is not known: use memory or redis", cfg.Store)
	}
	return cfg.Conn.check()
}

// Service is a running discovery service.
type Service struct {
	cfg      ServiceConfig
	log      *slog.Logger
	store    Store
	mem      *MemoryStore
	server   *Server
	grpc     *grpc.Server
	health   *health.Server
	lis      net.Listener
	conns    *connTracker
	metrics  *http.Server
	mlis     net.Listener
	stop     context.CancelFunc
	wg       sync.WaitGroup
	shutOnce sync.Once
	shutErr  error
}

// Start opens the store (restoring the snapshot), binds the listeners and
// serves until Shutdown.
func Start(cfg ServiceConfig) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = time.Minute
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = 10 * time.Minute
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var kr *certReloader
	if cfg.TLSCert != "" {
		var err error
		if kr, err = newCertReloader(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, err
		}
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	switch cfg.Store {
	case "", "memory":
		s.mem = NewMemoryStore(cfg.Limits, cfg.Now)
		s.store = s.mem
		if cfg.SnapshotPath != "" {
			rep, err := s.mem.LoadSnapshot(cfg.SnapshotPath)
			for i, sk := range rep.Skipped {
				if i == 10 {
					s.log.Warn("discovery: snapshot: more entries skipped", "count", len(rep.Skipped)-i)
					break
				}
				s.log.Warn("discovery: snapshot: entry skipped", "cluster", sk.Cluster, "affiliate", sk.Affiliate, "reason", sk.Reason)
			}
			switch {
			case err != nil && rep.Restored > 0:
				// A damaged snapshot must not keep the service down; what
				// came before the damage is served, clients re-publish the
				// rest within TTL/2.
				s.log.Warn("discovery: snapshot partly restored: the file is damaged after the last affiliate read", "path", cfg.SnapshotPath, "affiliates", rep.Restored, "skipped", len(rep.Skipped), "err", err)
			case err != nil:
				s.log.Warn("discovery: snapshot not restored", "path", cfg.SnapshotPath, "affiliates", 0, "err", err)
			default:
				s.log.Info("discovery: snapshot restored", "path", cfg.SnapshotPath, "affiliates", rep.Restored, "skipped", len(rep.Skipped))
			}
		}
	case "redis":
		rs, err := NewRedisStore(RedisOptions{URL: cfg.RedisURL, Cluster: cfg.RedisCluster, Limits: cfg.Limits, Now: cfg.Now, Logger: cfg.Logger, GCInterval: cfg.GCInterval})
		if err != nil {
			return nil, err
		}
		s.store = rs
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := NewMetrics(reg, s.store)
	cl := cfg.Conn.withDefaults()
	s.conns = newConnTracker(cl, func(ip netip.Addr) bool {
		for _, p := range cfg.TrustedProxies {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}, func(reason string) { metrics.rejections.WithLabelValues(reason).Inc() })
	srv, err := NewServer(ServerOptions{
		Store: s.store, Limits: cfg.Limits, TrustedProxies: cfg.TrustedProxies, AllowedClusters: cfg.AllowedClusters,
		RateLimitRPS: cfg.RateLimitRPS, RateLimitBurst: cfg.RateLimitBurst, RedirectEndpoint: cfg.RedirectEndpoint,
		WatchersPerAddress: cl.WatchersPerAddress, Logger: cfg.Logger, Metrics: metrics, conns: s.conns,
	})
	if err != nil {
		s.store.Close() //nolint:errcheck
		return nil, err
	}
	s.server = srv

	kp := keepalive.ServerParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}
	if cl.IdleTimeout > 0 {
		kp.MaxConnectionIdle = cl.IdleTimeout
	}
	opts := append(srv.GRPCOptions(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(kp),
		// Most connections are idle watchers: a read buffer sized for the
		// small requests of this API (larger frames are read in several
		// calls) instead of 32 KB held for the connection's life. Write
		// buffers are already taken from a pool only while writing.
		grpc.ReadBufferSize(8<<10),
		// Static flow-control windows of HTTP/2's default size: the
		// dynamic ones make the server send a window update and a BDP
		// ping on each request that arrives after a pause (every
		// AffiliateUpdate of a node does) and read the client's ack: a
		// write and a read per update, to grow windows that requests of
		// at most a few KB never fill.
		grpc.StaticStreamWindowSize(65535),
		grpc.StaticConnWindowSize(65535),
	)
	if kr != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: kr.get,
			NextProtos:     []string{"h2"},
		})))
	}
	s.grpc = grpc.NewServer(opts...)
	srv.Register(s.grpc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	var lc net.ListenConfig
	if cfg.Mark != 0 {
		lc.Control = func(_, _ string, rc syscall.RawConn) error { return fwmark.Set(rc, cfg.Mark) }
	}
	if s.lis, err = lc.Listen(context.Background(), "tcp", cfg.Listen); err != nil && cfg.Mark != 0 && errors.Is(err, syscall.EPERM) {
		s.log.Warn("discovery: serve: cannot mark the listener without CAP_NET_ADMIN; on a mesh member with host policy, replies to members may be routed into the mesh", "mark", cfg.Mark)
		s.lis, err = net.Listen("tcp", cfg.Listen)
	}
	if err != nil {
		s.store.Close() //nolint:errcheck
		return nil, fmt.Errorf("discovery: serve: listen on --listen %q: %w", cfg.Listen, err)
	}
	if cfg.MetricsListen != "" {
		if s.mlis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			s.lis.Close()   //nolint:errcheck
			s.store.Close() //nolint:errcheck
			return nil, fmt.Errorf("discovery: serve: listen on --metrics-listen %q: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.metrics.Serve(s.mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("discovery: metrics server", "err", err)
			}
		}()
	}

	s.lis = s.conns.listener(s.lis)

	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.lis); err != nil {
			s.log.Error("discovery: grpc server", "err", err)
		}
	}()
	go s.housekeeping(ctx)
	s.log.Info("discovery: serving", "listen", s.lis.Addr().String(), "store", cfg.Store, "tls", cfg.TLSCert != "")
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Service) Addr() net.Addr { return s.lis.Addr() }

// MetricsAddr is the bound metrics address (nil if off).
func (s *Service) MetricsAddr() net.Addr {
	if s.mlis == nil {
		return nil
	}
	return s.mlis.Addr()
}

// Conns is the number of open client connections.
func (s *Service) Conns() int { return s.conns.Count() }

// Store is the service's store (tests).
func (s *Service) Store() Store { return s.store }

// housekeeping runs GC, snapshots, limiter cleanup and the health status.
func (s *Service) housekeeping(ctx context.Context) {
	defer s.wg.Done()
	gc := time.NewTicker(s.cfg.GCInterval)
	defer gc.Stop()
	limiter := time.NewTicker(time.Minute)
	defer limiter.Stop()
	var snap <-chan time.Time
	if s.mem != nil && s.cfg.SnapshotPath != "" {
		t := time.NewTicker(s.cfg.SnapshotInterval)
		defer t.Stop()
		snap = t.C
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for {
		select {
		case <-ctx.Done():
			return
		case <-gc.C:
			st := healthpb.HealthCheckResponse_SERVING
			if err := s.store.GC(ctx); err != nil {
				s.log.Warn("discovery: gc", "err", err)
				if errors.Is(err, ErrUnavailable) {
					st = healthpb.HealthCheckResponse_NOT_SERVING
				}
			}
			s.health.SetServingStatus("", st)
		case <-limiter.C:
			s.server.ExpireLimiter()
		case <-snap:
			if err := s.mem.WriteSnapshot(s.cfg.SnapshotPath); err != nil {
				s.log.Error("discovery: periodic snapshot", "err", err)
			}
		}
	}
}

// Shutdown stops serving (open watches end cleanly), writes the final
// snapshot after the last request has been answered, and closes the store.
func (s *Service) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.health.Shutdown()
		s.stop()
		// Ending the subscriptions lets GracefulStop finish: watches return.
		if s.mem != nil {
			s.mem.Close() //nolint:errcheck
		} else if rs, ok := s.store.(*RedisStore); ok {
			rs.failAll(ErrClosed)
		}
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
			<-done
		}
		if s.metrics != nil {
			s.metrics.Close() //nolint:errcheck
		}
		s.wg.Wait()
		var errs []error
		if s.mem != nil && s.cfg.SnapshotPath != "" {
			errs = append(errs, s.mem.WriteSnapshot(s.cfg.SnapshotPath))
		}
		errs = append(errs, s.store.Close())
		s.shutErr = errors.Join(errs...)
	})
	return s.shutErr
}

// certReloader serves the certificate from disk and re-reads it when the
// files change, so renewals need no restart.
type certReloader struct {
	certPath, keyPath string
	interval          time.Duration // how often the files are checked
	mu                sync.Mutex
	cert              *tls.Certificate
	mod               time.Time
	checked           time.Time
}

func newCertReloader(certPath, keyPath string) (*certReloader, error) {
	r := &certReloader{certPath: certPath, keyPath: keyPath, interval: 5 * time.Second}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) modTime() time.Time {
	var t time.Time
	for _, p := range []string{r.certPath, r.keyPath} {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

func (r *certReloader) load() error {
	mod := r.modTime()
	c, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		return fmt.Errorf("discovery: tls: load --tls-cert %q / --tls-key %q: %w", r.certPath, r.keyPath, err)
	}
	r.cert, r.mod = &c, mod
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= r.interval {
		r.checked = time.Now()
		if r.modTime().After(r.mod) {
			// Keep serving the old pair if the new one is half-written.
			_ = r.load()
		}
	}
	return r.cert, nil
}
