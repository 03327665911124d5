// Command meshspan-lab is the local demo behind `make demo`: it applies a
// Terraform configuration (examples/local-lab) and runs the cluster's mesh
// on this machine in network namespaces, with the meshspan-agent binary the
// nodes would download. It is a binary of its own so that the node agent,
// which runs on every server, links none of it (Terraform, iperf3, QEMU).
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
)

func main() {
	if err := newLabCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meshspan-lab:", err)
		os.Exit(1)
	}
}

func newLabCmd() *cobra.Command {
	o := lab.Options{}
	var live string
	cmd := &cobra.Command{
		Use:   "meshspan-lab",
		Short: "Run a hybrid cluster's mesh on this machine from `terraform apply` (network namespaces; needs root)",
		Long: "Applies the Terraform configuration in --dir (examples/local-lab), builds its underlay out of network\n" +
			"namespaces (an internet switch, a NAT'd home LAN), boots each node from the bundle_script or user_data\n" +
			"Terraform rendered, starts the discovery service and one agent per node, shows the mesh coming up, prints\n" +
			"a node's peer status, a ping matrix and an iperf3 figure, then tears everything down (also on Ctrl-C).\n" +
			"Exits 0 only when the mesh was fully up and every check passed.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Agent == "" {
				a, err := findAgent()
				if err != nil {
					return err
				}
				o.Agent = a
			}
			switch live {
			case "auto":
				_, err := unix.IoctlGetTermios(int(os.Stdout.Fd()), unix.TCGETS)
				o.Live = err == nil
			case "always":
				o.Live = true
			}
			o.Out = cmd.OutOrStdout()
			// A closed stdout (`meshspan-lab | head`) or terminal must not
			// kill the lab before its teardown: writes then fail instead,
			// and a hangup tears down as Ctrl-C does.
			signal.Ignore(syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			return lab.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "examples/local-lab", "Terraform configuration to apply")
	f.StringVar(&o.Terraform, "terraform", os.Getenv("TERRAFORM"), "`binary` to run: terraform or tofu, by name or path (default: terraform on PATH, else tofu on PATH, else bin/tofu built by 'make tofu')")
	f.StringVar(&o.Agent, "agent", "", "agent binary the nodes install and run (default: meshspan-agent next to this binary, else on PATH)")
	f.DurationVar(&o.UpTimeout, "timeout", 60*time.Second, "how long the whole mesh may take to come up")
	f.DurationVar(&o.IperfTime, "iperf-time", 3*time.Second, "length of the throughput check")
	f.StringVar(&o.StatusNode, "status-node", "metal-2", "node whose peer status table is printed")
	f.BoolVar(&o.KeepWork, "keep", false, "keep the work directory after the run: Terraform state (with the cluster secret) and log, node directories and logs")
	f.IntVar(&o.VMs, "vms", 0, "boot this many of the user_data nodes as Debian VMs under QEMU, with kernel WireGuard (internal/vmlab)")
	f.StringVar(&live, "live", "auto", "redraw the progress table in place: auto (when stdout is a terminal), always, never")
	return cmd
}

// findAgent is the meshspan-agent next to this binary (make build puts
// both in bin/), else the one on PATH.
func findAgent() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "meshspan-agent")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("meshspan-agent")
	if err == nil {
		return p, nil
	}
	if errors.Is(err, exec.ErrNotFound) {
		return "", errors.New("no meshspan-agent next to meshspan-lab or on PATH: build it with `make build`, or pass --agent /path/to/meshspan-agent")
	}
	return "", err
}
