package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
)

// newDiscoveryCmd is `meshspan-agent discovery serve`: the self-hostable,
// KubeSpan-compatible discovery service. Flags only; the service lives in
// internal/discovery.
func newDiscoveryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "discovery",
		Short: "Run the discovery service that meshspan agents and Talos KubeSpan nodes publish to",
	}
	cmd.AddCommand(newDiscoveryServeCmd())
	return cmd
}

func newDiscoveryServeCmd() *cobra.Command {
	var (
		cfg         discovery.ServiceConfig
		trusted     []string
		allowed     []string
		allowedFile string
		check       bool
		logLevel    string
		limits      = discovery.DefaultLimits()
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the discovery gRPC API (sealed blobs only: the service never sees cluster secrets)",
		Long: `Serve the discovery gRPC API (sidero.discovery.server.Cluster), wire-compatible with
Talos KubeSpan. Use TLS (--tls-cert/--tls-key) unless a TLS-terminating proxy is in front;
without them the service speaks plaintext HTTP/2 (h2c), for local use.

The memory store snapshots to --snapshot-path every --snapshot-interval and on SIGTERM.
The redis store lets several replicas behind one address serve the same clusters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("discovery serve: --log-level %q: use debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
			cfg.Logger = log
			cfg.Limits = limits
			for _, t := range trusted {
				p, err := parsePrefixOrAddr(t)
				if err != nil {
					return fmt.Errorf("discovery serve: --trusted-proxies %q: %w", t, err)
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, p)
			}
			cfg.AllowedClusters = append(cfg.AllowedClusters, allowed...)
			if allowedFile != "" {
				ids, err := readLines(allowedFile)
				if err != nil {
					return fmt.Errorf("discovery serve: --allowed-clusters-file: %w", err)
				}
				cfg.AllowedClusters = append(cfg.AllowedClusters, ids...)
			}
			if cfg.Store != "memory" && cfg.Store != "redis" {
				return fmt.Errorf("discovery serve: --store %q: use memory or redis", cfg.Store)
			}
			if cfg.Store == "redis" {
				cfg.SnapshotPath = "" // Redis keeps the state
			}
			// The same checks as Start, before anything touches the disk:
			// --check and serve fail alike, and a serve that fails creates
			// no snapshot directory and restores nothing.
			if err := cfg.Validate(); err != nil {
				return err
			}
			if check {
				fmt.Fprintf(cmd.OutOrStdout(), "listen=%s firewall-mark=%#x metrics=%s tls=%t store=%s snapshot=%q every %s redis=%q redis-cluster=%t gc=%s\n"+
					"trusted-proxies=%v allowed-clusters=%d rate=%g/s burst=%d limits=%+v\n"+
					"idle-timeout=%s max-conns-per-address=%d max-watchers-per-address=%d max-conns=%d\n",
					cfg.Listen, cfg.Mark, cfg.MetricsListen, cfg.TLSCert != "", cfg.Store, cfg.SnapshotPath, cfg.SnapshotInterval,
					cfg.RedisURL, cfg.RedisCluster, cfg.GCInterval, cfg.TrustedProxies, len(cfg.AllowedClusters), cfg.RateLimitRPS,
					cfg.RateLimitBurst, cfg.Limits, cfg.Conn.IdleTimeout, cfg.Conn.PerAddress, cfg.Conn.WatchersPerAddress, cfg.Conn.Max)
				return nil
			}
			if cfg.SnapshotPath != "" {
				if err := os.MkdirAll(filepath.Dir(cfg.SnapshotPath), 0o700); err != nil {
					return fmt.Errorf("discovery serve: --snapshot-path %q: %w (set --snapshot-path '' to run without snapshots)", cfg.SnapshotPath, err)
				}
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			svc, err := discovery.Start(cfg)
			if err != nil {
				return err
			}
			<-ctx.Done()
			log.Info("discovery: shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return svc.Shutdown(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":3000", "gRPC listen address")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", ":2122", "Prometheus /metrics listen address ('' disables)")
	f.Uint32Var(&cfg.Mark, "firewall-mark", config.DefaultFirewallMark, "firewall mark on the service's connections, WireGuard's (routing.firewallMark): on a mesh member with host policy it keeps replies to members on the underlay; 0 disables")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate PEM file (reloaded when it changes); with --tls-key")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key PEM file")
	f.StringVar(&cfg.Store, "store", "memory", "state store: memory or redis")
	f.StringVar(&cfg.SnapshotPath, "snapshot-path", "/var/lib/meshspan/discovery-state.binpb", "memory store snapshot file ('' disables); same format as Sidero's state.binpb")
	f.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", 10*time.Minute, "how often the memory store is snapshotted (also on SIGTERM)")
	f.StringVar(&cfg.RedisURL, "redis-url", "", "Redis URL for --store redis, e.g. redis://127.0.0.1:6379/0 or unix:///run/redis.sock")
	f.BoolVar(&cfg.RedisCluster, "redis-cluster", false, "--redis-url names a seed node of a Redis Cluster (more seeds: ?addr=host:port&addr=...); each discovery cluster lives in one hash slot, writes wait for a replica")
	f.StringSliceVar(&trusted, "trusted-proxies", nil, "CIDRs or IPs of proxies whose X-Real-IP / X-Forwarded-For are believed")
	f.StringSliceVar(&allowed, "allowed-clusters", nil, "admit only these cluster IDs (comma-separated); empty admits all")
	f.StringVar(&allowedFile, "allowed-clusters-file", "", "file of admitted cluster IDs, one per line (# comments)")
	f.StringVar(&cfg.RedirectEndpoint, "redirect-endpoint", "", "host:port sent to every client in Hello to move it elsewhere")
	f.DurationVar(&cfg.GCInterval, "gc-interval", time.Minute, "how often expired affiliates and endpoints are collected")
	f.Float64Var(&cfg.RateLimitRPS, "rate-limit", 15, "requests per second per client address (negative: unlimited)")
	f.IntVar(&cfg.RateLimitBurst, "rate-burst", 60, "rate limit burst per client address")
	f.IntVar(&limits.AffiliatesPerCluster, "max-affiliates", limits.AffiliatesPerCluster, "affiliates per cluster")
	f.IntVar(&limits.EndpointsPerAffiliate, "max-endpoints", limits.EndpointsPerAffiliate, "endpoints per affiliate")
	f.DurationVar(&limits.TTLMax, "max-ttl", limits.TTLMax, "longest TTL a client may ask for")
	def := discovery.DefaultConnLimits()
	f.DurationVar(&cfg.Conn.IdleTimeout, "idle-timeout", def.IdleTimeout, "close a connection with no RPC or watch open for this long (negative: never)")
	f.IntVar(&cfg.Conn.PerAddress, "max-conns-per-address", def.PerAddress, "connections per client address; RPCs on further ones fail with ResourceExhausted (negative: no limit; trusted proxies are exempt)")
	f.IntVar(&cfg.Conn.WatchersPerAddress, "max-watchers-per-address", def.WatchersPerAddress, "open watches per client address (negative: no limit)")
	f.IntVar(&cfg.Conn.Max, "max-conns", 0, "connections in total, further ones are closed at once (0: 7/8 of the open-file limit; negative: no limit)")
	f.BoolVar(&check, "check", false, "validate the flags, print the resolved configuration and exit")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR or IP: %w", err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read only
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}
