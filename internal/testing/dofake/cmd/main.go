// Command dofake serves the DigitalOcean firewall API stand-in on its own, so
// godo, doctl or curl can be pointed at it:
//
//	go run ./internal/testing/dofake/cmd -listen 127.0.0.1:8081 -token dop_v1_test -droplets 101,102 -tags mesh
//	doctl compute firewall list --access-token dop_v1_test --api-url http://127.0.0.1:8081
//
// Faults are injected with flags at start or later through the admin
// endpoints under /_dofake/ (see package dofake).
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/dofake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dofake:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	srv, listen, err := configure(args)
	if err != nil {
		return err
	}
	log.Printf("dofake: serving the DigitalOcean firewall API on http://%s", listen)
	hs := &http.Server{Addr: listen, Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	if err := hs.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("listen on %q: %w", listen, err)
	}
	return nil
}

// configure parses the flags into a seeded server and the listen address.
func configure(args []string) (*dofake.Server, string, error) {
	fs := flag.NewFlagSet("dofake", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on (keep it on loopback)")
	token := fs.String("token", "dofake-token", "bearer token accepted for reads and writes")
	readOnly := fs.String("read-only-token", "", "bearer token accepted for reads only (writes get 403)")
	droplets := fs.String("droplets", "", "comma-separated droplet IDs that exist")
	tags := fs.String("tags", "", "comma-separated tag names that exist")
	rateLimit := fs.Int("rate-limit", 5000, "requests per hour before 429")
	burst := fs.Int("fail-429", 0, "answer the first N API requests with 429")
	retryAfter := fs.Int("retry-after", 1, "retry-after seconds sent with -fail-429 (0: send ratelimit-reset instead)")
	fail500 := fs.Int("fail-500", 0, "answer the first N API requests (after any 429s) with 500")
	slow := fs.Int("slow-reads", 0, "report status \"waiting\" for N GETs after each change")
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	srv := dofake.New(dofake.Options{Token: *token, ReadOnlyToken: *readOnly, RateLimit: *rateLimit})
	for _, d := range split(*droplets) {
		id, err := strconv.Atoi(d)
		if err != nil || id <= 0 {
			return nil, "", fmt.Errorf("flag -droplets: %q is not a positive droplet ID", d)
		}
		srv.AddDroplet(id, fmt.Sprintf("droplet-%d", id))
	}
	for _, t := range split(*tags) {
		srv.AddTag(t)
	}
	if *burst > 0 {
		srv.InjectFault(dofake.Fault{Status: http.StatusTooManyRequests, Count: *burst, RetryAfter: *retryAfter, ResetIn: 1})
	}
	if *fail500 > 0 {
		srv.InjectFault(dofake.Fault{Status: http.StatusInternalServerError, Count: *fail500})
	}
	srv.SetSlowStatus(*slow)
	return srv, *listen, nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
