package agent

import (
	"go/build"
	"slices"
	"testing"
)

// Imports point one way: the packages the agent builds on never import it,
// and the socket-marking users do not need the WireGuard device.
func TestImportsPointOneWay(t *testing.T) {
	const mod = "github.com/meshspan/terraform-provider-meshspan/"
	for _, c := range []struct{ dir, forbidden string }{
		{"../natpath", mod + "internal/agent"},
		{"../natpath/drive", mod + "internal/agent"},
		{"../mesh", mod + "internal/agent"},
		{"../relay", mod + "internal/agent"},
		{"../discovery", mod + "internal/wg"},
		{"../relay", mod + "internal/wg"},
	} {
		p, err := build.ImportDir(c.dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(p.Imports, mod+"internal/natpath") && !slices.Contains(p.Imports, mod+"internal/config") &&
			!slices.Contains(p.Imports, "net/netip") {
			t.Fatalf("%s: imports %v do not look like the package's (the check would pass vacuously)", c.dir, p.Imports)
		}
		if slices.Contains(p.Imports, c.forbidden) {
			t.Errorf("%s imports %s", p.ImportPath, c.forbidden)
		}
	}
}
