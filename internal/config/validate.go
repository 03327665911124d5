package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
)

// FieldError is one validation failure. Field is the YAML path
// ("wireguard.mtu", "firewall.rules[2].port"); Msg says what is wrong and how
// to fix it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// FieldErrors returns every *FieldError inside err (as joined by Validate).
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) && err == error(fe) {
			out = append(out, fe)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if errors.As(err, &fe) {
			out = append(out, fe)
		}
	}
	walk(err)
	return out
}

type validator struct{ errs []error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

var (
	nodeNameRe   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	labelNameRe  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelPrefRe  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	labelValueRe = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	ifaceNameRe  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
)

// Validate checks the whole config (defaults must already be applied) and
// returns every problem at once, joined; each is a *FieldError.
func (c *Config) Validate() error {
	v := &validator{}
	if c.APIVersion != APIVersion {
		v.add("apiVersion", "is %q; set it to %q", c.APIVersion, APIVersion)
	}
	if c.Kind != Kind {
		v.add("kind", "is %q; set it to %q", c.Kind, Kind)
	}
	v.node(&c.Node)
	v.cluster(&c.Cluster)
	v.discovery(&c.Discovery)
	if len(c.Discovery.Endpoints) == 0 && len(c.StaticPeers) == 0 {
		v.add("discovery.endpoints", "no discovery endpoint and no static peer: set at least one discovery endpoint URL or one static peer, or this node can never find a peer")
	}
	for i := range c.StaticPeers {
		v.staticPeer(fmt.Sprintf("staticPeers[%d]", i), &c.StaticPeers[i])
	}
	v.wireguard(&c.WireGuard)
	for i, f := range c.EndpointFilters {
		if _, _, err := ParseEndpointFilter(f); err != nil {
			v.add(fmt.Sprintf("endpointFilters[%d]", i), "%v", err)
		}
	}
	for i, e := range c.ExtraEndpoints {
		if _, err := netip.ParseAddrPort(e); err != nil {
			v.add(fmt.Sprintf("extraEndpoints[%d]", i), "%q is not ip:port; write 203.0.113.7:51820 or [2001:db8::7]:51820", e)
		}
	}
	v.prefixes("advertisedNetworks", c.AdvertisedNetworks)
	if !c.AllowWideAdvertisedNetworks {
		for i, s := range c.AdvertisedNetworks {
			if p, err := ParsePrefix(s); err == nil && IsWide(p) {
				what := "a wide route"
				if p.Bits() == 0 {
					what = "a default route"
				}
				v.add(fmt.Sprintf("advertisedNetworks[%d]", i), "%q is %s: every member that took it would send all such traffic to this node; remove it, or if this node is an exit node set allowWideAdvertisedNetworks: true (members must still approve it in filters.approvedRoutes)", s, what)
			}
		}
	}
	v.filters(&c.Filters)
	v.prefixes("lanBypass", c.LANBypass)
	v.routing(&c.Routing)
	v.health(&c.Health, &c.WireGuard)
	v.firewall(&c.Firewall)
	if c.Relay.Port < 0 || c.Relay.Port > 65535 {
		v.add("relay.port", "%d is not a port; use 1..65535, or 0 for the WireGuard listen port", c.Relay.Port)
	} else if c.Relay.Port != 0 && !c.Relay.Enabled {
		v.add("relay.port", "%d is set but relaying is off; set relay.enabled: true, or remove relay.port", c.Relay.Port)
	}
	return errors.Join(v.errs...)
}

func (v *validator) node(n *Node) {
	switch {
	case n.Name == "":
		v.add("node.name", "is empty; set a node name such as \"worker-1\" (lower case letters, digits, '-' and '.')")
	case len(n.Name) > 253 || !nodeNameRe.MatchString(n.Name):
		v.add("node.name", "%q is not a valid node name; use at most 253 lower case letters, digits, '-' and '.', starting and ending with a letter or digit", n.Name)
	}
	for k, val := range n.Labels {
		if err := ValidateLabel(k, val); err != nil {
			v.add("node.labels."+k, "%v", err)
		}
	}
}

// ValidateLabel checks a label as Kubernetes does: [prefix/]name=value.
func ValidateLabel(key, value string) error {
	name := key
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		prefix := key[:i]
		name = key[i+1:]
		if prefix == "" || len(prefix) > 253 || !labelPrefRe.MatchString(prefix) {
			return fmt.Errorf("label key %q has an invalid prefix; use a DNS name such as example.com/", key)
		}
	}
	if name == "" || len(name) > 63 || !labelNameRe.MatchString(name) {
		return fmt.Errorf("label key %q is invalid; use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", key)
	}
	if len(value) > 63 || !labelValueRe.MatchString(value) {
		return fmt.Errorf("label value %q is invalid; use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", value)
	}
	return nil
}

