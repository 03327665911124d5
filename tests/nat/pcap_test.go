package nat

import (
	"encoding/binary"
)

// udpPayloads returns the UDP payloads of a pcap written by
// `tcpdump -i any` (link type LINUX_SLL2, IPv4 only: the underlay here is).
func udpPayloads(pcap []byte) [][]byte {
	const sll2 = 276
	if len(pcap) < 24 || binary.LittleEndian.Uint32(pcap) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(pcap[20:]) != sll2 {
		return nil
	}
	var out [][]byte
	for off := 24; off+16 <= len(pcap); {
		incl := int(binary.LittleEndian.Uint32(pcap[off+8:]))
		rec := pcap[off+16 : min(off+16+incl, len(pcap))]
		off += 16 + incl
		if len(rec) < 20+20+8 || binary.BigEndian.Uint16(rec) != 0x0800 {
			continue
		}
		ipv4 := rec[20:]
		ihl := int(ipv4[0]&0x0f) * 4
		if ipv4[9] != 17 || len(ipv4) < ihl+8 {
			continue
		}
		out = append(out, ipv4[ihl+8:])
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
