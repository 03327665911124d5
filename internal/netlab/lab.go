// Package netlab builds small test networks out of Linux network namespaces:
// hosts, switches (a bridge in its own namespace), direct links, NAT routers,
// and processes running inside them. Every name a Lab creates carries a random
// per-run suffix, and Close removes all of it, so tests can run side by side
// and leave nothing behind. It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netnsDir is where named namespaces live, the same place `ip netns` uses.
const netnsDir = "/run/netns"

// StopTimeout bounds how long Close waits for a process after SIGTERM
// before it sends SIGKILL.
var StopTimeout = 3 * time.Second

var (
	namePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)
	prefixPattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)
)

// Lab owns a set of namespaces and the processes started in them.
type Lab struct {
	prefix string // prefix + "-" + random suffix, shared by every namespace

	mu     sync.Mutex
	nss    []*NS
	byName map[string]*NS
	procs  []*Proc
	closed bool
}

// New makes an empty lab. prefix (1-8 lowercase letters or digits, starting
// with a letter) starts every namespace name, followed by a random suffix
// unique to this run.
func New(prefix string) (*Lab, error) {
	if !prefixPattern.MatchString(prefix) {
		return nil, fmt.Errorf("netlab: new: prefix %q must be 1-8 lowercase letters or digits starting with a letter", prefix)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("netlab: new: random suffix: %w", err)
	}
	return &Lab{prefix: prefix + "-" + hex.EncodeToString(b[:]), byName: map[string]*NS{}}, nil
}

// ID is the unique prefix of every namespace this lab makes, e.g. "ms-1a2b3c".
func (l *Lab) ID() string { return l.prefix }

// NS is one network namespace of a lab.
type NS struct {
	lab    *Lab
	name   string // short name given by the caller
	full   string // namespace name on the system
	handle netns.NsHandle
	nl     *netlink.Handle

	mu    sync.Mutex
	ports int // counter for switch port names
}

// Name is the short name the namespace was created with.
func (n *NS) Name() string { return n.name }

// FullName is the namespace's system-wide name, usable with `ip netns exec`.
func (n *NS) FullName() string { return n.full }

// Path is the namespace's bind-mount file (for nsenter --net=...).
func (n *NS) Path() string { return filepath.Join(netnsDir, n.full) }

// Netlink is a netlink handle bound to this namespace, owned by the lab.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Handle is an open file descriptor of the namespace, owned by the lab.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Host makes a namespace with its loopback up.
func (l *Lab) Host(name string) (*NS, error) {
	return l.newNS(name)
}

func (l *Lab) newNS(name string) (*NS, error) {
	if !namePattern.MatchString(name) {
		return nil, fmt.Errorf("netlab: namespace name %q must be 1-31 lowercase letters, digits or '-'", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("netlab: namespace %q: lab is closed", name)
	}
	if _, dup := l.byName[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("netlab: namespace %q: name already used in this lab", name)
	}
	full := l.prefix + "-" + name
	ns := &NS{lab: l, name: name, full: full, handle: netns.None()}
	// Registered before creation so Close removes a half-made namespace too.
	l.byName[name] = ns
	l.nss = append(l.nss, ns)
	l.mu.Unlock()

	if err := ensureNetnsMount(); err != nil {
		return nil, fmt.Errorf("netlab: namespace %q: %w", full, err)
	}
	if err := createNamed(full); err != nil {
		return nil, fmt.Errorf("netlab: create namespace %q: %w", full, err)
	}
	h, err := netns.GetFromPath(filepath.Join(netnsDir, full))
	if err != nil {
		return nil, fmt.Errorf("netlab: open namespace %q: %w", full, err)
	}
	ns.handle = h
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlab: netlink handle in %q: %w", full, err)
	}
	ns.nl = nl
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: find lo: %w", full, err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("netlab: %s: set lo up: %w", full, err)
	}
	return ns, nil
}

// createNamed makes a named namespace on a throwaway OS thread: unshare
// switches the calling thread, and a locked goroutine that returns without
// unlocking takes its thread with it, so no other goroutine ever runs there.
func createNamed(full string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(full)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	return <-errc
}

// Close stops every process the lab started (SIGTERM, then SIGKILL after
// StopTimeout), kills anything else still running in its namespaces, and
// deletes the namespaces, which removes their links too. It is safe to call
// more than once; later calls do nothing.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := append([]*Proc(nil), l.procs...)
	nss := append([]*NS(nil), l.nss...)
	l.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Stop(StopTimeout) // exit status of a stopped process is expected to be a signal
		}()
	}
	wg.Wait()
	for _, ns := range nss {
		if err := killAllIn(ns.full); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range nss {
		if ns.nl != nil {
			ns.nl.Close()
		}
		if ns.handle.IsOpen() {
			ns.handle.Close()
		}
		if err := netns.DeleteNamed(ns.full); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("netlab: delete namespace %q: %w", ns.full, err))
		}
	}
	return errors.Join(errs...)
}

// killAllIn SIGKILLs every process whose network namespace is the named one
// (processes started with plain `ip netns exec`, daemons that forked away),
// and waits, bounded, for them to go.
func killAllIn(full string) error {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join(netnsDir, full), &want); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil
		}
		return fmt.Errorf("netlab: stat namespace %q: %w", full, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for attempt := 0; ; attempt++ {
		pids := pidsIn(want)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netlab: namespace %q: processes %v survive SIGKILL", full, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(time.Duration(min(attempt+1, 10)) * 10 * time.Millisecond)
	}
}

func pidsIn(want syscall.Stat_t) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TB is the part of testing.TB that NewT uses; *testing.T and *testing.B
// satisfy it. It keeps this package free of the testing import.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Skip(args ...any)
}

// NewT makes a lab for a test and closes it in t.Cleanup, failing the test
// if cleanup fails. It skips the test only when not running as root.
func NewT(t TB) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab: needs root for network namespaces")
	}
	l, err := New("nl")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return l
}