func (v *validator) cluster(c *Cluster) {
	if err := ValidateClusterID(c.ID); err != nil {
		v.add("cluster.id", "%v", err)
	}
	if err := ValidateClusterSecret(c.Secret); err != nil {
		v.add("cluster.secret", "%v", err)
	}
}

// ValidateClusterID accepts what Talos generates: 32 random bytes in padded
// base64 (exactly 44 characters), std or (before Talos 1.14) URL-safe
// alphabet.
func ValidateClusterID(id string) error {
	if id == "" {
		return errors.New("is empty; take it from the meshspan_cluster_secrets resource (or an existing Talos cluster's cluster.id)")
	}
	switch err := clusterkey.CheckID(id); {
	case errors.Is(err, clusterkey.ErrWhitespace):
		return err
	case err != nil:
		return errors.New("must be 32 bytes in padded base64 (exactly 44 characters), as Talos generates it; take it from the meshspan_cluster_secrets resource")
	}
	return nil
}

// ValidateClusterSecret requires 32 bytes in std base64 (exactly 44
// characters), as Talos does.
func ValidateClusterSecret(s string) error {
	if s == "" {
		return errors.New("is empty; take it from the meshspan_cluster_secrets resource (or an existing Talos cluster's cluster.secret)")
	}
	switch _, err := clusterkey.Key(s); {
	case errors.Is(err, clusterkey.ErrWhitespace):
		return clusterkey.ErrWhitespace
	case err != nil:
		return errors.New("must be 32 bytes in standard padded base64 (exactly 44 characters); take it from the meshspan_cluster_secrets resource")
	}
	return nil
}

func (v *validator) discovery(d *Discovery) {
	seen := map[string]bool{}
	for i, e := range d.Endpoints {
		field := fmt.Sprintf("discovery.endpoints[%d]", i)
		if err := ValidateDiscoveryURL(e); err != nil {
			v.add(field, "%v", err)
		}
		if seen[e] {
			v.add(field, "%q is listed twice; remove the duplicate", e)
		}
		seen[e] = true
	}
	if d.TTL.D() < time.Minute || d.TTL.D() > 30*time.Minute {
		v.add("discovery.ttl", "%s is out of range; use 1m..30m (the discovery service caps TTLs at 30m)", d.TTL.D())
	}
}

// ValidateDiscoveryURL accepts https://host[:port][/] or http://host[:port][/].
func ValidateDiscoveryURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return fmt.Errorf("%q is not a discovery URL; write https://discovery.example.com/ (or http://host:port/ for plaintext)", s)
	}
	if strings.Contains(s, "#") {
		return fmt.Errorf("%q has a #fragment, which the discovery client would drop; remove it, e.g. https://discovery.example.com:443/", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q has a path, query or credentials; write only scheme, host and port, e.g. https://discovery.example.com:443/", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port; use 1..65535", s)
		}
	}
	return nil
}

