package vmlab

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestBuildSSHImage builds (or finds cached) the SSH-enabled image.
func TestBuildSSHImage(t *testing.T) {
	if os.Getenv("MESHSPAN_BUILD_SSH_IMAGE") == "" {
		t.Skip("set MESHSPAN_BUILD_SSH_IMAGE=1 to build the SSH image")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	img, err := BuildSSHImage(ctx, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s built in %v (cached %v)", img.Path, img.BuildTime, img.Cached)
}
