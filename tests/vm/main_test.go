package vm

import (
	"os"
	"testing"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	agentbin.Remove()
	os.Exit(code)
}
