package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// Outputs is what examples/local-lab's `terraform output -json` describes:
// the cluster, the lab's underlay, and each node with its boot material.
type Outputs struct {
	MeshPrefix netip.Prefix
	// Discovery is the discovery endpoint URL every node was configured with.
	Discovery *url.URL
	Network   Network
	Nodes     []Node // sorted by name
}

// Network is the lab's underlay.
type Network struct {
	Internet  netip.Prefix
	Discovery netip.Prefix // discovery service address on the internet switch
	Mirror    netip.Prefix // where nodes download the agent from
	NAT       NAT
}

// NAT is the router in front of nodes with behind_nat = true.
type NAT struct {
	Mode netlab.NATMode
	WAN  netip.Prefix
	LAN  netip.Prefix
}

// Node is one machine of the lab cluster.
type Node struct {
	Name         string
	Platform     string // metal, hcloud, digitalocean, generic
	Provider     string // label for display: baremetal, hetzner, ...
	Address      netip.Prefix
	BehindNAT    bool
	ListenPort   int
	UserData     string
	BundleScript string
}

// Boot says how the node boots: "bundle" (bare metal: the script, run over
// SSH in real life) or "cloud-init" (user_data).
func (n Node) Boot() string {
	if n.Platform == "metal" {
		return "bundle"
	}
	return "cloud-init"
}

var nodeNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,14}$`)

// ParseOutputs reads `terraform output -json` of the local-lab example.
func ParseOutputs(data []byte) (*Outputs, error) {
	var raw map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("lab: terraform outputs: %w", err)
	}
	for _, k := range []string{"mesh_prefix", "network", "discovery_endpoint", "nodes"} {
		if _, ok := raw[k]; !ok {
			return nil, fmt.Errorf("lab: terraform outputs: no output %q; is this the examples/local-lab configuration, applied?", k)
		}
	}
	var (
		meshPrefix, discovery string
		network               struct {
			Internet, Discovery, Mirror string
			NAT                         struct{ Mode, WAN, LAN string } `json:"nat"`
		}
		nodes map[string]struct {
			Platform     string `json:"platform"`
			Provider     string `json:"provider"`
			Address      string `json:"address"`
			BehindNAT    bool   `json:"behind_nat"`
			ListenPort   int    `json:"listen_port"`
			UserData     string `json:"user_data"`
			BundleScript string `json:"bundle_script"`
		}
	)
	for k, dst := range map[string]any{"mesh_prefix": &meshPrefix, "network": &network, "discovery_endpoint": &discovery, "nodes": &nodes} {
		if err := json.Unmarshal(raw[k].Value, dst); err != nil {
			return nil, fmt.Errorf("lab: terraform output %q: %w", k, err)
		}
	}
	out := &Outputs{}
	var err error
	p := func(field, s string) netip.Prefix {
		if err != nil {
			return netip.Prefix{}
		}
		var v netip.Prefix
		if v, err = netip.ParsePrefix(s); err != nil {
			err = fmt.Errorf("lab: terraform output %s: %q is not a prefix: %w", field, s, err)
		}
		return v
	}
	out.MeshPrefix = p("mesh_prefix", meshPrefix)
	out.Network.Internet = p("network.internet", network.Internet).Masked()
	out.Network.Discovery = p("network.discovery", network.Discovery)
	out.Network.Mirror = p("network.mirror", network.Mirror)
	out.Network.NAT.WAN = p("network.nat.wan", network.NAT.WAN)
	out.Network.NAT.LAN = p("network.nat.lan", network.NAT.LAN)
	if err != nil {
		return nil, err
	}
	switch network.NAT.Mode {
	case "port-preserving", "":
		out.Network.NAT.Mode = netlab.NATPreservePorts
	case "random":
		out.Network.NAT.Mode = netlab.NATRandomPorts
	case "fully-random":
		out.Network.NAT.Mode = netlab.NATFullyRandomPorts
	default:
		return nil, fmt.Errorf("lab: terraform output network.nat.mode: %q; use port-preserving, random or fully-random", network.NAT.Mode)
	}
	u, uerr := url.Parse(discovery)
	if uerr != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("lab: terraform output discovery_endpoint: %q is not an http(s) URL", discovery)
	}
	host, herr := netip.ParseAddr(u.Hostname())
	if herr != nil || host != out.Network.Discovery.Addr() {
		return nil, fmt.Errorf("lab: discovery_endpoint %q must point at network.discovery (%s), where the lab runs the service", discovery, out.Network.Discovery.Addr())
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("lab: discovery_endpoint %q: the lab serves discovery in plaintext; use http://", discovery)
	}
	out.Discovery = u

	if len(nodes) < 2 {
		return nil, fmt.Errorf("lab: terraform output nodes: %d nodes; a mesh needs at least 2", len(nodes))
	}
	seen := map[netip.Addr]string{}
	for name, n := range nodes {
		if !nodeNameRe.MatchString(name) {
			return nil, fmt.Errorf("lab: node name %q: use 1-15 lowercase letters, digits or '-'", name)
		}
		addr := p("nodes."+name+".address", n.Address)
		if err != nil {
			return nil, err
		}
		subnet := out.Network.Internet
		if n.BehindNAT {
			subnet = out.Network.NAT.LAN.Masked()
		}
		if !subnet.Contains(addr.Addr()) {
			return nil, fmt.Errorf("lab: node %q: address %s is outside %s (behind_nat = %t)", name, addr, subnet, n.BehindNAT)
		}
		if other, dup := seen[addr.Addr()]; dup {
			return nil, fmt.Errorf("lab: nodes %q and %q share the address %s", name, other, addr.Addr())
		}
		seen[addr.Addr()] = name
		node := Node{Name: name, Platform: n.Platform, Provider: n.Provider, Address: addr, BehindNAT: n.BehindNAT,
			ListenPort: n.ListenPort, UserData: n.UserData, BundleScript: n.BundleScript}
		switch {
		case node.Boot() == "bundle" && node.BundleScript == "":
			return nil, fmt.Errorf("lab: node %q: bundle_script is empty", name)
		case node.Boot() == "cloud-init" && node.UserData == "":
			return nil, fmt.Errorf("lab: node %q: user_data is empty", name)
		case node.ListenPort < 1 || node.ListenPort > 65535:
			return nil, fmt.Errorf("lab: node %q: listen_port %s out of range", name, strconv.Itoa(node.ListenPort))
		}
		out.Nodes = append(out.Nodes, node)
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Name < out.Nodes[j].Name })
	return out, nil
}
