package clusterkey

import (
	"encoding/base64"
	"net"
	"testing"
)

// Vectors from the fact sheet (Talos ula_test.go / identity_test.go).
func TestMeshPrefixAndNodeAddressMatchTalos(t *testing.T) {
	prefix := MeshPrefix("8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo=")
	if got, want := prefix.String(), "fd7f:175a:b97c:5602::/64"; got != want {
		t.Fatalf("MeshPrefix = %s, want %s", got, want)
	}
	mac, _ := net.ParseMAC("2e:1a:b6:53:81:69")
	addr, err := NodeAddress(prefix, mac)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := addr.String(), "fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169"; got != want {
		t.Fatalf("NodeAddress = %s, want %s", got, want)
	}
}

func TestNodeAddressRejectsBadMAC(t *testing.T) {
	if _, err := NodeAddress(MeshPrefix("x"), net.HardwareAddr{1, 2, 3}); err == nil {
		t.Fatal("3-byte MAC accepted")
	}
}

func TestGenerate(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate()
	if a == b {
		t.Fatal("two generated secrets are equal")
	}
	for _, s := range []string{a.ID, a.Secret} {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != Size || len(s) != 44 {
			t.Fatalf("%q: not %d bytes of padded base64", s, Size)
		}
	}
	psk, err := PresharedKey(a.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if psk.String() != a.Secret {
		t.Fatalf("PSK %s differs from the secret %s", psk, a.Secret)
	}
	if _, err := Key("c2hvcnQ="); err == nil {
		t.Fatal("short secret accepted")
	}
	// Go's base64 decoder skips line breaks, so these decode to the same
	// bytes; but they are other strings, and the ID's text derives the mesh
	// prefix. Exactly 44 characters, nothing else.
	for _, s := range []string{a.Secret + "\n", a.Secret + "\r\n", a.Secret[:10] + "\n" + a.Secret[10:], " " + a.Secret} {
		if _, err := Key(s); err == nil {
			t.Errorf("secret %q accepted", s)
		}
		if err := CheckID(s); err == nil {
			t.Errorf("id %q accepted", s)
		}
	}
	if err := CheckID(a.ID); err != nil {
		t.Error(err)
	}
	if err := CheckID("8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="); err != nil {
		t.Errorf("URL-safe ID (Talos before 1.14): %v", err)
	}
}
