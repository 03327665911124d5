package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/lab"
	"github.com/meshspan/terraform-provider-meshspan/internal/testing/e2e"
)

// peerState reads one peer's state from a node's `meshspan-agent status`.
func peerState(ctx context.Context, l *lab.VMLab, node, peer string) (string, error) {
	out, err := l.Exec(ctx, node, "meshspan-agent", "status", "-o", "json")
	if err != nil {
		return "", err
	}
	var st struct {
		Peers []struct{ Name, State string }
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", err
	}
	for _, p := range st.Peers {
		if p.Name == peer {
			return p.State, nil
		}
	}
	return "absent", nil
}

// failClosed: with a member's agent killed, a VM on kernel WireGuard
// sends it marked datagrams; none crosses the bridge in plaintext, while
// the same marker to a non-member (the positive control) does.
func failClosed() func(context.Context, *lab.VMLab) error {
	return func(ctx context.Context, l *lab.VMLab) error {
		const vm, down = "do-1", "metal-1"
		member, _ := l.Node(down)
		// Killed, not stopped: a clean stop withdraws the affiliate, and a
		// node that left the cluster is no member to protect.
		if err := l.KillAgent(down); err != nil {
			return err
		}
		// Wait for the VM to see the peer down: then the fail-closed
		// guard, not the tunnel, is what holds the traffic back.
		var st string
		var err error
		if e2e.Poll(3*time.Minute, 2*time.Second, func() (bool, string) {
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			st, err = peerState(c, l, vm, down)
			cancel()
			return err == nil && st == "down", ""
		}) != nil {
			return fmt.Errorf("fail closed: %s still sees %s %q 3m after its agent stopped (%v)", vm, down, st, err)
		}
		l.Say("  fail closed: %s sees %s %s", vm, down, st)
		capt, err := startCapture(l.Internet())
		if err != nil {
			return err
		}
		defer capt.Stop()
		marker := newMarker()
		c, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if out, err := l.Exec(c, vm, markerArgs(marker, 5, 0.2, member.Address.Addr(), l.Mirror())...); err != nil {
			return fmt.Errorf("fail closed: send markers: %v: %s", err, out)
		}
		// Wait (bounded) for the control: then what was sent before it
		// had its chance to show too.
		e2e.Poll(6*time.Second, 200*time.Millisecond, func() (bool, string) {
			return carrying(capt.Frames(), []byte(marker))[l.Mirror()] > 0, ""
		})
		seen := carrying(capt.Stop(), []byte(marker))
		if seen[l.Mirror()] == 0 {
			return fmt.Errorf("fail closed: positive control failed: the marker to non-member %s never showed on the bridge (%s)", l.Mirror(), describe(seen))
		}
		if n := seen[member.Address.Addr()]; n > 0 {
			return fmt.Errorf("fail closed broken: %d datagrams to down member %s crossed the bridge in plaintext from kernel-WireGuard VM %s", n, down, vm)
		}
		l.Say("  fail closed (kernel path): %s -> down member %s: 0 plaintext datagrams on the bridge; control to non-member %s: %d seen", vm, down, l.Mirror(), seen[l.Mirror()])
		return nil
	}
}

