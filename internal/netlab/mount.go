package netlab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ensureNetnsMount makes netnsDir a shared mount point of its own, as
// `ip netns add` does the first time it runs. Namespace files mounted into
// the directory before that are copied by iproute2's recursive bind of the
// directory onto itself: the copies below it stay mounted, hidden, and the
// files can never be removed (Close failed with "device or resource busy"
// when another process ran `ip netns add` while a lab was up). Once the
// directory is a mount point, iproute2 only marks it shared again.
// A lock orders labs in different processes doing it at once.
func ensureNetnsMount() error {
	netnsOnce.Do(func() { netnsErr = mountNetnsDir() })
	return netnsErr
}

var (
	netnsOnce sync.Once
	netnsErr  error
)

func mountNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile("/run/netlab.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock /run/netlab.lock: %w", err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	mounted, err := isMountPoint(f, netnsDir)
	f.Close()
	if err != nil {
		return fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	if !mounted {
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", netnsDir, err)
		}
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// isMountPoint reports whether dir is the mount point of an entry of a
// mountinfo table (proc(5): the fifth field; spaces are escaped as \040).
func isMountPoint(mountinfo io.Reader, dir string) (bool, error) {
	s := bufio.NewScanner(mountinfo)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true, nil
		}
	}
	return false, s.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes of space, tab, newline
// and backslash.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
