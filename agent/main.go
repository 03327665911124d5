// Command meshspan-agent runs on every node of a meshspan mesh. One binary,
// roles by subcommand: the node agent (run, status, identity, firewall check)
// and the self-hostable discovery service (discovery serve).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is stamped by goreleaser.
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meshspan-agent:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshspan-agent",
		Short:         "Full-mesh WireGuard for any Linux host, compatible with Talos KubeSpan",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		// Subcommands register here, one file each (run.go, status.go, discovery.go, firewall.go, ...).
		newDiscoveryCmd(),
		newFirewallCmd(),
		newRunCmd(),
		newStatusCmd(),
		newIdentityCmd(),
		newVersionCmd(),
	)
	return root
}
