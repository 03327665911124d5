package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Manager owns one nftables table, one routing table and its policy rules
// in one network namespace, and makes them match a State on every Apply.
type Manager struct {
	mu     sync.Mutex
	table  string
	ns     netns.NsHandle // -1: the caller's namespace
	h      *netlink.Handle
	closed bool
	// routeTable is the routing table last applied (0: none yet), so a
	// changed table has its old routes and rules removed.
	routeTable int
	writes     int
	// extra queues more into each nftables transaction; tests use it to
	// make one fail.
	extra func(*nftables.Conn, *nftables.Table)
}

// New opens netlink handles for the namespace in opts. It changes nothing:
// the first Apply writes.
func New(opts Options) (*Manager, error) {
	m := &Manager{table: opts.Table, ns: netns.None()}
	if m.table == "" {
		m.table = DefaultTable
	}
	if len(m.table) > 255 {
		return nil, fmt.Errorf("netpolicy: Options.Table %q is longer than 255 bytes", m.table)
	}
	var err error
	if opts.NetNSPath != "" {
		if m.ns, err = netns.GetFromPath(opts.NetNSPath); err != nil {
			return nil, fmt.Errorf("netpolicy: open network namespace %q: %w", opts.NetNSPath, err)
		}
		m.h, err = netlink.NewHandleAt(m.ns)
	} else {
		m.h, err = netlink.NewHandle()
	}
	if err != nil {
		m.ns.Close()
		return nil, fmt.Errorf("netpolicy: open rtnetlink: %w", err)
	}
	return m, nil
}

func (m *Manager) nft() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if m.ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(m.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("netpolicy: open nftables netlink: %w", err)
	}
	return c, nil
}

// Apply makes the kernel match s: the nftables table (replaced atomically,
// and only when its live listing differs from the desired one), then the
// mesh routing table's routes and the policy rules (changed one by one,
// only where they differ). Unchanged state costs a few netlink dumps.
// A failed nftables transaction leaves the previous table in force.
func (m *Manager) Apply(ctx context.Context, s State) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netpolicy: apply: %w", err)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	rs, err := buildRuleset(s, m.table)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("netpolicy: apply: manager is closed")
	}
	c, err := m.nft()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	live, err := readListing(c, m.table)
	if err != nil {
		return err
	}
	if live.String() != rs.listing().String() {
		if err := rs.write(c, m.extra); err != nil {
			return err
		}
		m.writes++
	}
	// nftables first: if the mesh link is missing the routes below fail,
	// but the table already marks member traffic and the postrouting chain
	// drops it rather than let it out in plaintext.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("netpolicy: apply: %w", err)
	}
	link, err := m.h.LinkByName(s.Interface)
	if err != nil {
		return fmt.Errorf("netpolicy: mesh interface %q: %w (create the WireGuard link before Apply)", s.Interface, err)
	}
	if m.routeTable != 0 && m.routeTable != s.Routing.Table {
		if err := m.clearRouting(m.routeTable); err != nil {
			return err
		}
	}
	m.routeTable = s.Routing.Table
	if err := syncRoutes(m.h, s.Routing.Table, desiredRoutes(s, link.Attrs().Index)); err != nil {
		return err
	}
	return syncRules(m.h, s.Routing.Table, desiredRules(s))
}

func (m *Manager) clearRouting(table int) error {
	return errors.Join(syncRules(m.h, table, nil), syncRoutes(m.h, table, nil))
}

// Writes counts the nftables transactions Apply committed; it stays put
// while nothing changes.
func (m *Manager) Writes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

// Plan computes what Apply(s) would make live and reads what is live now,
// changing nothing.
func (m *Manager) Plan(s State) (Plan, error) {
	if err := s.Validate(); err != nil {
		return Plan{}, err
	}
	rs, err := buildRuleset(s, m.table)
	if err != nil {
		return Plan{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.nft()
	if err != nil {
		return Plan{}, err
	}
	defer c.CloseLasting()
	live, err := readListing(c, m.table)
	if err != nil {
		return Plan{}, err
	}
	liveRts, err := liveRoutes(m.h, s.Routing.Table)
	if err != nil {
		return Plan{}, err
	}
	liveRls, err := liveRules(m.h, s.Routing.Table)
	if err != nil {
		return Plan{}, err
	}
	devName := func(i int) string {
		if l, err := m.h.LinkByIndex(i); err == nil {
			return l.Attrs().Name
		}
		return fmt.Sprintf("index %d", i)
	}
	return Plan{
		Desired: rs.listing().String() + routingText(func(int) string { return s.Interface }, desiredRoutes(s, 0), desiredRules(s)),
		Live:    live.String() + routingText(devName, liveRts, liveRls),
	}, nil
}

// LiveRouted returns the destinations the live table sends through the
// mesh (nil when there is no table). `firewall check` uses it to keep the
// members the running agent learned from discovery in its plan.
func (m *Manager) LiveRouted() ([]netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.nft()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	l, err := readListing(c, m.table)
	if err != nil {
		return nil, err
	}
	return l.routed(), nil
}

// Release closes the manager's handles and leaves the host as it is: for
// read-only users (firewall check) and for handing over to a new process.
func (m *Manager) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	m.h.Close()
	if m.ns.IsOpen() {
		m.ns.Close()
	}
}

// Close removes the nftables table and the routes and rules of the last
// applied routing table, then releases the handles. The mesh link itself
// belongs to the caller.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if c, err := m.nft(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, deleteTable(c, m.table))
		c.CloseLasting()
	}
	if m.routeTable != 0 {
		errs = append(errs, m.clearRouting(m.routeTable))
	}
	m.h.Close()
	if m.ns.IsOpen() {
		m.ns.Close()
	}
	return errors.Join(errs...)
}
