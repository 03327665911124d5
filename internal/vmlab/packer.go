package vmlab

import (
	"context"
	"io"
	"sync"
)

// SSHPackages is what a cloud image has on top of the stock one for
// builders that provision over SSH (Packer): the SSH server.
var SSHPackages = []string{"openssh-server"}

var pkgMu sync.Mutex

// BuildSSHImage is BuildImage with SSHPackages added: the source disk of a
// Packer build, like a cloud's stock image that has sshd. It is cached
// apart from the stock image (the key covers the package list).
func BuildSSHImage(ctx context.Context, log io.Writer) (*Image, error) {
	pkgMu.Lock()
	defer pkgMu.Unlock()
	saved := Packages
	Packages = append(append([]string(nil), saved...), SSHPackages...)
	defer func() { Packages = saved }()
	return BuildImage(ctx, log)
}

// WriteSeed writes the NoCloud seed disk for cfg (its Name, MAC, Address,
// Gateway, UserData and Dir) to path, as Start does for its own VMs: for a
// machine QEMU is started by something else, e.g. Packer's qemu builder.
func WriteSeed(ctx context.Context, path string, cfg Config) error {
	return writeSeed(ctx, path, cfg)
}
