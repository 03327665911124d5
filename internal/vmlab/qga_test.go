package vmlab

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeAgent answers the guest agent protocol on a unix socket. Before the
// sync reply it writes what a timed-out earlier conversation can leave in
// the pipe: a stale reply and a stale delimited sync.
func fakeAgent(t *testing.T, path string, exit int, out string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				dec := json.NewDecoder(bufio.NewReader(c))
				polls := 0
				for {
					var req struct {
						Execute   string         `json:"execute"`
						Arguments map[string]any `json:"arguments"`
					}
					if dec.Decode(&req) != nil {
						return
					}
					switch req.Execute {
					case "guest-sync-delimited":
						fmt.Fprintf(c, "{\"return\": {\"exited\": true}}\n\xff{\"return\": 1}\n\xff{\"return\": %d}\n", int64(req.Arguments["id"].(float64)))
					case "guest-exec":
						fmt.Fprint(c, "{\"return\": {\"pid\": 42}}\n")
					case "guest-exec-status":
						if polls++; polls < 3 {
							fmt.Fprint(c, "{\"return\": {\"exited\": false}}\n")
							continue
						}
						fmt.Fprintf(c, "{\"return\": {\"exited\": true, \"exitcode\": %d, \"out-data\": %q}}\n", exit, base64.StdEncoding.EncodeToString([]byte(out)))
					}
				}
			}()
		}
	}()
}

func TestRunThroughGuestAgent(t *testing.T) {
	dir := t.TempDir()
	v := &VM{cfg: Config{Name: "t"}, qgaPath: filepath.Join(dir, "ok.sock")}
	fakeAgent(t, v.qgaPath, 0, "hello\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ { // a fresh conversation each time
		out, err := v.Run(ctx, "echo hello")
		if err != nil || out != "hello\n" {
			t.Fatalf("Run = %q, %v", out, err)
		}
	}
	bad := &VM{cfg: Config{Name: "t"}, qgaPath: filepath.Join(dir, "bad.sock")}
	fakeAgent(t, bad.qgaPath, 3, "boom")
	if out, err := bad.Run(ctx, "false"); err == nil || out != "boom" || !strings.Contains(err.Error(), "exited 3") {
		t.Fatalf("Run of a failing command = %q, %v", out, err)
	}
}

func TestRunWithoutGuestAgentTimesOut(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mute.sock")
	l, err := net.Listen("unix", path) // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	v := &VM{cfg: Config{Name: "t"}, qgaPath: path}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := v.Run(ctx, "true"); err == nil || !strings.Contains(err.Error(), "not answering") {
		t.Fatalf("Run with a mute agent: %v", err)
	}
}