func (v *validator) staticPeer(field string, p *StaticPeer) {
	if p.Name != "" && (len(p.Name) > 253 || !nodeNameRe.MatchString(p.Name)) {
		v.add(field+".name", "%q is not a valid node name; use lower case letters, digits, '-' and '.'", p.Name)
	}
	if _, err := wgtypes.ParseKey(p.PublicKey); err != nil {
		v.add(field+".publicKey", "is not a WireGuard public key; paste the 44-character base64 key that `meshspan-agent identity` prints on that node")
	}
	if a, err := netip.ParseAddr(p.Address); err != nil || !a.Is6() || a.Is4In6() {
		v.add(field+".address", "%q is not an IPv6 address; use the peer's mesh address that `meshspan-agent identity` prints", p.Address)
	}
	for i, e := range p.Endpoints {
		if _, err := netip.ParseAddrPort(e); err != nil {
			v.add(fmt.Sprintf("%s.endpoints[%d]", field, i), "%q is not ip:port; write 203.0.113.7:51820 or [2001:db8::7]:51820", e)
		}
	}
	v.prefixes(field+".networks", p.Networks)
	if p.RelayPort < 0 || p.RelayPort > 65535 {
		v.add(field+".relayPort", "%d is not a port; use the peer's relay port, 1..65535 (its relay.port, or its WireGuard listen port), or 0 if it does not relay", p.RelayPort)
	}
}

func (v *validator) filters(f *Filters) {
	v.prefixes("filters.excludeAdvertisedNetworks", f.ExcludeAdvertisedNetworks)
	for i, e := range f.PeerEndpoints {
		if _, _, err := ParseEndpointFilter(e); err != nil {
			v.add(fmt.Sprintf("filters.peerEndpoints[%d]", i), "%v", err)
		}
	}
	for i, a := range f.ApprovedRoutes {
		field := fmt.Sprintf("filters.approvedRoutes[%d]", i)
		if _, err := wgtypes.ParseKey(a.PublicKey); err != nil {
			v.add(field+".publicKey", "is not a WireGuard public key; paste the 44-character base64 key that `meshspan-agent identity` prints on the peer (names are chosen by the peer itself, so they cannot approve anything)")
		}
		if len(a.Networks) == 0 {
			v.add(field+".networks", "is empty; list the networks this peer may route, e.g. [\"0.0.0.0/0\"] for an exit node")
		}
		v.prefixes(field+".networks", a.Networks)
	}
}

func (v *validator) wireguard(w *WireGuard) {
	if !ifaceNameRe.MatchString(w.Interface) {
		v.add("wireguard.interface", "%q is not an interface name; use 1..15 letters, digits, '_', '-' or '.'", w.Interface)
	}
	if w.ListenPort < 1 || w.ListenPort > 65535 {
		v.add("wireguard.listenPort", "%d is not a port; use 1..65535 (default %d)", w.ListenPort, DefaultListenPort)
	}
	if w.MTU < MinMTU || w.MTU > MaxMTU {
		v.add("wireguard.mtu", "%d is out of range; use %d..%d (default %d)", w.MTU, MinMTU, MaxMTU, DefaultMTU)
	}
	if w.Keepalive.D() < time.Second || w.Keepalive.D() > 65535*time.Second {
		v.add("wireguard.keepalive", "%s is out of range; use 1s..18h (default %s)", w.Keepalive.D(), DefaultKeepalive)
	}
}

