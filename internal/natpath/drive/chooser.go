package drive

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/agent"
	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// Chooser plugs the driver into the agent (agent.Options.Paths). Relays are
// found by registering with every peer's endpoints (see Probe). Until one
// answers, the agent's own rotation picks endpoints, exactly as without NAT
// traversal, and Choose only reports natpath's view for status (advisory:
// direct, or no path and why); from then on natpath picks them.
type Chooser struct {
	Driver *Driver
}

var _ agent.PathChooser = (*Chooser)(nil)

// Choose runs one natpath pass over the agent's peers.
func (c *Chooser) Choose(now time.Time, peers []mesh.Peer, obs map[wgtypes.Key]mesh.Observation) map[wgtypes.Key]agent.PathChoice {
	dpeers := make([]Peer, 0, len(peers))
	dobs := make(map[wgtypes.Key]Observation, len(obs))
	for _, p := range peers {
		dpeers = append(dpeers, Peer{Key: p.PublicKey, Name: p.Name, Direct: p.Endpoints})
		o := obs[p.PublicKey]
		dobs[p.PublicKey] = Observation{Endpoint: o.Endpoint, LastHandshake: o.LastHandshake, RxBytes: o.RxBytes}
	}
	st := c.Driver.Step(now, dpeers, Probe(dpeers), dobs)
	advisory := !c.Driver.Relaying()
	out := make(map[wgtypes.Key]agent.PathChoice, len(st))
	for k, s := range st {
		out[k] = agent.PathChoice{SetEndpoint: s.SetEndpoint, Path: string(s.Mode), Via: s.Via, Reason: s.Reason, Advisory: advisory}
	}
	return out
}
