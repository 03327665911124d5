package vmlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// Config describes one VM.
type Config struct {
	Name string // host name and meta-data local-hostname
	// Switch is the lab switch the VM's eth0 plugs into.
	Switch *netlab.Switch
	// Address is eth0's static address (NoCloud network-config v2).
	Address netip.Prefix
	Gateway netip.Addr // optional default route
	// MAC of eth0; the agent derives the mesh address from it.
	MAC string
	// UserData is delivered unchanged as the seed's user-data.
	UserData string
	// VendorData, if set, is the seed's vendor-data (what a cloud adds).
	VendorData string
	Dir        string // work directory: overlay, seed, console log
	MemoryMiB  int    // default 1024
}

// VM is a running machine.
type VM struct {
	cfg     Config
	img     *Image
	proc    *netlab.Proc
	tap     string
	Console string // serial console log file
	qgaPath string
	// Booted is when QEMU was started (power-on).
	Booted time.Time

	mu sync.Mutex // one guest agent conversation at a time
}

// Name is the VM's name.
func (v *VM) Name() string { return v.cfg.Name }

// Address is eth0's address.
func (v *VM) Address() netip.Prefix { return v.cfg.Address }

// Proc is the QEMU process (stopped by the lab's Close).
func (v *VM) Proc() *netlab.Proc { return v.proc }

var tapSeq struct {
	sync.Mutex
	n int
}

