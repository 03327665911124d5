package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

func newIdentityCmd() *cobra.Command {
	var configPath, clusterID, stateDir, output string
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Print this node's WireGuard public key, mesh address and affiliate ID (creating them on first use)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if clusterID == "" {
				cfg, err := config.Load(configPath)
				if err != nil {
					return fmt.Errorf("%w (or pass --cluster-id)", err)
				}
				clusterID = cfg.Cluster.ID
			} else if err := config.ValidateClusterID(clusterID); err != nil {
				return fmt.Errorf("--cluster-id: %w", err)
			}
			id, err := agent.LoadIdentity(stateDir, clusterID, agent.FirstPhysicalMAC)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return json.NewEncoder(os.Stdout).Encode(map[string]string{
					"publicKey": id.PublicKey().String(), "address": id.Address.String(), "affiliateId": id.AffiliateID,
				})
			case "text":
				fmt.Printf("publicKey: %s\naddress: %s\naffiliateId: %s\n", id.PublicKey(), id.Address, id.AffiliateID)
				return nil
			}
			return errors.New("-o: use text or json")
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", DefaultConfigPath, "machine config file (for cluster.id)")
	f.StringVar(&clusterID, "cluster-id", "", "cluster ID, instead of reading it from --config")
	f.StringVar(&stateDir, "state-dir", agent.DefaultStateDir, "directory holding the node identity")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
