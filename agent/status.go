package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
)

func newStatusCmd() *cobra.Command {
	var socket, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running agent's peers: endpoint, state, traffic, last handshake",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" && output != "yaml" {
				return fmt.Errorf("-o %q: use table, json or yaml", output)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			s, err := agent.FetchStatus(ctx, socket)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			case "yaml":
				return yaml.NewEncoder(os.Stdout).Encode(s)
			}
			return agent.WriteTable(os.Stdout, s, time.Now())
		},
	}
	cmd.Flags().StringVar(&socket, "socket", agent.DefaultSocket, "the running agent's status socket")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}