// nftRecovery enables Debian's nftables.service (its /etc/nftables.conf
// starts with `flush ruleset`), restarts it, then flushes by hand: each
// time the agent's table must come back by itself within seconds, and no
// plaintext to a member crosses the bridge meanwhile.
func nftRecovery() func(context.Context, *lab.VMLab) error {
	return func(ctx context.Context, l *lab.VMLab) error {
		const vm, peer = "hetzner-1", "hetzner-2"
		member, _ := l.Node(peer)
		c, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		if out, err := l.Exec(c, vm, "sh", "-c", "head -n 3 /etc/nftables.conf && systemctl enable nftables.service"); err != nil {
			return fmt.Errorf("nftables.service: %v: %s", err, out)
		}
		for _, how := range []string{"systemctl restart nftables.service", "nft flush ruleset"} {
			capt, err := startCapture(l.Internet())
			if err != nil {
				return err
			}
			marker := newMarker()
			// Markers to a member (must go through the mesh) and to the
			// mirror (control), every 50 ms across the flush.
			sender := make(chan error, 1)
			go func() {
				out, err := l.Exec(c, vm, markerArgs(marker, 100, 0.05, member.Address.Addr(), l.Mirror())...)
				if err != nil {
					err = fmt.Errorf("%w: %s", err, out)
				}
				sender <- err
			}()
			// The table's handle proves the flush: the kernel gives a
			// re-created table a new one, and only the agent creates it.
			// The time runs from the command's start (systemctl returns
			// after the agent may already have restored it).
			script := `h0=$(nft -a list table inet meshspan 2>/dev/null | awk 'NR==1{print $NF}')
[ -n "$h0" ] || { echo "no table before"; exit 1; }
sleep 1
s=$(date +%s%N)
` + how + `
i=0
while :; do
  h=$(nft -a list table inet meshspan 2>/dev/null | awk 'NR==1{print $NF}')
  [ -n "$h" ] && [ "$h" != "$h0" ] && break
  i=$((i+1)); [ $i -gt 600 ] && { echo "handle $h0 -> '$h': never re-created"; exit 1; }
  sleep 0.05
done
e=$(date +%s%N)
nft list table inet meshspan | grep -c 'meta mark set' | sed 's/^/marks=/'
echo "handle=$h0->$h back_ms=$(( (e-s)/1000000 ))"`
			out, err := l.Exec(c, vm, "sh", "-c", script)
			serr := <-sender
			capt.Stop()
			if err != nil {
				return fmt.Errorf("after %q: %v: %s", how, err, out)
			}
			if serr != nil {
				return fmt.Errorf("markers during %q: %v", how, serr)
			}
			res := map[string]string{}
			for _, f := range strings.Fields(string(out)) {
				if k, v, ok := strings.Cut(f, "="); ok {
					res[k] = v
				}
			}
			ms, _ := strconv.Atoi(res["back_ms"])
			if ms > 10000 {
				return fmt.Errorf("after %q the agent's table took %d ms to come back", how, ms)
			}
			if n, _ := strconv.Atoi(res["marks"]); n == 0 {
				return fmt.Errorf("after %q the table came back without its mark rules: %s", how, out)
			}
			seen := carrying(capt.Frames(), []byte(marker))
			if seen[l.Mirror()] == 0 {
				return fmt.Errorf("after %q: positive control failed: no marker to non-member %s on the bridge", how, l.Mirror())
			}
			if n := seen[member.Address.Addr()]; n > 0 {
				return fmt.Errorf("after %q: %d datagrams to member %s crossed the bridge in plaintext", how, n, peer)
			}
			l.Say("  host firewall on Debian: after `%s` the agent's table (with %s mark rules; handle %s) was back in %d ms; 0 plaintext datagrams to member %s meanwhile (control to %s: %d)",
				how, res["marks"], res["handle"], ms, peer, l.Mirror(), seen[l.Mirror()])
		}
		return nil
	}
}

type identity struct {
	PublicKey   string `json:"publicKey"`
	Address     string `json:"address"`
	AffiliateID string `json:"affiliateId"`
	Mode        string `json:"mode"`
	Interface   string `json:"interface"`
	Peers       []struct{ Name, State string }
}

func readIdentity(ctx context.Context, l *lab.VMLab, node string) (identity, error) {
	var id identity
	out, err := l.Exec(ctx, node, "meshspan-agent", "status", "-o", "json")
	if err != nil {
		return id, err
	}
	err = json.Unmarshal(out, &id)
	return id, err
}

