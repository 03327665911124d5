package main

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
)

func newFirewallCmd() *cobra.Command {
	fw := &cobra.Command{
		Use:   "firewall",
		Short: "Inspect the routing policy and host firewall the agent manages",
	}
	var cfgPath, netnsPath, table string
	var exitCode bool
	check := &cobra.Command{
		Use:   "check",
		Short: "Show the nftables table, routes and rules the agent would apply, and the diff against what is live; changes nothing",
		Long: `check reads the machine config, computes the nftables table (inet "meshspan"), the
mesh routing table's routes and the policy rules the agent would make live, and
prints them followed by a diff against the live host ("-" would go, "+" would
come). It changes nothing.

Members learned from discovery are known only to the running agent: check keeps
the destinations the live table already routes, adds the static peers' endpoint
addresses and networks, and applies this config's LAN bypass and firewall to them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			changed, err := firewallCheck(cmd.OutOrStdout(), c, netpolicy.Options{Table: table, NetNSPath: netnsPath})
			if err != nil {
				return err
			}
			if changed && exitCode {
				return errChanged
			}
			return nil
		},
	}
	check.Flags().StringVar(&cfgPath, "config", "/etc/meshspan/config.yaml", "machine config file")
	check.Flags().StringVar(&table, "table", netpolicy.DefaultTable, "nftables table (family inet) the agent owns")
	check.Flags().StringVar(&netnsPath, "netns", "", "check this network namespace (e.g. /run/netns/NAME) instead of the current one")
	check.Flags().BoolVar(&exitCode, "exit-code", false, "exit with status 1 (after printing) when the live host differs")
	fw.AddCommand(check)
	return fw
}

var errChanged = fmt.Errorf("firewall check: the live host differs from the config (see the diff above)")

// firewallCheck prints the plan for c and reports whether anything would change.
func firewallCheck(w io.Writer, c *config.Config, opts netpolicy.Options) (bool, error) {
	s, err := netpolicy.FromConfig(c)
	if err != nil {
		return false, err
	}
	m, err := netpolicy.New(opts)
	if err != nil {
		return false, err
	}
	// Read-only: Release, not Close, which would remove the live table.
	defer m.Release()
	live, err := m.LiveRouted()
	if err != nil {
		return false, err
	}
	s.Routed = append(s.Routed, live...)
	for i, p := range c.StaticPeers {
		for j, e := range p.Endpoints {
			ap, err := netip.ParseAddrPort(e)
			if err != nil {
				return false, fmt.Errorf("firewall check: staticPeers[%d].endpoints[%d]: %w", i, j, err)
			}
			s.Routed = append(s.Routed, netip.PrefixFrom(ap.Addr().Unmap(), ap.Addr().Unmap().BitLen()))
		}
		for j, n := range p.Networks {
			pfx, err := config.ParsePrefix(n)
			if err != nil {
				return false, fmt.Errorf("firewall check: staticPeers[%d].networks[%d]: %w", i, j, err)
			}
			s.Routed = append(s.Routed, pfx)
		}
	}
	plan, err := m.Plan(s)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(w, "# What the agent applies (interface %s, table %d, rule priority %d):\n%s\n", s.Interface, s.Routing.Table, s.Routing.RulePriority, plan.Desired)
	if !plan.Changed() {
		fmt.Fprintln(w, "# The live host matches: nothing would change.")
		return false, nil
	}
	if plan.Live == "" {
		fmt.Fprintln(w, "# Nothing of the agent's is live yet (no table, routes or rules); all of the above would be added.")
		return true, nil
	}
	fmt.Fprintf(w, "# Diff against the live host (- would be removed, + would be added):\n%s", plan.Diff())
	return true, nil
}
