package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

var journeys = []string{"local-lab", "hybrid", "terragrunt", "packer", "discovery-selfhosted"}

func terraformBin(t *testing.T) string {
	t.Helper()
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		tf = "terraform"
	}
	p, err := exec.LookPath(tf)
	if err != nil {
		t.Fatalf("terraform not found (%v); install it or set TF_ACC_TERRAFORM_PATH", err)
	}
	return p
}

func TestExamplesFormatted(t *testing.T) {
	tf := terraformBin(t)
	for _, j := range journeys {
		dir := filepath.Join("../../examples", j)
		if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
			t.Errorf("examples/%s has no README.md", j)
		}
		if out, err := exec.Command(tf, "fmt", "-check", "-recursive", "-diff", "-no-color", dir).CombinedOutput(); err != nil {
			t.Errorf("terraform fmt -check examples/%s: %v\n%s", j, err, out)
		}
	}
	t.Run("terragrunt", func(t *testing.T) {
		tg := terragruntBin(t)
		cmd := exec.Command(tg, "hclfmt", "--check")
		cmd.Dir = "../../examples/terragrunt"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("terragrunt hclfmt --check in examples/terragrunt: %v\n%s", err, out)
		}
	})
	t.Run("packer", func(t *testing.T) {
		packer, err := exec.LookPath("packer")
		if err != nil {
			t.Skip("packer is not installed (apt-get install packer)")
		}
		// One template per directory: hcloud/ (a plugin) and qemu/ (built in).
		for _, d := range []string{"hcloud", "qemu"} {
			if out, err := exec.Command(packer, "fmt", "-check", "-diff", "../../examples/packer/"+d).CombinedOutput(); err != nil {
				t.Errorf("packer fmt -check examples/packer/%s: %v\n%s", d, err, out)
			}
		}
		// The qemu template needs nothing but Packer itself: validate it
		// (the build is tests/packer).
		key := filepath.Join(t.TempDir(), "id")
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
			t.Skipf("ssh-keygen: %v: %s", err, out)
		}
		cmd := exec.Command(packer, "validate", "-var", "source_image=/dev/null", "-var", "seed_image=/dev/null", "-var", "tap=tap0",
			"-var", "ssh_host=203.0.113.50", "-var", "ssh_private_key_file="+key, "-var", "agent_sha256=0", "-var", "agent_binary="+key, "../../examples/packer/qemu")
		cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("packer validate examples/packer/qemu: %v\n%s", err, out)
		}
	})
}

// meshspanRequirement is what examples/terragrunt/root.hcl generates into
// each unit; the test writes it itself, standing in for terragrunt.
const meshspanRequirement = `terraform {
  required_providers {
    meshspan = {
      source  = "meshspan/meshspan"
      version = "~> 0.1"
    }
  }
}
`

// TestExamplesValidate runs terraform validate on every example whose
// providers can be installed here (only meshspan, from make install's mirror).
func TestExamplesValidate(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC not set: validation installs the provider from make install's mirror (make test sets it)")
	}
	if os.Getenv("TF_CLI_CONFIG_FILE") == "" {
		t.Fatal("TF_CLI_CONFIG_FILE is not set: run `make install` and export TF_CLI_CONFIG_FILE=bin/terraformrc")
	}
	tf := terraformBin(t)
	for _, c := range []struct {
		dir        string
		terragrunt bool
		node       bool // includes node.hcl, which generates node-variables.tf
	}{
		{"local-lab", false, false},
		{"discovery-selfhosted", false, false},
		{"terragrunt/cluster", true, false},
		{"terragrunt/metal", true, true},
	} {
		t.Run(c.dir, func(t *testing.T) {
			work := t.TempDir()
			tfs, _ := filepath.Glob(filepath.Join("../../examples", c.dir, "*.tf"))
			if len(tfs) == 0 {
				t.Fatalf("examples/%s has no .tf files", c.dir)
			}
			for _, f := range tfs {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(work, filepath.Base(f)), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if c.terragrunt {
				if err := os.WriteFile(filepath.Join(work, "meshspan_provider.tf"), []byte(meshspanRequirement), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if c.node {
				b, err := os.ReadFile("../../examples/terragrunt/node-variables.tf")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(work, "node_variables.tf"), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, args := range [][]string{{"init", "-input=false", "-backend=false", "-no-color"}, {"validate", "-no-color"}} {
				cmd := exec.Command(tf, args...)
				cmd.Dir = work
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("terraform %s in examples/%s: %v\n%s", args[0], c.dir, err, out)
				}
			}
		})
	}
}

func agentBin(t *testing.T) string {
	t.Helper()
	p, err := agentbin.Path()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// unitCommand reads a unit's ExecStart and rewrites it for this test: the
// agent binary, loopback listen addresses and paths under dir.
func unitCommand(t *testing.T, unit, instance string, replace map[string]string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../examples/discovery-selfhosted/systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := lab.ExecStart(strings.ReplaceAll(string(b), "%i", instance))
	if err != nil {
		t.Fatal(err)
	}
	// Longest first, so "/etc/x/tls/" wins over "/etc/x/" whatever the
	// map's order; a Replacer also never rewrites what it already wrote.
	froms := slices.Collect(maps.Keys(replace))
	slices.SortFunc(froms, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, from := range froms {
		pairs = append(pairs, from, replace[from])
	}
	r := strings.NewReplacer(pairs...)
	for i, a := range argv {
		argv[i] = r.Replace(a)
	}
	return argv
}

func startService(t *testing.T, argv []string, addr string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	log, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("%s exited before listening on %s:\n%s", strings.Join(argv, " "), addr, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("%s not listening on %s after 10s:\n%s", strings.Join(argv, " "), addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const testCluster = "dGVzdC1jbHVzdGVyLWlkLWZvci1leGFtcGxlcy0wMDA="

// TestDiscoverySelfhostedTLS follows the example's single-replica path:
// tls/make-ca.sh, the unit's command line with the certificates it made,
// and a client that trusts only ca.pem.
func TestDiscoverySelfhostedTLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed by tls/make-ca.sh")
	}
	dir := t.TempDir()
	script, err := os.ReadFile("../../examples/discovery-selfhosted/tls/make-ca.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "make-ca.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", filepath.Join(dir, "make-ca.sh"), "discovery.example.com", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("make-ca.sh: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "allowed-clusters"), []byte("# ours\n"+testCluster+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	argv := unitCommand(t, "meshspan-discovery.service", "", map[string]string{
		"/usr/local/bin/meshspan-agent": agentBin(t),
		"[::]:443":                      addr,
		"127.0.0.1:2122":                "127.0.0.1:0",
		"/etc/meshspan-discovery/tls/":  dir + "/",
		"/etc/meshspan-discovery/":      dir + "/",
		"/var/lib/meshspan-discovery/":  dir + "/",
	})
	startService(t, argv, addr)

	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("ca.pem holds no certificate")
	}
	hello := func(serverName, cluster string) (*pb.HelloResponse, error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: serverName})))
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return pb.NewClusterClient(conn).Hello(ctx, &pb.HelloRequest{ClusterId: cluster, ClientVersion: "examples-test"})
	}
	resp, err := hello("discovery.example.com", testCluster)
	if err != nil {
		t.Fatalf("Hello over TLS trusting ca.pem: %v", err)
	}
	if ip, ok := netip.AddrFromSlice(resp.GetClientIp()); !ok || ip.Unmap() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("Hello saw the client as %v, want 127.0.0.1", resp.GetClientIp())
	}
	if _, err := hello("other.example.com", testCluster); err == nil {
		t.Error("the certificate verified for a name make-ca.sh did not put in it")
	}
	if _, err := hello("discovery.example.com", "c3RyYW5nZXJzLWNsdXN0ZXItbm90LWFkbWl0dGVkLTA="); err == nil {
		t.Error("a cluster missing from allowed-clusters was served")
	}
}

