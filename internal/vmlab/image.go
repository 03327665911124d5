// Package vmlab boots real Debian machines under QEMU as hosts of a netlab
// lab: each VM is one more host on a lab switch, through a tap device inside
// the switch's namespace (no user-mode networking, no route out of the lab).
// The disk is a stock Debian bookworm built from Debian's packages with
// debootstrap (nothing of meshspan inside), cached outside the clone and
// keyed by its package list; every boot writes to its own qcow2 overlay.
// Machines get their user_data through a NoCloud seed, as clouds deliver it,
// and the test talks to them through the QEMU guest agent, a channel that
// does not depend on the network or the host firewall under test.
package vmlab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Suite is the Debian release of the image.
const Suite = "bookworm"

// Packages are installed into the image on top of debootstrap's minbase.
// python3-cffi-backend is a virtual dependency of cloud-init that
// debootstrap does not resolve on its own. The rest is what a Debian cloud
// image has that the tests use: systemd, cloud-init, nftables, WireGuard
// tools, the guest agent, and python3 (cloud-init's) for transfers.
var Packages = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "ifupdown", "netbase",
	"nftables", "wireguard-tools", "cloud-init", "python3-cffi-backend",
	"qemu-guest-agent", "curl", "ca-certificates", "iputils-ping", "procps", "tcpdump",
}

// imageSize is the raw disk's size; overlays grow on write only.
const imageSize = "3G"

// Kernel is the kernel the VMs boot (the host's linux-image-amd64 files,
// not the kernel the host runs).
type Kernel struct {
	Version string // e.g. 6.1.0-48-amd64
	Vmlinuz string
	Initrd  string
	Modules string // /lib/modules/<Version>
}

// Image is a built, cached disk image.
type Image struct {
	Path   string // raw ext4 root file system
	Kernel Kernel
	// BuildTime is how long this call took to provide the image: the cold
	// build, or only the cache check when it was cached.
	BuildTime time.Duration
	Cached    bool
}

// Missing names the apt package that provides each tool the VM lab needs.
var requiredTools = []struct{ tool, pkg string }{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"qemu-img", "qemu-utils"},
	{"debootstrap", "debootstrap"},
	{"mkfs.vfat", "dosfstools"},
	{"mcopy", "mtools"},
	{"mkfs.ext4", "e2fsprogs"},
	{"ip", "iproute2"},
}

// Preflight says what is missing to boot VMs here, naming the apt packages
// to install, or returns nil.
func Preflight() error {
	var pkgs, tools []string
	for _, t := range requiredTools {
		if _, err := exec.LookPath(t.tool); err != nil {
			tools = append(tools, t.tool)
			pkgs = append(pkgs, t.pkg)
		}
	}
	if _, err := FindKernel(); err != nil {
		tools = append(tools, "a Debian kernel in /boot with the WireGuard module")
		pkgs = append(pkgs, "linux-image-amd64")
	}
	if len(pkgs) > 0 {
		return fmt.Errorf("vmlab: missing %s; install with: apt-get install -y --no-install-recommends %s",
			strings.Join(tools, ", "), strings.Join(pkgs, " "))
	}
	if os.Geteuid() != 0 {
		return errors.New("vmlab: needs root (network namespaces, tap devices, debootstrap); run it with sudo")
	}
	return nil
}

// FindKernel picks the newest kernel in /boot whose modules include
// WireGuard and that has an initrd.
func FindKernel() (Kernel, error) {
	vms, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(vms)))
	for _, v := range vms {
		ver := strings.TrimPrefix(filepath.Base(v), "vmlinuz-")
		k := Kernel{Version: ver, Vmlinuz: v, Initrd: "/boot/initrd.img-" + ver, Modules: "/lib/modules/" + ver}
		if _, err := os.Stat(k.Initrd); err != nil {
			continue
		}
		wgs, _ := filepath.Glob(filepath.Join(k.Modules, "kernel/drivers/net/wireguard/wireguard.ko*"))
		if len(wgs) == 0 {
			continue
		}
		return k, nil
	}
	return Kernel{}, errors.New("vmlab: no kernel in /boot with an initrd and the WireGuard module; apt-get install -y --no-install-recommends linux-image-amd64")
}

