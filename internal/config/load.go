package config

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Load reads and parses the config file at path. The file holds the
// cluster secret, so, as sshd does with private keys, Load refuses one that
// group or others may read or write, naming the chmod that fixes it. It
// reads only a regular file (a FIFO would block, /dev/zero never ends) and
// never more than MaxSize bytes of it.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, withPath(path, err)
	}
	return c, nil
}

func readFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO would otherwise wait for a writer. On a
	// regular file it changes nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w; write the machine_config output of the meshspan Terraform provider there (mode 0600) or pass its path with --config", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config: %s is not a regular file (%s); point --config at the machine config file", path, kind(fi.Mode()))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("config: %s holds the cluster secret but its mode %#o lets group or others at it; run: chmod 600 %s", path, perm, path)
	}
	if fi.Size() > MaxSize {
		return nil, fmt.Errorf("config: %s is %d bytes, larger than the %d byte limit", path, fi.Size(), MaxSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1)) // the file may grow after Stat
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config: %s is larger than the %d byte limit", path, MaxSize)
	}
	return data, nil
}

func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return "mode " + m.String()
}
