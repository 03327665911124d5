package nat

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/relay"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/agentbin"
	"github.com/meshspan/terraform-provider-meshspan/internal/wg"
)

// TestMain doubles as a relay process (a relay on another machine): with
// NAT_RELAY_PORT and NAT_RELAY_SECRET set, the test binary relays on that
// UDP port until stopped: on its own socket, or with NAT_RELAY_MODE=shared
// on the port of a wireguard-go device, as a relaying member does.
func TestMain(m *testing.M) {
	if p := os.Getenv("NAT_RELAY_PORT"); p != "" {
		os.Exit(serveRelay(p, os.Getenv("NAT_RELAY_SECRET")))
	}
	code := m.Run()
	agentbin.Remove()
	os.Exit(code)
}

func serveRelay(port, secret string) int {
	n, err := strconv.ParseUint(port, 10, 16)
	raw, herr := hex.DecodeString(secret)
	if err != nil || herr != nil || len(raw) != 32 {
		fmt.Fprintf(os.Stderr, "relay helper: bad NAT_RELAY_PORT %q or NAT_RELAY_SECRET\n", port)
		return 2
	}
	k, err := relay.DeriveKey([32]byte(raw))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	priv, err := hex.DecodeString(os.Getenv("NAT_RELAY_KEY"))
	if err != nil || len(priv) != 32 {
		fmt.Fprintln(os.Stderr, "relay helper: bad NAT_RELAY_KEY (the relay's private key in hex)")
		return 2
	}
	srv := relay.NewServer(k, [32]byte(priv))
	var members [][32]byte
	for _, m := range strings.Split(os.Getenv("NAT_RELAY_MEMBERS"), ",") {
		if b, err := hex.DecodeString(m); err == nil && len(b) == 32 {
			members = append(members, [32]byte(b))
		}
	}
	srv.SetMembers(members)
	if f := os.Getenv("NAT_RELAY_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err == nil {
			pprof.StartCPUProfile(out)
			defer pprof.StopCPUProfile()
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if os.Getenv("NAT_RELAY_MODE") == "shared" {
		// A member relaying on its WireGuard port: wireguard-go with the
		// relay Bind, as `meshspan-agent run` does with relay.enabled.
		key := wgtypes.Key(priv)
		b, err := relay.NewBind(conn.NewDefaultBind(), relay.BindConfig{Key: k, PrivateKey: key, Server: srv})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dev, err := wg.Open(wg.Options{Name: "msrelay", Mode: wg.ModeUserspace, MTU: 1420, ListenPort: int(n), PrivateKey: key, Bind: b})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("relay ready")
		<-sig
		dev.Close()
		pprof.StopCPUProfile()
		return 0
	}
	// relay.port: the relay on a socket of its own, as the agent runs it.
	l, err := srv.ListenUDP(uint16(n))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("relay ready")
	<-sig
	if err := l.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
