// Package agentbin gives the end-to-end suites the meshspan-agent binary they
// run: $MESHSPAN_AGENT_BIN (make test sets it to the binary it built), or one
// built once per test process as released: static and stripped, since the
// memory figures depend on it (a cgo build maps libc too).
package agentbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// Env names the variable that points at a prebuilt agent.
const Env = "MESHSPAN_AGENT_BIN"

var (
	mu    sync.Mutex
	built string // a binary this package built, removed by Remove
	path  string
	err   error
	done  bool
)

// Path returns the agent binary, building it on the first call when Env is
// unset. Later calls return the same answer.
func Path() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if done {
		return path, err
	}
	done = true
	if path = os.Getenv(Env); path != "" {
		return path, nil
	}
	dir, err1 := os.MkdirTemp("", "meshspan-agent-")
	if err1 != nil {
		err = fmt.Errorf("agentbin: %w", err1)
		return "", err
	}
	bin := filepath.Join(dir, "meshspan-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/meshspan/terraform-provider-meshspan/agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err1 := cmd.CombinedOutput(); err1 != nil {
		os.RemoveAll(dir)
		err = fmt.Errorf("agentbin: build meshspan-agent (or set %s): %v\n%s", Env, err1, out)
		return "", err
	}
	path, built = bin, bin
	return path, nil
}

// Remove deletes the binary Path built, if any; one named by Env is left alone.
func Remove() {
	mu.Lock()
	defer mu.Unlock()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
		built = ""
	}
}
