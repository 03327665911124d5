package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
)

// newLabCmd is `meshspan-agent lab`: the local demo behind `make demo`.
func newLabCmd() *cobra.Command {
	o := lab.Options{}
	var live string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a hybrid cluster's mesh on this machine from `terraform apply` (network namespaces; needs root)",
		Long: "Applies the Terraform configuration in --dir (examples/local-lab), builds its underlay out of network\n" +
			"namespaces (an internet switch, a NAT'd home LAN), boots each node from the bundle_script or user_data\n" +
			"Terraform rendered, starts the discovery service and one agent per node, shows the mesh coming up, prints\n" +
			"a node's peer status, a ping matrix and an iperf3 figure, then tears everything down (also on Ctrl-C).\n" +
			"Exits 0 only when the mesh was fully up and every check passed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Agent == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				o.Agent = exe
			}
			switch live {
			case "auto":
				_, err := unix.IoctlGetTermios(int(os.Stdout.Fd()), unix.TCGETS)
				o.Live = err == nil
			case "always":
				o.Live = true
			}
			o.Out = cmd.OutOrStdout()
			// A closed stdout (`lab | head`) or terminal must not kill the
			// lab before its teardown: writes then fail instead, and a hangup
			// tears down as Ctrl-C does.
			signal.Ignore(syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			return lab.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "examples/local-lab", "Terraform configuration to apply")
	f.StringVar(&o.Terraform, "terraform", os.Getenv("TERRAFORM"), "`binary` to run: terraform or tofu, by name or path (default: terraform on PATH, else tofu on PATH, else bin/tofu built by 'make tofu')")
	f.StringVar(&o.Agent, "agent", "", "agent binary the nodes install and run (default: this binary)")
	f.DurationVar(&o.UpTimeout, "timeout", 60*time.Second, "how long the whole mesh may take to come up")
	f.DurationVar(&o.IperfTime, "iperf-time", 3*time.Second, "length of the throughput check")
	f.StringVar(&o.StatusNode, "status-node", "metal-2", "node whose peer status table is printed")
	f.BoolVar(&o.KeepWork, "keep", false, "keep the work directory after the run: Terraform state (with the cluster secret) and log, node directories and logs")
	f.IntVar(&o.VMs, "vms", 0, "boot this many of the user_data nodes as Debian VMs under QEMU, with kernel WireGuard (internal/vmlab)")
	f.StringVar(&live, "live", "auto", "redraw the progress table in place: auto (when stdout is a terminal), always, never")
	return cmd
}
