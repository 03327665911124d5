package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshspan/terraform-provider-meshspan/internal/natpath"
)

// Status is what the running agent reports on its socket (GET /status),
// and what `meshspan-agent status -o json|yaml` prints.
type Status struct {
	Node        string `json:"node" yaml:"node"`
	PublicKey   string `json:"publicKey" yaml:"publicKey"`
	Address     string `json:"address" yaml:"address"`
	AffiliateID string `json:"affiliateId" yaml:"affiliateId"`
	Interface   string `json:"interface" yaml:"interface"`
	// Mode is the WireGuard back end: kernel or userspace.
	Mode       string `json:"mode" yaml:"mode"`
	ListenPort int    `json:"listenPort" yaml:"listenPort"`
	// Endpoints are the endpoints this node advertises.
	Endpoints []string `json:"endpoints" yaml:"endpoints"`
	// ObservedAddress is this node's address as discovery sees it.
	ObservedAddress string   `json:"observedAddress,omitempty" yaml:"observedAddress,omitempty"`
	Discovery       bool     `json:"discovery" yaml:"discovery"`
	Warnings        []string `json:"warnings" yaml:"warnings"`
	// Peers are shared between statuses while they do not change: a line
	// is never changed once made.
	Peers []*PeerStatus `json:"peers" yaml:"peers"`
	// UpdatedAt is the end of the last reconcile pass.
	UpdatedAt time.Time `json:"updatedAt" yaml:"updatedAt"`
}

// PeerStatus is one peer's line.
type PeerStatus struct {
	Name        string `json:"name" yaml:"name"`
	PublicKey   string `json:"publicKey" yaml:"publicKey"`
	AffiliateID string `json:"affiliateId,omitempty" yaml:"affiliateId,omitempty"`
	Address     string `json:"address" yaml:"address"`
	// Endpoint is the live endpoint WireGuard uses ("" if none).
	Endpoint string `json:"endpoint" yaml:"endpoint"`
	// State is unknown, up or down.
	State   string `json:"state" yaml:"state"`
	RxBytes int64  `json:"rxBytes" yaml:"rxBytes"`
	TxBytes int64  `json:"txBytes" yaml:"txBytes"`
	// LastHandshake and LastActivity are RFC 3339, "" when never.
	LastHandshake   string   `json:"lastHandshake" yaml:"lastHandshake"`
	LastActivity    string   `json:"lastActivity" yaml:"lastActivity"`
	EndpointChanges int      `json:"endpointChanges" yaml:"endpointChanges"`
	AllowedIPs      []string `json:"allowedIPs" yaml:"allowedIPs"`
	// Candidates are the endpoints tried in turn while the peer is down.
	Candidates []string `json:"candidates" yaml:"candidates"`
	// Path, Via and PathReason are set when a PathChooser (NAT traversal)
	// picks endpoints: e.g. "relayed" via node "n4".
	Path       string `json:"path,omitempty" yaml:"path,omitempty"`
	Via        string `json:"via,omitempty" yaml:"via,omitempty"`
	PathReason string `json:"pathReason,omitempty" yaml:"pathReason,omitempty"`
}

// listenSocket opens the status socket, refusing to steal a live agent's.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent: status socket: create %s: %w (set --socket to a writable path)", filepath.Dir(path), err)
	}
	if exists, sock := isSocket(path); exists && !sock {
		return nil, fmt.Errorf("agent: status socket: %s exists and is not a socket; give --socket a path of its own (it is never removed)", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("agent: status socket %s answers: another agent is running; stop it or give this one another --socket", path)
	}
	removeSocket(path) // stale, from an agent that did not shut down cleanly
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: status socket: listen on %s: %w (set --socket to a writable path)", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("agent: status socket: chmod %s: %w", path, err)
	}
	return l, nil
}

// FetchStatus asks the agent listening on socket for its status.
func FetchStatus(ctx context.Context, socket string) (*Status, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, statusError(socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("agent: status from %s: %w", socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent: status from %s: %s: %s", socket, resp.Status, strings.TrimSpace(string(body)))
	}
	var s Status
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("agent: status from %s: decode: %w", socket, err)
	}
	return &s, nil
}

// statusError explains why the status socket did not answer.
func statusError(socket string, err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("agent: permission denied on the status socket %s; run status as root or as a member of the socket's group (it is mode 0660)", socket)
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("agent: no agent answers on %s; is `meshspan-agent run` running (and is --socket the same)?", socket)
	}
	return fmt.Errorf("agent: status from %s: %w", socket, err)
}

// isSocket reports whether path exists and is a unix socket (not following
// a symlink).
func isSocket(path string) (exists, socket bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, false
	}
	return true, fi.Mode().Type() == fs.ModeSocket
}

// removeSocket removes the status socket at path, and never anything else:
// --socket may name a file that is not ours.
func removeSocket(path string) {
	if _, ok := isSocket(path); ok {
		os.Remove(path)
	}
}

// WriteTable prints s like KubeSpan's peer status table, with a header
// naming this node, its mode and any warnings.
func WriteTable(w io.Writer, s *Status, now time.Time) error {
	fmt.Fprintf(w, "node %s  address %s  interface %s (%s)  port %d\n", s.Node, s.Address, s.Interface, s.Mode, s.ListenPort)
	fmt.Fprintf(w, "public key %s\n", s.PublicKey)
	if len(s.Endpoints) > 0 {
		fmt.Fprintf(w, "endpoints %s\n", strings.Join(s.Endpoints, ", "))
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PUBLIC KEY\tNODE\tENDPOINT\tSTATE\tPATH\tVIA\tRX\tTX\tLAST HANDSHAKE")
	var unreachable []*PeerStatus
	for _, p := range s.Peers {
		state := p.State
		// natpath's no-path: neither a direct endpoint nor a relay ever
		// carried a handshake (both ends behind NAT, no relay); the agent
		// keeps trying. A peer that did handshake and went silent is down,
		// most likely dead, and relay advice would mislead.
		if p.Path == string(natpath.ModeNoPath) && p.State != "up" && p.LastHandshake == "" {
			state = "no reachable endpoint"
			unreachable = append(unreachable, p)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.PublicKey, dash(p.Name), dash(p.Endpoint), state,
			dash(p.Path), dash(p.Via), humanBytes(p.RxBytes), humanBytes(p.TxBytes), ago(p.LastHandshake, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(unreachable) > 0 {
		fmt.Fprintln(w)
	}
	for _, p := range unreachable {
		fmt.Fprintf(w, "%s: no reachable endpoint: %s\n", dash(p.Name), dash(p.PathReason))
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(rfc3339 string, now time.Time) string {
	t, err := time.Parse(time.RFC3339Nano, rfc3339)
	if err != nil {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