// CacheDir is where images are kept: outside the clone, so a fresh clone
// (CI's) reuses them.
func CacheDir() string {
	if d := os.Getenv("MESHSPAN_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "meshspan")
}

// ImageKey identifies an image by what is in it: the suite, the package
// list, the kernel whose modules it carries, and the image's own files.
func ImageKey(suite string, pkgs []string, kernelVersion string, files map[string]string) string {
	p := append([]string(nil), pkgs...)
	sort.Strings(p)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", suite, strings.Join(p, "\n"), kernelVersion)
	for _, name := range sortedKeys(files) {
		fmt.Fprintf(h, "%s\n%d\n%s", name, len(files[name]), files[name])
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// BuildImage returns the cached image, building it first when there is
// none. The build happens in a temporary directory renamed into place at
// the end, under a lock, so a killed build never leaves a half image and two
// concurrent callers build once. log receives debootstrap's output.
func BuildImage(ctx context.Context, log io.Writer) (*Image, error) {
	start := time.Now()
	k, err := FindKernel()
	if err != nil {
		return nil, err
	}
	cache := CacheDir()
	dir := filepath.Join(cache, "vm-"+ImageKey(Suite, Packages, k.Version, imageFiles))
	img := &Image{Path: filepath.Join(dir, "root.img"), Kernel: k}
	if _, err := os.Stat(img.Path); err == nil {
		img.Cached, img.BuildTime = true, time.Since(start)
		return img, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("vmlab: image cache: %w", err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vmlab: image lock: %w", err)
	}
	defer lock.Close()
	if err := flock(ctx, lock); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(img.Path); err == nil { // built by whoever held the lock
		img.Cached, img.BuildTime = true, time.Since(start)
		return img, nil
	}
	// Leftovers of killed builds (debootstrap may have left /proc and
	// /sys mounted inside: unmount before removing).
	old, _ := filepath.Glob(dir + ".tmp-*")
	for _, o := range old {
		unmountUnder(o)
		os.RemoveAll(o)
	}
	tmp, err := os.MkdirTemp(cache, filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("vmlab: image build directory: %w", err)
	}
	defer func() {
		unmountUnder(tmp)
		os.RemoveAll(tmp)
	}()
	if err := build(ctx, tmp, k, log); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("vmlab: image: %w", err)
	}
	img.BuildTime = time.Since(start)
	return img, nil
}

func flock(ctx context.Context, f *os.File) error {
	deadline := time.Now().Add(20 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("vmlab: lock %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vmlab: another image build has held %s for 20 minutes", f.Name())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// imageFiles are the image's own configuration, as a cloud image ships it:
// its datasource (NoCloud: the seed disk) and its default locale (C.UTF-8 is
// built into libc; minbase has no locales package to generate another).
var imageFiles = map[string]string{
	"etc/cloud/cloud.cfg.d/90_datasource.cfg": "# This image boots from a NoCloud seed (a CIDATA disk).\ndatasource_list: [ NoCloud, None ]\n",
	"etc/cloud/cloud.cfg.d/91_locale.cfg":     "locale: C.UTF-8\n",
	"etc/default/locale":                      "LANG=C.UTF-8\n",
	"etc/hostname":                            "debian\n",
	"etc/fstab":                               "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
}

func build(ctx context.Context, dir string, k Kernel, log io.Writer) error {
	mirror, err := DebianMirror()
	if err != nil {
		return err
	}
	root := filepath.Join(dir, "root")
	fmt.Fprintf(log, "vmlab: debootstrap %s from %s into %s\n", Suite, mirror, root)
	args := []string{"--variant=minbase", "--include=" + strings.Join(Packages, ","), Suite, root, mirror}
	if err := run(ctx, log, "debootstrap", args...); err != nil {
		return fmt.Errorf("vmlab: debootstrap: %w (its log: %s/debootstrap/debootstrap.log)", err, root)
	}
	// minbase has no /lib/modules: create it first, or cp would put the
	// modules one level too high (and vfat, hence the seed, would not mount).
	if err := os.MkdirAll(filepath.Join(root, "lib/modules"), 0o755); err != nil {
		return err
	}
	if err := run(ctx, log, "cp", "-a", k.Modules, filepath.Join(root, "lib/modules", k.Version)); err != nil {
		return err
	}
	for name, body := range imageFiles {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	// No machine identity in the image: systemd makes one on first boot.
	os.WriteFile(filepath.Join(root, "etc/machine-id"), nil, 0o444)
	os.RemoveAll(filepath.Join(root, "var/cache/apt/archives"))
	os.MkdirAll(filepath.Join(root, "var/cache/apt/archives/partial"), 0o755)
	raw := filepath.Join(dir, "root.img")
	if err := run(ctx, log, "mkfs.ext4", "-q", "-L", "root", "-d", root, "-F", raw, imageSize); err != nil {
		return err
	}
	return os.RemoveAll(root)
}

func run(ctx context.Context, log io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vmlab: %s: %w", name, err)
	}
	return nil
}

// DebianMirror reads the Debian archive URL from this machine's apt
// sources (deb822 .sources files or sources.list): the image comes from
// wherever this machine gets its own packages.
func DebianMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	list, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(files, list...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if u := mirrorFrom(string(b), strings.HasSuffix(f, ".sources")); u != "" {
			return u, nil
		}
	}
	return "", errors.New("vmlab: no Debian " + Suite + " archive in /etc/apt/sources.list or /etc/apt/sources.list.d; add one (the image is built from it)")
}

// mirrorFrom finds the first source of Suite's main component.
func mirrorFrom(text string, deb822 bool) string {
	if deb822 {
		for _, stanza := range strings.Split(text, "\n\n") {
			f := map[string]string{}
			sc := bufio.NewScanner(strings.NewReader(stanza))
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "#") {
					continue
				}
				if k, v, ok := strings.Cut(line, ":"); ok {
					f[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
			if strings.EqualFold(f["enabled"], "no") || !hasWord(f["types"], "deb") ||
				!hasWord(f["suites"], Suite) || !hasWord(f["components"], "main") {
				continue
			}
			if uris := strings.Fields(f["uris"]); len(uris) > 0 {
				return uris[0]
			}
		}
		return ""
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) > 1 && strings.HasPrefix(w[1], "[") { // options
			i := 1
			for i < len(w) && !strings.HasSuffix(w[i], "]") {
				i++
			}
			w = append(w[:1], w[min(i+1, len(w)):]...)
		}
		if len(w) >= 4 && w[0] == "deb" && w[2] == Suite && hasWord(strings.Join(w[3:], " "), "main") {
			return w[1]
		}
	}
	return ""
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// unmountUnder lazily unmounts every mount point under dir, deepest first,
// so removing dir never reaches into a mounted /proc or /sys.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}
