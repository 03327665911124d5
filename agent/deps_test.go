package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

// The agent is released with agentbin.Tags (the GNUmakefile's AGENT_TAGS),
// and so built it links no template package that calls methods by name:
// with one, the linker keeps every exported method of every reachable type
// (go-redis alone then adds 3 MB), and every agent maps more of its binary.
func TestReleaseBuildLeavesOutTemplateTracing(t *testing.T) {
	mk, err := os.ReadFile("../GNUmakefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "\nAGENT_TAGS := "+agentbin.Tags+"\n") || !strings.Contains(string(mk), "-tags $(AGENT_TAGS)") {
		t.Errorf("GNUmakefile: the agent must be built with AGENT_TAGS := %s, as internal/testing/agentbin builds it", agentbin.Tags)
	}
	if rel, err := os.ReadFile("../.goreleaser.yml"); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(string(rel), "tags: ["+agentbin.Tags+"]") {
		t.Errorf(".goreleaser.yml: the agent's build must set tags: [%s], as the GNUmakefile does", agentbin.Tags)
	}
	deps := func(tags string) []string {
		out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").Output()
		if err != nil {
			t.Fatalf("go list -deps -tags %q: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	heavy := []string{"golang.org/x/net/trace", "html/template"}
	// Without the tags gRPC brings them in: the check below can fail.
	if plain := deps(""); !slices.Contains(plain, heavy[0]) {
		t.Fatalf("without tags the agent no longer links %s: grpcnotrace may be unneeded now (drop it from AGENT_TAGS and agentbin.Tags)", heavy[0])
	}
	released := deps(agentbin.Tags)
	for _, p := range heavy {
		if slices.Contains(released, p) {
			t.Errorf("the released agent links %s; find the importer with `go list -deps -tags %s -f '{{.ImportPath}}: {{.Imports}}' ./agent` and avoid it", p, agentbin.Tags)
		}
	}
}
