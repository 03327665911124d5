// Package fwmark sets the firewall mark (SO_MARK) on the agent's own
// sockets. Sockets that carry the agent's traffic to members' underlay
// addresses outside WireGuard's own (the relay's, the discovery
// connection) need WireGuard's mark: the host policy exempts it from the
// mesh, whose tunnel they may be needed to bring up.
package fwmark
