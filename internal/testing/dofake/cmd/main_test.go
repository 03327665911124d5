package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/digitalocean/godo"
	"golang.org/x/oauth2"
)

func TestDigitalOceanFakeCmdConfigureSeedsAndFaults(t *testing.T) {
	srv, listen, err := configure([]string{"-listen", "127.0.0.1:0", "-token", "tok", "-droplets", "7, 8", "-tags", "mesh", "-fail-500", "1"})
	if err != nil || listen != "127.0.0.1:0" {
		t.Fatalf("configure: %v %q", err, listen)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	hc := oauth2.NewClient(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tok"}))
	c, err := godo.New(hc, godo.SetBaseURL(ts.URL))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := c.Firewalls.List(ctx, nil); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("first request: %v, want the injected 500", err)
	}
	_, _, err = c.Firewalls.Create(ctx, &godo.FirewallRequest{
		Name:         "seeded",
		InboundRules: []godo.InboundRule{{Protocol: "udp", PortRange: "51820", Sources: &godo.Sources{Addresses: []string{"0.0.0.0/0"}}}},
		DropletIDs:   []int{7, 8},
		Tags:         []string{"mesh"},
	})
	if err != nil {
		t.Fatalf("create on seeded droplets and tag: %v", err)
	}
}

func TestDigitalOceanFakeCmdConfigureRejectsBadDroplet(t *testing.T) {
	_, _, err := configure([]string{"-droplets", "7,x"})
	if err == nil || !strings.Contains(err.Error(), "-droplets") || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("err %v, want one naming -droplets and \"x\"", err)
	}
}
