package natpath

import "net/netip"

// Choice is a path chooser's verdict for one peer, in the form the agent
// takes it (agent.PathChoice is this type): the agent depends on natpath,
// never the other way round.
type Choice struct {
	// SetEndpoint, when valid, is configured on the device now.
	SetEndpoint netip.AddrPort
	// Path and Via describe it for status ("direct", "relayed" via a node).
	Path, Via, Reason string
	// Advisory choices only describe the path (status); the agent's own
	// rotation keeps picking the endpoint, and SetEndpoint is ignored.
	Advisory bool
}
