package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/meshspan/terraform-provider-meshspan/internal/testing/hcloudfake"
)

func TestHcloudFakeCmdConfigure(t *testing.T) {
	f, listen, token, err := configure([]string{"-listen", "127.0.0.1:0", "-token", "tok",
		"-server", "web1:role=web,zone=a", "-server", "db1", "-fault-429", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hcloudfake.Start(f, listen)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := hcloud.NewClient(hcloud.WithEndpoint(r.Endpoint), hcloud.WithToken(token),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond), MaxRetries: 3}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	web, err := c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "role=web,zone=a"}})
	if err != nil || len(web) != 1 || web[0].Name != "web1" {
		t.Fatalf("seeded servers by selector = %v, %v", web, err)
	}
	if n := len(f.Requests()); n != 3 {
		t.Errorf("%d requests, want 2 rejected with 429 then 1 answered", n)
	}

	for _, bad := range [][]string{{"-server", ":x=y"}, {"-server", "n:novalue"}, {"-rate-limit", "0"}, {"-nope"}} {
		if _, _, _, err := configure(bad, io.Discard); err == nil {
			t.Errorf("configure(%q) accepted", bad)
		}
	}
}
