//go:build tools

// Package tools pins the versions of build tools (go run'd by the GNUmakefile).
package tools

import (
	_ "github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs"
	_ "honnef.co/go/tools/cmd/staticcheck"

	// Pinned until the packages that use them land; removed then by go mod tidy.
	_ "github.com/digitalocean/godo"
	_ "github.com/google/nftables"
	_ "github.com/hashicorp/terraform-plugin-testing/helper/resource"
	_ "github.com/hetznercloud/hcloud-go/v2/hcloud"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	_ "github.com/siderolabs/discovery-client/pkg/client"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "golang.zx2c4.com/wireguard/device"
	_ "golang.zx2c4.com/wireguard/wgctrl"
	_ "google.golang.org/grpc"
	_ "gopkg.in/yaml.v3"
)
