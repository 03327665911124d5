package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// PrivateDirs get a fresh tmpfs in the private mount namespace of every
// process started with NS.Start, so userspace WireGuard UAPI sockets and
// agent state of one node never meet another's.
var PrivateDirs = []string{"/run/wireguard", "/run/meshspan"}

// outputLimit bounds the output a Proc keeps in memory (the latest bytes).
const outputLimit = 1 << 20

// Exec runs a command inside the namespace (ip netns exec) and returns its
// combined output. The context bounds its run time.
func (n *NS) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.full, name}, args...)...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netlab: %s: %s %v: %w: %s", n.name, name, args, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Start runs cmd inside the namespace, in a private mount namespace where
// each of PrivateDirs is a fresh tmpfs. cmd's Env, Dir, Stdin, Stdout and
// Stderr are honoured; when Stdout and Stderr are both nil the combined
// output is kept (the last MiB) and returned by Proc.Output. The process
// keeps cmd's PID (the wrapper execs it) and is stopped by Lab.Close.
func (n *NS) Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.Err != nil {
		return nil, fmt.Errorf("netlab: %s: start: %w", n.name, cmd.Err)
	}
	if cmd.Process != nil {
		return nil, fmt.Errorf("netlab: %s: start %s: already started", n.name, cmd.Path)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: start: need iproute2's ip: %w", n.name, err)
	}
	// `ip netns exec` already unshares the mount namespace (and makes it a
	// slave of the host's), so these mounts stay private to this process.
	script := `for d in` + shellWords(PrivateDirs) + `; do mkdir -p "$d" && mount -t tmpfs -o mode=0755 netlab "$d" || exit 125; done; exec "$@"`
	target := cmd.Path
	args := append([]string{"ip", "netns", "exec", n.full, "sh", "-c", script, "netlab", target}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = ip, args
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Dies with us, so an interrupted test or demo leaves no agent behind.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL

	p := &Proc{ns: n, cmd: cmd, name: target, done: make(chan struct{})}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		p.out = NewTailBuffer(outputLimit)
		cmd.Stdout, cmd.Stderr = p.out, p.out
	}

	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	if n.lab.closed {
		return nil, fmt.Errorf("netlab: %s: start %s: lab is closed", n.name, target)
	}
	if err := p.startLocked(); err != nil {
		return nil, fmt.Errorf("netlab: %s: start %s: %w", n.name, target, err)
	}
	n.lab.procs = append(n.lab.procs, p)
	return p, nil
}

// startLocked forks on the spawner thread (see spawn).
func (p *Proc) startLocked() error {
	if err := spawn(p.cmd); err != nil {
		return err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return nil
}

func shellWords(ws []string) string {
	var b bytes.Buffer
	for _, w := range ws {
		b.WriteString(" '")
		b.WriteString(w) // fixed paths without quotes
		b.WriteString("'")
	}
	return b.String()
}

// Proc is a process started in a namespace.
type Proc struct {
	ns   *NS
	cmd  *exec.Cmd
	name string
	out  *TailBuffer
	done chan struct{}
	err  error
}

// PID of the process (the command itself, not a wrapper).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited, and its exit error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Output returns the captured output so far (nil when cmd had its own
// Stdout or Stderr).
func (p *Proc) Output() []byte {
	if p.out == nil {
		return nil
	}
	return p.out.Bytes()
}

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("netlab: %s: signal %v to %s (pid %d): %w", p.ns.name, sig, p.name, p.cmd.Process.Pid, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits (at most 5 s) for the
// process to go.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	return p.waitFor(5 * time.Second)
}

// Stop sends SIGTERM, waits up to timeout, then SIGKILL. It returns an error
// only when the process could not be ended; the exit status is Wait's.
func (p *Proc) Stop(timeout time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.waitFor(timeout) == nil {
		return nil
	}
	return p.Kill()
}

func (p *Proc) waitFor(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("netlab: %s: %s (pid %d) still running after %v", p.ns.name, p.name, p.cmd.Process.Pid, d)
	}
}

// DialContext connects from inside the namespace (the socket stays there);
// it fits ClientOptions.Dialer and http.Transport.DialContext alike.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Do runs f on a locked OS thread switched into the namespace. Sockets f
// opens stay in the namespace after Do returns; goroutines f starts run on
// other threads, outside it. Do not call Start from f.
func (n *NS) Do(f func() error) error {
	type result struct {
		err   error
		panic any
	}
	res := make(chan result, 1)
	go func() {
		// The thread is switched back and unlocked on success; if switching
		// back fails it stays locked and ends with this goroutine, so no
		// other code ever runs in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{err: fmt.Errorf("netlab: %s: do: current namespace: %w", n.name, err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			res <- result{err: fmt.Errorf("netlab: %s: do: enter namespace: %w", n.name, err)}
			return
		}
		var r result
		func() {
			defer func() { r.panic = recover() }()
			r.err = f()
		}()
		if err := netns.Set(orig); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("netlab: %s: do: restore namespace: %w", n.name, err))
			res <- r
			return
		}
		runtime.UnlockOSThread()
		res <- r
	}()
	r := <-res
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// TailBuffer keeps the last limit bytes written to it (a process's output);
// safe for concurrent use.
type TailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

// NewTailBuffer keeps the last limit bytes.
func NewTailBuffer(limit int) *TailBuffer { return &TailBuffer{limit: limit} }

func (b *TailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *TailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   = make(chan spawnReq)
)

// spawn starts cmd from one OS thread that never exits. The kernel sends
// Pdeathsig when the forking thread ends, not the process, and Go retires
// threads (createNamed throws one away per namespace), which would kill
// processes at random. The thread is fresh and locked, so it is in the
// host's namespace: Do only switches threads it keeps locked.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread()
			for r := range spawnCh {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, done: done}
	return <-done
}
