package discovery

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// discovery.caCertificate is trusted in addition to the system roots, as the
// docs say, not instead of them. The system roots are read once per process,
// so the check runs in a child process whose system roots (SSL_CERT_FILE)
// hold one CA while the config names another.
func TestCACertificateAddsToSystemRoots(t *testing.T) {
	if sysCA := os.Getenv("MESHSPAN_TEST_SYSTEM_CA"); sysCA != "" {
		extra, _ := os.ReadFile(os.Getenv("MESHSPAN_TEST_EXTRA_CA"))
		c, err := NewClient(ClientOptions{Endpoints: []string{"https://127.0.0.1:1/"}, ClusterID: "c", ClusterSecret: newSecret(t),
			AffiliateID: "a", TTL: time.Minute, CACertificatePEM: string(extra)})
		if err != nil {
			t.Fatal(err)
		}
		roots := c.subs[0].opts.TLSConfig().RootCAs
		for name, path := range map[string]string{"system": sysCA, "caCertificate": os.Getenv("MESHSPAN_TEST_EXTRA_CA")} {
			b, _ := os.ReadFile(path)
			blk, _ := pem.Decode(b)
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
				t.Errorf("a server certificate from the %s CA is not trusted: %v", name, err)
			}
		}
		return
	}
	sys, _, _ := writeCert(t, t.TempDir(), "system-ca")
	extra, _, _ := writeCert(t, t.TempDir(), "private-ca")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCACertificateAddsToSystemRoots$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+sys, "SSL_CERT_DIR="+filepath.Dir(sys),
		"MESHSPAN_TEST_SYSTEM_CA="+sys, "MESHSPAN_TEST_EXTRA_CA="+extra)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
