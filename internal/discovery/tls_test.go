package discovery

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and returns its PEM.
func writeCert(t *testing.T, dir, cn string) (certPath, keyPath, certPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, []byte(certPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, certPEM
}

// TestTLSClients: clients reach a TLS service through https:// with a
// private CA, and a client that does not trust it gets nowhere.
func TestTLSClients(t *testing.T) {
	certPath, keyPath, caPEM := writeCert(t, t.TempDir(), "discovery")
	svc := startService(t, ServiceConfig{RateLimitRPS: -1, TLSCert: certPath, TLSKey: keyPath})
	url := "https://" + svc.Addr().String() + "/"
	secret := newSecret(t)
	a := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "a", TTL: time.Minute, CACertificatePEM: caPEM})
	b := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "b", TTL: time.Minute, CACertificatePEM: caPEM})
	stranger := runClient(t, ClientOptions{Endpoints: []string{url}, ClusterID: "c", ClusterSecret: secret, AffiliateID: "s", TTL: time.Minute})
	a.SetLocal(testAffiliate("", 1), nil)
	b.SetLocal(testAffiliate("", 2), nil)
	stranger.SetLocal(testAffiliate("", 3), nil)
	eventually(t, 10*time.Second, "TLS clients see each other", func() bool {
		return len(a.Affiliates()) == 1 && len(b.Affiliates()) == 1
	})
	if len(stranger.Affiliates()) != 0 || stranger.ObservedAddress().IsValid() {
		t.Fatal("a client without the CA got through")
	}
}

func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, _ := writeCert(t, dir, "first")
	r, err := newCertReloader(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	r.interval = 0
	first, _ := r.get(nil)
	// A different mtime is what triggers the reload; make it unmistakable.
	writeCert(t, dir, "second")
	later := time.Now().Add(time.Minute)
	os.Chtimes(certPath, later, later)
	second, _ := r.get(nil)
	leaf, err := x509.ParseCertificate(second.Certificate[0])
	if err != nil || leaf.Subject.CommonName != "second" || first == second {
		t.Fatalf("after rewrite the served certificate is %v (%v)", leaf.Subject, err)
	}
	// A broken pair keeps the last good one.
	os.WriteFile(keyPath, []byte("garbage"), 0o600)
	even := later.Add(time.Minute)
	os.Chtimes(keyPath, even, even)
	if c, _ := r.get(nil); c != second {
		t.Fatal("a broken key replaced the good certificate")
	}
}
