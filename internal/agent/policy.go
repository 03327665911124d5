package agent

import (
	"context"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
	"github.com/meshspan/terraform-provider-meshspan/internal/netpolicy"
)

// hostPolicyInput is what the host's routing rules and nftables table are
// made of.
type hostPolicyInput struct {
	// base is the config's part (netpolicy.FromConfig: firewall, relay
	// port, LAN bypass, marks).
	base       netpolicy.State
	iface      string
	listenPort int
	prefix     netip.Prefix // the mesh prefix, on the link already
	peers      []mesh.Peer
	verdicts   map[wgtypes.Key]mesh.Status
	// contested are ranges two members claim, which no peer gets.
	contested []netip.Prefix
}

// hostPolicy is the host policy for this pass: members' AllowedIPs are
// routed through the mesh (the mesh prefix itself is on the link already);
// those of peers that are not up are marked unreachable, and so are
// contested ranges: they stay in the mesh and are dropped rather than
// leaving in plaintext.
func hostPolicy(in hostPolicyInput) netpolicy.State {
	s := in.base
	s.Interface, s.ListenPort = in.iface, in.listenPort
	s.Routed, s.Unreachable = nil, nil
	for _, n := range in.contested {
		if in.prefix.Overlaps(n) {
			continue // the mesh prefix is on the link already
		}
		s.Routed = append(s.Routed, n)
		s.Unreachable = append(s.Unreachable, n)
	}
	for _, p := range in.peers {
		up := in.verdicts[p.PublicKey].State == mesh.StateUp
		for _, n := range p.AllowedIPs {
			if in.prefix.Overlaps(n) && n.Bits() >= in.prefix.Bits() {
				continue
			}
			s.Routed = append(s.Routed, n)
			if !up {
				s.Unreachable = append(s.Unreachable, n)
			}
		}
	}
	return s
}

// policyState is hostPolicy with this agent's config and live device.
func (a *agent) policyState(peers []mesh.Peer, verdicts map[wgtypes.Key]mesh.Status, contested []netip.Prefix) netpolicy.State {
	return hostPolicy(hostPolicyInput{
		base: a.policyBase, iface: a.dev.Name(), listenPort: a.dev.ListenPort(), prefix: a.prefix,
		peers: peers, verdicts: verdicts, contested: contested,
	})
}

// applyPolicy makes the host match s. A failure is logged once per distinct
// error (it repeats every pass until fixed) and returned for status.
func (a *agent) applyPolicy(ctx context.Context, s netpolicy.State) error {
	err := a.policy.Apply(ctx, s)
	if err == nil {
		a.policyErr = ""
		return nil
	}
	if msg := err.Error(); msg != a.policyErr {
		a.log.Warn("host policy", "err", err)
		a.policyErr = msg
	}
	return err
}
