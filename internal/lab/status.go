package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
)

// AgentStatus is the part of `meshspan-agent status -o json` the lab reads.
type AgentStatus struct {
	Node    string
	Address netip.Addr
	Peers   []PeerStatus
}

// PeerStatus is one peer as the agent reports it.
type PeerStatus struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	State    string `json:"state"` // unknown, up or down
	RxBytes  int64  `json:"rxBytes"`
	TxBytes  int64  `json:"txBytes"`
}

// ParseStatus reads the agent's JSON status. The lab goes through the
// command's output, as a user would, rather than the agent's Go types.
func ParseStatus(data []byte) (*AgentStatus, error) {
	var raw struct {
		Node    string       `json:"node"`
		Address string       `json:"address"`
		Peers   []PeerStatus `json:"peers"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("lab: agent status: %w", err)
	}
	st := &AgentStatus{Node: raw.Node, Peers: raw.Peers}
	if p, err := netip.ParsePrefix(raw.Address); err == nil {
		st.Address = p.Addr()
	} else if a, err := netip.ParseAddr(raw.Address); err == nil {
		st.Address = a
	} else {
		return nil, fmt.Errorf("lab: agent status: address %q is not an IP address", raw.Address)
	}
	for i, p := range st.Peers {
		if p.Name == "" || p.State == "" {
			return nil, fmt.Errorf("lab: agent status: peers[%d] has no name or state", i)
		}
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	return st, nil
}
