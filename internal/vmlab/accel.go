package vmlab

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"sync"
	"time"
)

var accel struct {
	once sync.Once
	v    string
}

// Accel is "kvm" when a short probe shows KVM works here, else "tcg". The
// device node alone proves nothing: under nested virtualisation QEMU with
// KVM may hang or abort. MESHSPAN_VM_ACCEL overrides the probe.
func Accel() string {
	accel.once.Do(func() {
		accel.v = os.Getenv("MESHSPAN_VM_ACCEL")
		if accel.v == "" {
			accel.v = "tcg"
			if probeKVM() {
				accel.v = "kvm"
			}
		}
	})
	return accel.v
}

// probeKVM boots the kernel with no root file system under KVM: where KVM
// works it prints its banner and panics (QEMU exits, -no-reboot) within
// seconds.
func probeKVM() bool {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false
	}
	k, err := FindKernel()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256",
		"-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio",
		"-kernel", k.Vmlinuz, "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent")
	cmd.WaitDelay = time.Second
	out, _ := cmd.CombinedOutput()
	return bytes.Contains(out, []byte("Linux version"))
}