func (v *validator) prefixes(field string, list []string) {
	for i, s := range list {
		if _, err := ParsePrefix(s); err != nil {
			v.add(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
}

// ParsePrefix reads a CIDR (or a bare IP as /32 or /128) and rejects host bits,
// which would otherwise be masked silently.
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR; write 10.0.0.0/8 or 2001:db8::/32", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR; write 10.0.0.0/8 or 2001:db8::/32", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// ParseEndpointFilter reads one endpoint filter entry: a CIDR or bare IP,
// optionally prefixed with "!" to negate it.
func ParseEndpointFilter(s string) (p netip.Prefix, negate bool, err error) {
	negate = strings.HasPrefix(s, "!")
	body := strings.TrimPrefix(s, "!")
	if q, err := netip.ParsePrefix(body); err == nil && q.Masked() != q {
		return netip.Prefix{}, false, fmt.Errorf("%q has host bits set; did you mean %s%s?", s, strings.TrimSuffix(s, body), q.Masked())
	}
	if strings.Contains(body, "/") {
		p, err = netip.ParsePrefix(body)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(body)
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("%q is not a CIDR or IP (optionally prefixed with !); write e.g. \"0.0.0.0/0\" or \"!192.168.0.0/16\"", s)
	}
	return p, negate, nil
}

func (v *validator) routing(r *Routing) {
	if r.Table < 1 || r.Table > 252 {
		v.add("routing.table", "%d is not a usable routing table; use 1..252 (default %d)", r.Table, DefaultRouteTable)
	}
	if r.MarkMask == 0 || r.FirewallMark&^r.MarkMask != 0 || r.ForceMark&^r.MarkMask != 0 || r.FirewallMark == r.ForceMark {
		v.add("routing", "marks must be distinct and inside markMask (firewallMark %#x, forceMark %#x, markMask %#x); keep the defaults %#x, %#x, %#x unless they clash", r.FirewallMark, r.ForceMark, r.MarkMask, DefaultFirewallMark, DefaultForceMark, DefaultMarkMask)
	}
	if r.RulePriority < 1 || r.RulePriority > 32765 {
		v.add("routing.rulePriority", "%d is out of range; use 1..32765 (default %d)", r.RulePriority, DefaultRulePriority)
	}
}

func (v *validator) health(h *Health, w *WireGuard) {
	if h.DownAfter.D() <= w.Keepalive.D() {
		v.add("health.downAfter", "%s must be longer than wireguard.keepalive (%s), or live peers look down; use at least twice the keepalive", h.DownAfter.D(), w.Keepalive.D())
	}
	if h.EndpointProbe.D() < time.Second || h.EndpointProbe.D() > 5*time.Minute {
		v.add("health.endpointProbe", "%s is out of range; use 1s..5m (default %s)", h.EndpointProbe.D(), DefaultEndpointProbe)
	}
}

func (v *validator) firewall(f *Firewall) {
	switch f.DefaultAction {
	case "", "accept", "block":
	default:
		v.add("firewall.defaultAction", "%q is not an action; use \"accept\" or \"block\"", f.DefaultAction)
	}
	if len(f.Rules) > 0 && f.DefaultAction == "" {
		v.add("firewall.defaultAction", "is empty but rules are set; set \"block\" (rules admit traffic) or \"accept\"")
	}
	if len(f.Rules) > MaxFirewallRules {
		v.add("firewall.rules", "has %d rules; at most %d are allowed: merge rules (a port range, several sources per rule)", len(f.Rules), MaxFirewallRules)
		return
	}
	for i := range f.Rules {
		r := &f.Rules[i]
		field := fmt.Sprintf("firewall.rules[%d]", i)
		if len(r.Name) > MaxFirewallRuleName || strings.IndexFunc(r.Name, func(c rune) bool { return !unicode.IsPrint(c) }) >= 0 {
			v.add(field+".name", "%q must be at most %d printable characters (no newlines or control characters); it becomes an nftables comment", r.Name, MaxFirewallRuleName)
		}
		switch r.Protocol {
		case "tcp", "udp":
			if r.Port != "" {
				if _, _, err := ParsePortRange(r.Port); err != nil {
					v.add(field+".port", "%v", err)
				}
			}
		case "icmp", "icmpv6":
			if r.Port != "" {
				v.add(field+".port", "is %q but %s has no ports; remove it", r.Port, r.Protocol)
			}
		default:
			v.add(field+".protocol", "%q is not supported; use tcp, udp, icmp or icmpv6", r.Protocol)
		}
		v.prefixes(field+".sources", r.Sources)
		switch r.Action {
		case "accept", "block":
		default:
			v.add(field+".action", "%q is not an action; use \"accept\" or \"block\"", r.Action)
		}
	}
}

// Host firewall limits: the agent applies the rules as one nftables
// transaction, and a rule's name becomes an nftables comment (128 bytes).
const (
	MaxFirewallRules    = 1000
	MaxFirewallRuleName = 128
)

// ParsePortRange reads "6443" or "30000-32767": digits only, so "+80" (which
// strconv accepts) is refused rather than sent to a cloud API.
func ParsePortRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := parsePort(a)
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = parsePort(b)
	}
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a port or range; write \"6443\" or \"30000-32767\" (1..65535, low-high)", s)
	}
	return lo, hi, nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.Atoi(s)
}
