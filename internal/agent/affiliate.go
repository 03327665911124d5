package agent

import (
	"net/netip"
	"reflect"

	"github.com/meshspan/terraform-provider-meshspan/internal/discovery"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// affiliateInput is what this node announces itself from.
type affiliateInput struct {
	id                          Identity
	nodeName, hostname, version string
	addrs                       []netip.Addr   // the host's addresses
	prefix                      netip.Prefix   // the mesh prefix, never announced as routed
	nets                        []netip.Prefix // advertisedNetworks
	exclude                     []netip.Prefix // filters.excludeAdvertisedNetworks
	endpoints                   []netip.AddrPort
	traversal                   discovery.Traversal
}

// localAffiliate is the affiliate this node publishes.
func localAffiliate(in affiliateInput) discovery.Affiliate {
	nets, routed := mesh.Exclude(in.nets, mesh.Routed(in.addrs, in.prefix), in.exclude)
	return discovery.Affiliate{
		ID:              in.id.AffiliateID,
		NodeName:        in.nodeName,
		Hostname:        in.hostname,
		MachineType:     "unknown",
		OperatingSystem: "meshspan (" + in.version + ")",
		PublicKey:       in.id.PublicKey().String(),
		Address:         in.id.Address,
		Addresses:       routed,
		Networks:        nets,
		ExcludeNetworks: in.exclude,
		Endpoints:       in.endpoints,
		Traversal:       in.traversal,
	}
}

// publisher hands the discovery client this node's affiliate and the
// endpoints it saw for peers, only when either changed: the client
// re-publishes on its own before the TTL runs out.
type publisher struct {
	last     *discovery.Affiliate
	observed map[string][]netip.AddrPort
}

// publish reports whether it called SetLocal.
func (p *publisher) publish(d Discovery, self discovery.Affiliate, observed map[string][]netip.AddrPort) bool {
	if p.last != nil && reflect.DeepEqual(*p.last, self) && reflect.DeepEqual(p.observed, observed) {
		return false
	}
	d.SetLocal(self, observed)
	p.last, p.observed = &self, observed
	return true
}
