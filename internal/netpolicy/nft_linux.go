package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// maxComment is the kernel's limit on rule user data (NFT_USERDATA_MAXLEN)
// less the TLV header and NUL.
const maxComment = 250

func commentOf(text string) string {
	if len(text) > maxComment {
		return text[:maxComment]
	}
	return text
}

// write queues the whole table on c as one transaction: create-if-missing,
// delete (dropping whatever was there), then create it anew with its sets,
// chains and rules. The kernel commits all of it or none, so a failure at
// any step leaves the previous table in force. extra, if not nil, may queue
// more (tests use it to make a transaction fail).
func (rs *ruleset) write(c *nftables.Conn, extra func(*nftables.Conn, *nftables.Table)) error {
	c.AddTable(rs.table)
	c.DelTable(rs.table)
	c.AddTable(rs.table)
	ids := map[string]uint32{}
	for _, st := range rs.sets {
		s := *st.set
		if err := c.AddSet(&s, elements(st.ranges)); err != nil {
			return fmt.Errorf("netpolicy: nftables: add set %q: %w", s.Name, err)
		}
		ids[s.Name] = s.ID
	}
	for _, ch := range rs.chains {
		c.AddChain(ch.chain)
		for _, r := range ch.rules {
			exprs := make([]expr.Any, len(r.exprs))
			for i, e := range r.exprs {
				if l, ok := e.(*expr.Lookup); ok {
					l2 := *l
					l2.SetID = ids[l.SetName]
					e = &l2
				}
				exprs[i] = e
			}
			c.AddRule(&nftables.Rule{Table: rs.table, Chain: ch.chain, Exprs: exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, commentOf(r.text))})
		}
	}
	if extra != nil {
		extra(c, rs.table)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netpolicy: nftables: replace table inet %q (previous ruleset kept): %w", rs.table.Name, err)
	}
	return nil
}

// deleteTable removes the table; a missing table is no error.
func deleteTable(c *nftables.Conn, name string) error {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netpolicy: nftables: delete table inet %q: %w", name, err)
	}
	return nil
}

// listing is a table as text-ready data, built the same way from the desired
// ruleset and from the kernel, so the two compare line by line.
type listing struct {
	table  string
	sets   []listedSet
	chains []listedChain
}

type listedSet struct {
	name, typ string
	interval  bool
	prefixes  []netip.Prefix
}

type listedChain struct {
	name, header string
	rules        []string
}

func chainHeader(c *nftables.Chain) string {
	if c.Hooknum == nil {
		return ""
	}
	hooks := map[nftables.ChainHook]string{
		*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookInput: "input",
		*nftables.ChainHookForward: "forward", *nftables.ChainHookOutput: "output",
		*nftables.ChainHookPostrouting: "postrouting",
	}
	prio := 0
	if c.Priority != nil {
		prio = int(*c.Priority)
	}
	pol := "accept"
	if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
		pol = "drop"
	}
	return fmt.Sprintf("type %s hook %s priority %d; policy %s;", c.Type, hooks[*c.Hooknum], prio, pol)
}

func (rs *ruleset) listing() *listing {
	l := &listing{table: rs.table.Name}
	for _, s := range rs.sets {
		l.sets = append(l.sets, listedSet{name: s.set.Name, typ: s.set.KeyType.Name, interval: s.set.Interval, prefixes: rangesPrefixes(s.ranges)})
	}
	for _, c := range rs.chains {
		lc := listedChain{name: c.chain.Name, header: chainHeader(c.chain)}
		for _, r := range c.rules {
			lc.rules = append(lc.rules, commentOf(r.text))
		}
		l.chains = append(l.chains, lc)
	}
	return l
}

func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)
}

// readListing reads the live table; nil when it does not exist. Rules are
// shown by the comment Apply stored with them; a rule added by anyone else
// shows as such, so it counts as a difference.
func readListing(c *nftables.Conn, name string) (*listing, error) {
	t, err := c.ListTableOfFamily(name, nftables.TableFamilyINet)
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("netpolicy: nftables: read table inet %q: %w", name, err)
	}
	l := &listing{table: name}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("netpolicy: nftables: list sets of %q: %w", name, err)
	}
	for _, s := range sets {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("netpolicy: nftables: list set %q: %w", s.Name, err)
		}
		ls := listedSet{name: s.Name, typ: s.KeyType.Name, interval: s.Interval}
		if s.Interval {
			ls.prefixes = rangesPrefixes(rangesFromElements(els))
		} else {
			for _, e := range els {
				if a, ok := netip.AddrFromSlice(e.Key); ok {
					ls.prefixes = append(ls.prefixes, netip.PrefixFrom(a, a.BitLen()))
				}
			}
		}
		l.sets = append(l.sets, ls)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("netpolicy: nftables: list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("netpolicy: nftables: list chain %q: %w", ch.Name, err)
		}
		lc := listedChain{name: ch.Name, header: chainHeader(ch)}
		for _, r := range rules {
			text, ok := userdata.GetString(r.UserData, userdata.TypeComment)
			if !ok {
				text = fmt.Sprintf("<rule handle %d with %d expressions, not written by meshspan>", r.Handle, len(r.Exprs))
			}
			lc.rules = append(lc.rules, text)
		}
		l.chains = append(l.chains, lc)
	}
	return l, nil
}

// String renders the table in nft's layout (sets, then chains, each sorted
// by name) so that the desired and the live text diff cleanly.
func (l *listing) String() string {
	if l == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", l.table)
	sets := slices.Clone(l.sets)
	slices.SortFunc(sets, func(a, b listedSet) int { return strings.Compare(a.name, b.name) })
	for _, s := range sets {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s;", s.name, s.typ)
		if s.interval {
			b.WriteString(" flags interval;")
		}
		b.WriteString("\n")
		if len(s.prefixes) > 0 {
			b.WriteString("\t\telements = {\n")
			for _, p := range s.prefixes {
				if p.IsSingleIP() {
					fmt.Fprintf(&b, "\t\t\t%s,\n", p.Addr())
				} else {
					fmt.Fprintf(&b, "\t\t\t%s,\n", p)
				}
			}
			b.WriteString("\t\t}\n")
		}
		b.WriteString("\t}\n")
	}
	chains := slices.Clone(l.chains)
	slices.SortFunc(chains, func(a, b listedChain) int { return strings.Compare(a.name, b.name) })
	for _, c := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.header != "" {
			fmt.Fprintf(&b, "\t\t%s\n", c.header)
		}
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// routed returns the prefixes of the live routed sets.
func (l *listing) routed() []netip.Prefix {
	if l == nil {
		return nil
	}
	var out []netip.Prefix
	for _, s := range l.sets {
		if s.name == "routed4" || s.name == "routed6" {
			out = append(out, s.prefixes...)
		}
	}
	return out
}
