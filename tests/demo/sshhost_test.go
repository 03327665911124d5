package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// sshLab is a switch with an admin namespace, where Terraform runs, and
// bare-metal hosts that run sshd: what a journey's remote-exec provisioners
// reach over SSH. A host sees the machine's own files, but /etc and
// /usr/local are overlays whose writes stay in the host's own mount
// namespace, /tmp and /run are empty, and systemctl only records its
// arguments, so a bundle run as root changes nothing outside.
type sshLab struct {
	t     *testing.T
	lab   *netlab.Lab
	sw    *netlab.Switch
	admin *netlab.NS
	dir   string
	key   string // private key file; its public half is authorized on every host
	agent string // SSH_AUTH_SOCK of an ssh-agent holding key
	hosts map[string]*sshHost
	// adminAddrs are the admin namespace's address in each subnet used.
	adminAddrs map[netip.Prefix]netip.Addr
}

type sshHost struct {
	name string
	addr netip.Addr
	dir  string
	sshd *netlab.Proc
}

func newSSHLab(t *testing.T, subnets ...netip.Prefix) *sshLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"/usr/sbin/sshd", "ssh-keygen", "ssh-agent", "ssh-add", "scp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install -y openssh-server)", tool)
		}
	}
	l := &sshLab{t: t, lab: netlab.NewT(t), dir: t.TempDir(), hosts: map[string]*sshHost{}, adminAddrs: map[netip.Prefix]netip.Addr{}}
	var err error
	if l.sw, err = l.lab.Switch("lan"); err != nil {
		t.Fatal(err)
	}
	if l.admin, err = l.lab.Host("admin"); err != nil {
		t.Fatal(err)
	}
	var addrs []netip.Prefix
	for _, s := range subnets {
		a := s.Masked().Addr().Next()
		l.adminAddrs[s.Masked()] = a
		addrs = append(addrs, netip.PrefixFrom(a, s.Bits()))
	}
	if err := l.sw.Attach(l.admin, "eth0", addrs...); err != nil {
		t.Fatal(err)
	}
	l.key = filepath.Join(l.dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshspan-test", "-f", l.key)
	// An agent too: connection blocks without private_key use it.
	l.agent = filepath.Join(l.dir, "agent.sock")
	ag := exec.Command("ssh-agent", "-D", "-a", l.agent)
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Process.Kill(); ag.Wait() })
	if err := pollFor(10*time.Second, func() error { _, err := os.Stat(l.agent); return err }); err != nil {
		t.Fatalf("ssh-agent did not create %s: %v", l.agent, err)
	}
	add := exec.Command("ssh-add", l.key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+l.agent)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
	return l
}

// sshHostSetup runs as the host's first process, in the private mount
// namespace `ip netns exec` gives it, then becomes sshd.
const sshHostSetup = `set -eu
d=$1; shift
mount -t tmpfs -o mode=0700 sshhost "$d/mnt"
for p in etc usr/local; do
  n=$(echo "$p" | tr / _)
  mkdir -p "$d/mnt/$n.upper" "$d/mnt/$n.work"
  mount -t overlay overlay -o "lowerdir=/$p,upperdir=$d/mnt/$n.upper,workdir=$d/mnt/$n.work" "/$p"
done
if [ -n "${MESHSPAN_TEST_PREINSTALL:-}" ]; then
  mkdir -p /usr/local/bin && cp "$MESHSPAN_TEST_PREINSTALL" /usr/local/bin/meshspan-agent
fi
mount --bind "$d/systemctl" /usr/bin/systemctl
# No path to the machine's systemd or D-Bus, and nothing left in its /tmp;
# the host's own files (under /tmp) move to /run/sshhost.
mount -t tmpfs -o mode=0755 run /run
mkdir -p /run/sshd /run/sshhost
mount --bind "$d" /run/sshhost
mount -t tmpfs -o mode=1777 tmp /tmp
exec /usr/sbin/sshd -D -e -f /run/sshhost/sshd_config
`

// host starts a bare-metal host at addr with sshd on port 22. preinstall,
// if set, is put at /usr/local/bin/meshspan-agent first (an image with the
// agent baked in).
func (l *sshLab) host(name string, addr netip.Addr, preinstall string) *sshHost {
	t := l.t
	t.Helper()
	var subnet netip.Prefix
	for s := range l.adminAddrs {
		if s.Contains(addr) {
			subnet = s
		}
	}
	if !subnet.IsValid() {
		t.Fatalf("%s is in none of the lab's subnets", addr)
	}
	ns, err := l.lab.Host(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.sw.Attach(ns, "eth0", netip.PrefixFrom(addr, subnet.Bits())); err != nil {
		t.Fatal(err)
	}
	h := &sshHost{name: name, addr: addr, dir: filepath.Join(l.dir, name)}
	for _, d := range []string{h.dir, filepath.Join(h.dir, "mnt")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(h.dir, "hostkey"))
	pub, err := os.ReadFile(l.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"authorized_keys": string(pub),
		"systemctl":       "#!/bin/sh\necho \"$*\" >> /run/sshhost/systemctl.calls\n",
		"sshd_config": strings.Join([]string{
			"ListenAddress " + addr.String(),
			"Port 22",
			"HostKey /run/sshhost/hostkey",
			"AuthorizedKeysFile /run/sshhost/authorized_keys",
			"PermitRootLogin prohibit-password",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no",
			"PidFile none",
			"LogLevel VERBOSE",
			// MaxStartups: Terraform opens several sessions per provisioner.
			"MaxStartups 100",
			"MaxSessions 100",
			"",
		}, "\n"),
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(h.dir, f), []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "-c", sshHostSetup, "sshhost", h.dir)
	cmd.Env = append(os.Environ(), "MESHSPAN_TEST_PREINSTALL="+preinstall)
	log, err := os.Create(filepath.Join(h.dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if h.sshd, err = ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	err = pollFor(15*time.Second, func() error {
		if done, err := h.sshd.Exited(); done {
			return fmt.Errorf("%w: sshd exited: %v", errStop, err)
		}
		return l.admin.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(addr.String(), "22"), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	})
	if err != nil {
		b, _ := os.ReadFile(log.Name())
		t.Fatalf("sshd on %s: %v\n%s", name, err, b)
	}
	l.hosts[name] = h
	return h
}

// file reads a file as the host sees it (through its sshd's root).
func (h *sshHost) file(path string) ([]byte, os.FileInfo, error) {
	p := fmt.Sprintf("/proc/%d/root%s", h.sshd.PID(), path)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(p)
	return b, fi, err
}

// systemctl is what the host's systemctl was asked, one call a line.
func (h *sshHost) systemctl() string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "systemctl.calls"))
	return string(b)
}

func (h *sshHost) log() string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "sshd.log"))
	return string(b)
}

// serve serves the file over HTTP from the admin namespace at
// http://<admin address in subnet>:8080/meshspan-agent.
func (l *sshLab) serve(subnet netip.Prefix, file string) string {
	t := l.t
	addr := net.JoinHostPort(l.adminAddrs[subnet.Masked()].String(), "8080")
	var ln net.Listener
	if err := l.admin.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /meshspan-agent", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + addr + "/meshspan-agent"
}

// inAdmin runs a command in the admin namespace with env added, bounded by
// ctx, and returns its combined output.
func (l *sshLab) inAdmin(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.admin.FullName(), name}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "SSH_AUTH_SOCK="+l.agent), env...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var errStop = errors.New("stop polling")

// pollFor calls f until it returns nil, an error wrapping errStop, or the
// time is up.
func pollFor(limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil || errors.Is(err, errStop) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
