package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// DefaultConfigPath is where cloud-init and the install script put the config.
const DefaultConfigPath = "/etc/meshspan/config.yaml"

func newRunCmd() *cobra.Command {
	var (
		configPath, stateDir, socket, mode, metrics, logLevel string
		noPolicy, check                                       bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent: bring up the WireGuard mesh and keep it converged",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := wg.ParseMode(mode)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return err
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			if check {
				out, err := config.Render(cfg)
				if err != nil {
					return err
				}
				// The secret is 44 base64 characters, which YAML prints as
				// they are; no other value can contain them.
				out = bytes.ReplaceAll(out, []byte(cfg.Cluster.Secret), []byte("<redacted>"))
				fmt.Fprintf(cmd.OutOrStdout(), "# %s is valid; with defaults filled in (cluster.secret redacted):\n%s", configPath, out)
				return nil
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return agent.Run(ctx, agent.Options{
				Config:        cfg,
				StateDir:      stateDir,
				Socket:        socket,
				WireGuard:     m,
				NATTraversal:  true,
				MetricsListen: metrics,
				NoHostPolicy:  noPolicy,
				Version:       version,
				Logger:        log,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", DefaultConfigPath, "machine config file (meshspan/v1 MachineConfig)")
	f.StringVar(&stateDir, "state-dir", agent.DefaultStateDir, "directory for the node identity (private key, mesh address, affiliate ID)")
	f.StringVar(&socket, "socket", agent.DefaultSocket, "`path` of the unix socket that serves meshspan-agent status and /metrics")
	f.StringVar(&mode, "wireguard", string(wg.ModeAuto), "WireGuard back end: auto (kernel if available), kernel or userspace")
	f.StringVar(&metrics, "metrics-listen", "", "also serve Prometheus /metrics on this TCP address, e.g. 127.0.0.1:9810")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&noPolicy, "no-host-policy", false, "do not manage routing rules and nftables (mesh prefix only)")
	f.BoolVar(&check, "check", false, "validate the config, print it with defaults filled in, and exit without touching the host")
	return cmd
}
