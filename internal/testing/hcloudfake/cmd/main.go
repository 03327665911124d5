// Command hcloudfake serves the Hetzner Cloud API stand-in on its own, so the
// hcloud CLI or any hcloud-go program can be pointed at it:
//
//	go run ./internal/testing/hcloudfake/cmd -listen 127.0.0.1:8080 -server web1:role=web
//	HCLOUD_ENDPOINT=http://127.0.0.1:8080/v1 HCLOUD_TOKEN=test-token hcloud firewall list
//
// Faults can be queued at start (-fault-429, -fault-500, -action-delay) or at
// any time through the /_admin endpoints (see the package documentation).
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
)

type serverFlags []string

func (s *serverFlags) String() string     { return strings.Join(*s, " ") }
func (s *serverFlags) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	f, listen, token, err := configure(os.Args[1:], os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	r, err := hcloudfake.Start(f, listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "hcloudfake: serving; export HCLOUD_ENDPOINT=%s HCLOUD_TOKEN=%s\n", r.Endpoint, token)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	if err := r.Close(); err != nil {
		log.Fatal(err)
	}
}

// configure parses the flags and builds the seeded fake; it returns the
// listen address and token too.
func configure(args []string, stderr io.Writer) (*hcloudfake.Fake, string, string, error) {
	fs := flag.NewFlagSet("hcloudfake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var servers serverFlags
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on")
	token := fs.String("token", "test-token", "bearer token the API accepts")
	readOnly := fs.String("read-only-token", "", "token accepted for GET requests only")
	delay := fs.Duration("action-delay", 0, "how long actions stay running")
	rateLimit := fs.Int("rate-limit", 3600, "requests per hour (RateLimit-Limit)")
	n429 := fs.Int("fault-429", 0, "answer the first N API requests with 429 rate_limit_exceeded")
	n500 := fs.Int("fault-500", 0, "answer the first N API requests with 500 server_error")
	fs.Var(&servers, "server", "seed a server: name or name:key=value,key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, "", "", err
	}
	if *rateLimit < 1 {
		return nil, "", "", fmt.Errorf("hcloudfake: -rate-limit %d must be at least 1", *rateLimit)
	}
	f := hcloudfake.New(hcloudfake.Options{Token: *token, ReadOnlyToken: *readOnly, ActionDelay: *delay, RateLimit: *rateLimit})
	for _, s := range servers {
		name, labelList, _ := strings.Cut(s, ":")
		if name == "" {
			return nil, "", "", fmt.Errorf("hcloudfake: -server %q has no name; write name or name:key=value", s)
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(labelList, ",") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, "", "", fmt.Errorf("hcloudfake: -server %q: label %q is not key=value", s, kv)
			}
			labels[k] = v
		}
		id := f.AddServer(name, labels)
		fmt.Fprintf(stderr, "hcloudfake: server %q id %d labels %v\n", name, id, labels)
	}
	f.Inject(hcloudfake.Fault{Status: 429, Count: *n429})
	f.Inject(hcloudfake.Fault{Status: 500, Count: *n500})
	return f, *listen, *token, nil
}
