package wg

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uapiSet renders cfg in the UAPI "set" format wireguard-go reads (keys in
// hex, one key=value per line).
func uapiSet(cfg wgtypes.Config) string {
	var b strings.Builder
	kv := func(k, v string) { b.WriteString(k); b.WriteByte('='); b.WriteString(v); b.WriteByte('\n') }
	if cfg.PrivateKey != nil {
		kv("private_key", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		kv("listen_port", strconv.Itoa(*cfg.ListenPort))
	}
	if cfg.FirewallMark != nil {
		kv("fwmark", strconv.Itoa(*cfg.FirewallMark))
	}
	if cfg.ReplacePeers {
		kv("replace_peers", "true")
	}
	for _, p := range cfg.Peers {
		kv("public_key", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			kv("remove", "true")
			continue
		}
		if p.UpdateOnly {
			kv("update_only", "true")
		}
		if p.PresharedKey != nil {
			kv("preshared_key", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			kv("endpoint", p.Endpoint.AddrPort().String())
		}
		if p.PersistentKeepaliveInterval != nil {
			kv("persistent_keepalive_interval", strconv.Itoa(int(p.PersistentKeepaliveInterval.Seconds())))
		}
		if p.ReplaceAllowedIPs {
			kv("replace_allowed_ips", "true")
		}
		for _, n := range p.AllowedIPs {
			kv("allowed_ip", n.String())
		}
	}
	return b.String()
}

// parseUAPIPeers reads the peers from a UAPI "get" answer.
func parseUAPIPeers(s string) ([]PeerStats, error) {
	var out []PeerStats
	var cur *PeerStats
	var hsSec, hsNsec int64
	flush := func() {
		if cur != nil && (hsSec != 0 || hsNsec != 0) {
			cur.LastHandshake = time.Unix(hsSec, hsNsec)
		}
		hsSec, hsNsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if key == "public_key" {
			flush()
			raw, err := hex.DecodeString(value)
			if err != nil || len(raw) != wgtypes.KeyLen {
				return nil, fmt.Errorf("wg: uapi: bad public_key %q", value)
			}
			out = append(out, PeerStats{PublicKey: wgtypes.Key(raw)})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil {
			continue // device-level line
		}
		var err error
		switch key {
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(value)
		case "last_handshake_time_sec":
			hsSec, err = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, err = strconv.ParseInt(value, 10, 64)
		case "rx_bytes":
			cur.RxBytes, err = strconv.ParseInt(value, 10, 64)
		case "tx_bytes":
			cur.TxBytes, err = strconv.ParseInt(value, 10, 64)
		case "persistent_keepalive_interval":
			var secs int64
			secs, err = strconv.ParseInt(value, 10, 64)
			cur.Keepalive = time.Duration(secs) * time.Second
		case "allowed_ip":
			var p netip.Prefix
			p, err = netip.ParsePrefix(value)
			cur.AllowedIPs = append(cur.AllowedIPs, p)
		}
		if err != nil {
			return nil, fmt.Errorf("wg: uapi: bad %s %q: %w", key, value, err)
		}
	}
	flush()
	return out, sc.Err()
}
