// Package agentbin gives the end-to-end suites the meshspan-agent binary they
// run: $MESHSPAN_AGENT_BIN (make test sets it to the binary it built), or one
// built once per test process as released: static and stripped, since the
// memory figures depend on it (a cgo build maps libc too). LabPath does the
// same for the demo's meshspan-lab.
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

// LabEnv names the variable that points at a prebuilt meshspan-lab.
const LabEnv = "MESHSPAN_LAB_BIN"

// Tags are the build tags the agent is released with (the GNUmakefile's
// AGENT_TAGS): grpcnotrace keeps golang.org/x/net/trace, and with it
// html/template, out of the agent. A template package that can call methods
// by name makes the linker keep every exported method of every type, and
// the binary (and the pages of it an agent maps) grows by half.
const Tags = "grpcnotrace"

// binary is one command, built at most once per test process.
type binary struct {
	name, pkg, env string
	tags           string

	mu    sync.Mutex
	built string // a binary this package built, removed by Remove
	path  string
	err   error
	done  bool
}

var (
	agent   = &binary{name: "meshspan-agent", pkg: "github.com/meshspan/terraform-provider-meshspan/agent", env: Env, tags: Tags}
	labTool = &binary{name: "meshspan-lab", pkg: "github.com/meshspan/terraform-provider-meshspan/cmd/meshspan-lab", env: LabEnv}
)

// Path returns the agent binary, building it on the first call when Env is
// unset. Later calls return the same answer.
func Path() (string, error) { return agent.get() }

// LabPath returns the demo's meshspan-lab binary, building it on the first
// call when LabEnv is unset.
func LabPath() (string, error) { return labTool.get() }

func (b *binary) get() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return b.path, b.err
	}
	b.done = true
	if b.path = os.Getenv(b.env); b.path != "" {
		return b.path, nil
	}
	dir, err := os.MkdirTemp("", b.name+"-")
	if err != nil {
		b.err = fmt.Errorf("agentbin: %w", err)
		return "", b.err
	}
	bin := filepath.Join(dir, b.name)
	cmd := exec.Command("go", "build", "-trimpath", "-tags", b.tags, "-ldflags", "-s -w", "-o", bin, b.pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		b.err = fmt.Errorf("agentbin: build %s (or set %s): %v\n%s", b.name, b.env, err, out)
		return "", b.err
	}
	b.path, b.built = bin, bin
	return b.path, nil
}

// Remove deletes the binaries Path and LabPath built, if any; those named
// by Env and LabEnv are left alone.
func Remove() {
	for _, b := range []*binary{agent, labTool} {
		b.mu.Lock()
		if b.built != "" {
			os.RemoveAll(filepath.Dir(b.built))
			b.built = ""
		}
		b.mu.Unlock()
	}
}