// rebootAndStop reboots a VM: it comes back with the same key, address and
// affiliate ID, on kernel WireGuard, with every peer up and one of
// everything. Then `systemctl stop meshspan-agent` removes the interface,
// the routes, the rules and the table.
func rebootAndStop(ctx context.Context, l *lab.VMLab) error {
	const vm = "hetzner-1"
	v := l.VMs()[vm]
	before, err := readIdentity(ctx, l, vm)
	if err != nil {
		return err
	}
	start := time.Now()
	// The guest agent may not answer a command that reboots its machine.
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	l.Exec(c, vm, "sh", "-c", "systemctl reboot")
	cancel()
	peers := len(l.Nodes()) - 1
	deadline := time.Now().Add(8 * time.Minute)
	var after identity
	for {
		if err := v.Running(); err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		// uptime guards against reading the old boot's agent.
		up, uerr := l.Exec(c, vm, "cut", "-d", ".", "-f", "1", "/proc/uptime")
		after, err = readIdentity(c, l, vm)
		cancel()
		secs, _ := strconv.Atoi(strings.TrimSpace(string(up)))
		if uerr == nil && err == nil && time.Duration(secs)*time.Second < time.Since(start) {
			n := 0
			for _, p := range after.Peers {
				if p.State == "up" {
					n++
				}
			}
			if n >= peers-1 { // metal-1 may be stopped by an earlier check
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reboot: %s not back in the mesh 8m after reboot (%v, %v): %+v\n%s", vm, uerr, err, after, v.Diagnose(ctx))
		}
		time.Sleep(3 * time.Second)
	}
	back := time.Since(start)
	if after.PublicKey != before.PublicKey || after.Address != before.Address || after.AffiliateID != before.AffiliateID {
		return fmt.Errorf("reboot: identity changed: before %s %s %s, after %s %s %s", before.PublicKey, before.Address, before.AffiliateID, after.PublicKey, after.Address, after.AffiliateID)
	}
	if after.Mode != "kernel" {
		return fmt.Errorf("reboot: %s came back on %q WireGuard", vm, after.Mode)
	}
	c, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// One of everything: one WireGuard link, one meshspan table, the unit
	// started once this boot.
	out, err := l.Exec(c, vm, "sh", "-c", "ip -o link show type wireguard | wc -l; nft list tables | grep -c meshspan; systemctl show -p NRestarts,ActiveState meshspan-agent")
	if err != nil {
		return err
	}
	if f := strings.Fields(string(out)); len(f) < 4 || f[0] != "1" || f[1] != "1" || !strings.Contains(string(out), "NRestarts=0") || !strings.Contains(string(out), "ActiveState=active") {
		return fmt.Errorf("reboot: leftover or missing state (want 1 link, 1 table, active, no restarts): %q", out)
	}
	l.Say("  reboot: %s back in the mesh %v after `systemctl reboot`, same key, address %s and affiliate ID; kernel WireGuard; one link, one table",
		vm, back.Round(time.Second), after.Address)

	// Stop: nothing of the agent may remain.
	rules, _ := l.Exec(c, vm, "ip", "rule")
	if out, err := l.Exec(c, vm, "systemctl", "stop", "meshspan-agent"); err != nil {
		return fmt.Errorf("systemctl stop: %v: %s", err, out)
	}
	left, err := l.Exec(c, vm, "sh", "-c", "ip -o link show dev "+after.Interface+" 2>/dev/null; nft list tables | grep meshspan; ip rule | grep -v -e 'from all lookup local' -e 'from all lookup main' -e 'from all lookup default'; true")
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(string(left)); s != "" {
		return fmt.Errorf("systemctl stop meshspan-agent left behind:\n%s\n(rules while running:\n%s)", s, rules)
	}
	l.Say("  systemctl stop meshspan-agent: interface %s, its routing rules and the nftables table are gone", after.Interface)
	return nil
}

// acceptOnce listens on [::]:port (IPv4 too), takes one connection and
// prints what it read.
const acceptOnce = `import socket,sys
s=socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("::",int(sys.argv[1])))
s.listen(4)
s.settimeout(120)
c,_=s.accept()
c.settimeout(30)
print(c.recv(100).decode())`

// dialSend connects with a timeout and sends a word; it exits 3 when the
// connection does not open.
const dialSend = `import socket,sys
try:
    c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))
except OSError as e:
    print("no connection:",e); sys.exit(3)
c.sendall(sys.argv[4].encode()); c.close()`

// firewallPorts: with a listener on TCP 5201 in the VM, an outsider on the
// underlay cannot open it (the rule admits the mesh prefix only), while a
// member over the mesh can: the positive control that the listener is there.
func firewallPorts(ctx context.Context, l *lab.VMLab) error {
	const vm, member = "hetzner-1", "hetzner-2"
	v, _ := l.Node(vm)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	srv := make(chan string, 1)
	go func() {
		out, err := l.Exec(ctx, vm, "python3", "-c", acceptOnce, "5201")
		if err != nil {
			out = append(out, []byte(err.Error())...)
		}
		srv <- strings.TrimSpace(string(out))
	}()
	time.Sleep(3 * time.Second) // the listener starts under emulation; the member's dial below retries anyway
	out, err := l.NS("mirror").Exec(ctx, "python3", "-c", dialSend, v.Address.Addr().String(), "5201", "3", "outsider")
	if err == nil {
		return fmt.Errorf("host firewall: outsider %s opened TCP 5201 on %s's underlay address (allowed from the mesh only): %s", l.Mirror(), vm, out)
	}
	var got string
	for i := 0; i < 20; i++ {
		if _, err = l.Exec(ctx, member, "python3", "-c", dialSend, l.MeshAddr(vm).String(), "5201", "3", "member"); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return fmt.Errorf("host firewall: member %s could not open TCP 5201 on %s over the mesh: %v", member, vm, err)
	}
	got = <-srv
	if got != "member" {
		return fmt.Errorf("host firewall: the listener on %s read %q, want the member's word", vm, got)
	}
	l.Say("  host firewall on Debian: TCP 5201 on %s refused to outsider %s (%s), open to member %s over the mesh", vm, l.Mirror(), strings.TrimSpace(string(out)), member)
	return nil
}
