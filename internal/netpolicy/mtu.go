package netpolicy

import "fmt"

// wireGuardOverhead is the worst-case WireGuard encapsulation overhead: outer
// IPv6 header (40) + UDP (8) + WireGuard data header (16) + Poly1305 tag (16).
const wireGuardOverhead = 80

// MTUWarning returns a status warning when the mesh MTU does not fit in the
// underlay MTU after WireGuard's overhead, and "" when it fits or the
// underlay MTU is unknown (<= 0).
func MTUWarning(underlayMTU, meshMTU int) string {
	if underlayMTU <= 0 || meshMTU <= underlayMTU-wireGuardOverhead {
		return ""
	}
	return fmt.Sprintf("mesh MTU %d is above the underlay MTU %d minus %d bytes of WireGuard overhead: large packets will be fragmented or dropped; set wireguard.mtu to %d or less",
		meshMTU, underlayMTU, wireGuardOverhead, underlayMTU-wireGuardOverhead)
}

// MSS returns the TCP MSS clamp targets for a mesh MTU, as KubeSpan computes
// them: MTU-52 for IPv4 and MTU-72 for IPv6.
func MSS(meshMTU int) (v4, v6 int) { return meshMTU - 52, meshMTU - 72 }
