package netpolicy

// DefaultTable is the nftables table (family inet) the agent owns.
const DefaultTable = "meshspan"

// Options configure a Manager.
type Options struct {
	// Table is the nftables table (family inet) the manager owns and
	// replaces on every change; default DefaultTable ("meshspan").
	Table string
	// NetNSPath, when set (e.g. /run/netns/NAME or /proc/PID/ns/net), makes
	// the manager act on that network namespace instead of the caller's.
	NetNSPath string
}
