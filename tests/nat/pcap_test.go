package nat

import (
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// udpPayloads returns the UDP payloads of captured Ethernet frames (IPv4
// only: the underlay here is).
func udpPayloads(frames [][]byte) [][]byte {
	var out [][]byte
	for _, f := range frames {
		pkt := e2e.IPPacket(f)
		if len(pkt) == 0 || pkt[0]>>4 != 4 {
			continue
		}
		if proto, l4 := e2e.Transport(pkt); proto == 17 && len(l4) >= 8 {
			out = append(out, l4[8:])
		}
	}
	return out
}

// wireGuardData counts WireGuard transport-data messages, direct (type 4)
// or inside relay frames (send/deliver), among payloads.
func wireGuardData(payloads [][]byte) int {
	n := 0
	for _, p := range payloads {
		switch {
		case len(p) >= 32 && p[0] == 4 && p[1] == 0 && p[2] == 0 && p[3] == 0:
			n++
		case len(p) >= 42 && p[0] == 0xEC && (p[1] == 3 || p[1] == 4) && p[10] == 4:
			n++
		}
	}
	return n
}