// TestDiscoverySelfhostedRedis follows the scale-out path: two replicas
// from the template unit on one Redis; a write through replica 1 is listed
// through replica 2.
func TestDiscoverySelfhostedRedis(t *testing.T) {
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	rcmd := exec.Command(redis, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := rcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rcmd.Process.Kill(); rcmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not open its socket in 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(dir, "allowed-clusters"), []byte(testCluster+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := agentBin(t)
	var addrs []string
	for _, i := range []string{"1", "2"} {
		addr := freePort(t)
		argv := unitCommand(t, "meshspan-discovery@.service", i, map[string]string{
			"/usr/local/bin/meshspan-agent": agent,
			"127.0.0.1:300" + i:             addr,
			"127.0.0.1:212" + i:             "127.0.0.1:0",
			"/run/redis/redis-server.sock":  sock,
			"/etc/meshspan-discovery/":      dir + "/",
		})
		startService(t, argv, addr)
		addrs = append(addrs, addr)
	}
	client := func(addr string) pb.ClusterClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pb.NewClusterClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data := []byte("sealed affiliate data (opaque to the service)")
	if _, err := client(addrs[0]).AffiliateUpdate(ctx, &pb.AffiliateUpdateRequest{
		ClusterId: testCluster, AffiliateId: "node-1", AffiliateData: data, Ttl: durationpb.New(5 * time.Minute),
	}); err != nil {
		t.Fatalf("AffiliateUpdate through replica 1: %v", err)
	}
	list, err := client(addrs[1]).List(ctx, &pb.ListRequest{ClusterId: testCluster})
	if err != nil {
		t.Fatalf("List through replica 2: %v", err)
	}
	if len(list.GetAffiliates()) != 1 || list.GetAffiliates()[0].GetId() != "node-1" || string(list.GetAffiliates()[0].GetData()) != string(data) {
		t.Fatalf("replica 2 lists %v, want node-1 with the data written through replica 1", list.GetAffiliates())
	}
}

// TestDiscoverySelfhostedUnits checks the example's systemd units with
// systemd-analyze verify (unknown keys, bad values), pointing ExecStart at
// the real agent binary.
func TestDiscoverySelfhostedUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	agent := agentBin(t)
	dir := t.TempDir()
	for _, u := range []struct{ src, dst string }{
		{"meshspan-discovery.service", "meshspan-discovery.service"},
		{"meshspan-discovery@.service", "meshspan-discovery@1.service"},
	} {
		b, err := os.ReadFile(filepath.Join("../../examples/discovery-selfhosted/systemd", u.src))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, u.dst)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/meshspan-agent", agent)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", path).CombinedOutput()
		// verify exits 0 on many problems; anything it prints about our
		// file is one.
		var ours []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, path) {
				ours = append(ours, l)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u.src, err, out)
		}
	}
}