// Start creates the VM's overlay and seed, a tap on the switch, and starts
// QEMU inside the switch's namespace, so the lab's Close stops it.
func Start(ctx context.Context, img *Image, cfg Config) (*VM, error) {
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 1024
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("vmlab: %w", err)
	}
	v := &VM{cfg: cfg, img: img, Console: filepath.Join(cfg.Dir, "console.log"), qgaPath: filepath.Join(cfg.Dir, "qga.sock")}
	overlay := filepath.Join(cfg.Dir, "disk.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", img.Path, overlay).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vmlab: %s: overlay: %w: %s", cfg.Name, err, out)
	}
	seed := filepath.Join(cfg.Dir, "seed.img")
	if err := writeSeed(ctx, seed, cfg); err != nil {
		return nil, err
	}
	tapSeq.Lock()
	tapSeq.n++
	v.tap = fmt.Sprintf("vm%d", tapSeq.n)
	tapSeq.Unlock()
	ns := cfg.Switch.NS()
	for _, args := range [][]string{
		{"tuntap", "add", "dev", v.tap, "mode", "tap"},
		{"link", "set", v.tap, "master", "br0"},
		{"link", "set", v.tap, "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", ns.FullName()}, args...)...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("vmlab: %s: ip %s: %w: %s", cfg.Name, strings.Join(args, " "), err, out)
		}
	}
	args := []string{
		"-name", cfg.Name, "-machine", "q35", "-accel", Accel(),
		"-cpu", "max", "-smp", "1", "-m", fmt.Sprint(cfg.MemoryMiB),
		"-display", "none", "-monitor", "none", "-nodefaults",
		"-serial", "file:" + v.Console,
		"-kernel", img.Kernel.Vmlinuz, "-initrd", img.Kernel.Initrd,
		"-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1",
		"-drive", "file=" + overlay + ",if=virtio,format=qcow2",
		"-drive", "file=" + seed + ",if=virtio,format=raw,readonly=on",
		"-netdev", "tap,id=n0,ifname=" + v.tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + cfg.MAC,
		"-chardev", "socket,id=qga0,path=" + v.qgaPath + ",server=on,wait=off",
		"-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
		"-device", "virtio-rng-pci",
	}
	qlog, err := os.Create(filepath.Join(cfg.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer qlog.Close()
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = qlog, qlog
	v.Booted = time.Now()
	if v.proc, err = ns.Start(cmd); err != nil {
		return nil, fmt.Errorf("vmlab: %s: start qemu: %w", cfg.Name, err)
	}
	return v, nil
}

// Running reports whether QEMU is still running, and why not.
func (v *VM) Running() error {
	if done, err := v.proc.Exited(); done {
		b, _ := os.ReadFile(filepath.Join(v.cfg.Dir, "qemu.log"))
		return fmt.Errorf("vmlab: %s: qemu exited (%v): %s", v.cfg.Name, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// Stop powers the VM off.
func (v *VM) Stop() error { return v.proc.Stop(5 * time.Second) }

// writeSeed makes the NoCloud CIDATA disk: user-data exactly as given,
// meta-data with the instance ID and host name, a v2 network-config with
// the static address, and vendor-data when set.
func writeSeed(ctx context.Context, seed string, cfg Config) error {
	dir := filepath.Join(cfg.Dir, "seed")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := map[string]string{
		"user-data":      cfg.UserData,
		"meta-data":      fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", cfg.Name, cfg.Name),
		"network-config": NetworkConfig(cfg.MAC, cfg.Address, cfg.Gateway),
	}
	if cfg.VendorData != "" {
		files["vendor-data"] = cfg.VendorData
	}
	var paths []string
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.vfat", "-n", "CIDATA", "-C", seed, "2048").CombinedOutput(); err != nil {
		return fmt.Errorf("vmlab: %s: seed: mkfs.vfat: %w: %s", cfg.Name, err, out)
	}
	args := append([]string{"-i", seed}, paths...)
	if out, err := exec.CommandContext(ctx, "mcopy", append(args, "::/")...).CombinedOutput(); err != nil {
		return fmt.Errorf("vmlab: %s: seed: mcopy: %w: %s", cfg.Name, err, out)
	}
	return nil
}

// NetworkConfig is a NoCloud network-config (version 2): eth0, matched by
// MAC, with a static address and no DHCP.
func NetworkConfig(mac string, addr netip.Prefix, gw netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: %q\n    set-name: eth0\n    dhcp4: false\n    dhcp6: false\n    addresses: [%q]\n", mac, addr.String())
	if gw.IsValid() {
		fmt.Fprintf(&b, "    gateway4: %s\n", gw)
	}
	return b.String()
}

// ConsoleTail is the end of the serial console log.
func (v *VM) ConsoleTail(lines int) string {
	b, _ := os.ReadFile(v.Console)
	return tail(string(b), lines)
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// Diagnose is what explains a VM that did not get where it should: the
// tail of its serial console and, when the guest agent answers, of
// cloud-init.log and the agent's journal.
func (v *VM) Diagnose(ctx context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s: last lines of the serial console (%s) ---\n%s\n", v.cfg.Name, v.Console, v.ConsoleTail(40))
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, cmd := range []string{
		"tail -n 30 /var/log/cloud-init.log",
		"tail -n 20 /var/log/cloud-init-output.log",
		"journalctl -u meshspan-agent --no-pager -n 30",
	} {
		out, err := v.Run(c, cmd)
		if err != nil && out == "" {
			fmt.Fprintf(&b, "--- %s: %s: not reachable: %v ---\n", v.cfg.Name, cmd, err)
			break
		}
		fmt.Fprintf(&b, "--- %s: %s ---\n%s\n", v.cfg.Name, cmd, strings.TrimRight(out, "\n"))
	}
	return b.String()
}

// WaitCloudInit polls `cloud-init status` through the guest agent until
// cloud-init has finished all its stages (it reports "error" as soon as one
// module fails, while later stages still run), and returns the `--long`
// text; an error when it finished with errors or did not finish in limit.
func (v *VM) WaitCloudInit(ctx context.Context, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	var last string
	var lastErr error
	for {
		if err := v.Running(); err != nil {
			return "", fmt.Errorf("%w\n%s", err, v.Diagnose(ctx))
		}
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		out, err := v.Run(c, "cloud-init status --long; test -e /var/lib/cloud/instance/boot-finished && echo boot-finished")
		cancel()
		last, lastErr = out, err
		finished := strings.Contains(out, "boot-finished")
		switch {
		case strings.Contains(out, "status: done") && finished:
			return out, nil
		case strings.Contains(out, "status: error") && finished:
			return out, fmt.Errorf("vmlab: %s: cloud-init finished with errors:\n%s\n%s", v.cfg.Name, out, v.Diagnose(ctx))
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("vmlab: %s: cloud-init not done %v after power-on (last status: %q, %v)\n%s",
				v.cfg.Name, time.Since(v.Booted).Round(time.Second), strings.TrimSpace(last), lastErr, v.Diagnose(ctx))
		}
		select {
		case <-ctx.Done():
			return "", errors.Join(ctx.Err(), errors.New(v.Diagnose(context.Background())))
		case <-time.After(2 * time.Second):
		}
	}
}
