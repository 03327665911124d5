package nat

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/meshspan/terraform-provider-meshspan/internal/netlab"
)

// gatewayFirewall gives a NAT router what real NAT gateways have: a
// stateful input filter that drops unsolicited packets from the WAN.
//
//	table inet natfw { chain input { type filter hook input priority 0; policy drop;
//	    ct state established,related accept; iifname != "wan0" accept } }
//
// It matters for hole punching: a router that accepts (or answers with
// ICMP) an unsolicited packet to itself records it in conntrack, and its own
// masquerade then remaps the port the peer is waiting on (seen with
// netlab's bare router; see TestBareRouterPortPreservingIsRelayed). A
// dropped packet is never confirmed in conntrack, so the peer's punch that
// arrives first does no harm and the second one gets through.
func gatewayFirewall(r *netlab.NS) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(r.Handle())))
	if err != nil {
		return fmt.Errorf("nftables on %s: %w", r.Name(), err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "natfw"})
	drop := nftables.ChainPolicyDrop
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	est := make([]byte, 4)
	binary.NativeEndian.PutUint32(est, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: est, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	wan := make([]byte, 16)
	copy(wan, netlab.NATWanIf)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: wan},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install gateway firewall on %s: %w", r.Name(), err)
	}
	return nil
}
