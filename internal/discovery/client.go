package discovery

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientpb "github.com/siderolabs/discovery-api/api/v1alpha1/client/pb"
	serverpb "github.com/siderolabs/discovery-api/api/v1alpha1/server/pb"
	dclient "github.com/siderolabs/discovery-client/pkg/client"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/meshspan/terraform-provider-meshspan/internal/reserve"
)

// ClientOptions configure a discovery client.
type ClientOptions struct {
	// Endpoints are discovery service URLs: https://host[:port]/ (TLS, port
	// 443 by default) or http://host[:port]/ (plaintext, port 80). Several:
	// one connection each, their views merged.
	Endpoints     []string
	ClusterID     string
	ClusterSecret string // base64 of 32 bytes (AES-256 key)
	AffiliateID   string
	// TTL of what we publish; 0: 30 min (Talos). Re-published every TTL/2.
	TTL time.Duration
	// CACertificatePEM, if set, is trusted in addition to the system roots
	// for https endpoints.
	CACertificatePEM string
	// ClientVersion is sent in Hello (metrics only); default "meshspan".
	ClientVersion string
	Logger        *slog.Logger
	// Dialer, if set, opens the TCP connections to the endpoints (host:port);
	// the node agent marks their sockets so host policy routing leaves them
	// on the underlay.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// Client publishes the local affiliate to one or more discovery services
// and watches the cluster's other affiliates. It wraps the discovery-client
// Talos runs, so blobs are sealed exactly as Talos seals them.
type Client struct {
	opts    ClientOptions
	log     *slog.Logger
	subs    []*endpointClient
	changes chan struct{}

	decryptFailures atomic.Uint64
	published       atomic.Bool

	memoMu sync.Mutex
	memo   map[*dclient.Affiliate]*memoEntry // conversions by the client's value
	builds uint64                            // views built, to sweep memo
	// order is the last view's entries in ID order, with one service
	// (sortedView).
	order []*memoEntry
	// gen counts the underlying clients' change notifications (Run): what
	// they hold changes only before one. view is the last Affiliates, for
	// generation viewGen; valid while viewOK.
	gen     atomic.Uint64
	view    []*Affiliate
	viewGen uint64
	viewOK  bool
}

type endpointClient struct {
	url  string
	opts dclient.Options
	dc   *dclient.Client

	mu     sync.Mutex
	local  *dclient.Affiliate // what SetLocal last gave, for republish
	others []dclient.Endpoint
}

// setLocal hands the underlying client what to publish, and keeps it.
func (e *endpointClient) setLocal(local *dclient.Affiliate, others []dclient.Endpoint) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.local, e.others = local, others
	return e.dc.SetLocalData(local, others)
}

// republish hands the underlying client its data again. discovery-client
// v0.1.15, when a publish fails (a 30 s deadline on a loaded service),
// drops its watch and then waits for new local data or its TTL/2 refresh
// (15 min by default) before it reconnects: a node that started while
// the service was slow stayed unpublished and blind for that long. New
// data takes it through its reconnect (backoff, Hello, watch, publish)
// at once.
func (e *endpointClient) republish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.local != nil {
		e.dc.SetLocalData(e.local, e.others) //nolint:errcheck // sealed once already: cannot fail now
	}
}

// DefaultTTL is Talos' discovery TTL.
const DefaultTTL = 30 * time.Minute

// NewClient checks opts and prepares one underlying client per endpoint.
// Nothing is dialled before Run.
func NewClient(opts ClientOptions) (*Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("discovery: client: no endpoints: set at least one discovery URL such as https://discovery.example.com/")
	}
	if opts.ClusterID == "" {
		return nil, errors.New("discovery: client: cluster ID is empty: set it from the cluster secrets")
	}
	if opts.AffiliateID == "" {
		return nil, errors.New("discovery: client: affiliate ID is empty: generate one with NewAffiliateID and keep it")
	}
	key, err := base64.StdEncoding.DecodeString(opts.ClusterSecret)
	if err != nil || len(key) != 32 {
		return nil, errors.New("discovery: client: cluster secret must be base64 of exactly 32 bytes (as clusterkey generates)")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("discovery: client: cipher: %w", err)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < 2*time.Second || opts.TTL > 30*time.Minute {
		return nil, fmt.Errorf("discovery: client: TTL %s is outside 2s..30m", opts.TTL)
	}
	if opts.ClientVersion == "" {
		opts.ClientVersion = "meshspan"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var roots *x509.CertPool // nil: the system roots
	if opts.CACertificatePEM != "" {
		// In addition to the system roots, not instead: a node may move
		// from a private discovery service to a public one.
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool() // no system roots on this host
		}
		if !roots.AppendCertsFromPEM([]byte(opts.CACertificatePEM)) {
			return nil, errors.New("discovery: client: CA certificate holds no PEM certificate")
		}
	}
	c := &Client{opts: opts, log: opts.Logger, changes: make(chan struct{}, 1)}
	for _, raw := range opts.Endpoints {
		target, insecure, err := ParseEndpoint(raw)
		if err != nil {
			return nil, err
		}
		do := dclient.Options{
			Cipher:        block,
			Endpoint:      target,
			ClusterID:     opts.ClusterID,
			AffiliateID:   opts.AffiliateID,
			ClientVersion: opts.ClientVersion,
			TTL:           opts.TTL,
			Insecure:      insecure,
		}
		if opts.Dialer != nil {
			do.DialOptions = []grpc.DialOption{grpc.WithContextDialer(opts.Dialer)}
		}
		if !insecure {
			do.TLSConfig = func() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots} }
		}
		dc, err := dclient.NewClient(do)
		if err != nil {
			return nil, fmt.Errorf("discovery: client: %s: %w", raw, err)
		}
		c.subs = append(c.subs, &endpointClient{url: raw, opts: do, dc: dc})
	}
	return c, nil
}

// ParseEndpoint turns a discovery URL into a gRPC target: https (TLS, port
// 443 by default) or http (plaintext, port 80), as Talos reads it.
func ParseEndpoint(raw string) (target string, insecure bool, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", false, fmt.Errorf("discovery: client: endpoint %q is not a URL: use https://host[:port]/ or http://host[:port]/", raw)
	}
	port := u.Port()
	switch u.Scheme {
	case "https":
		if port == "" {
			port = "443"
		}
	case "http":
		insecure = true
		if port == "" {
			port = "80"
		}
	default:
		return "", false, fmt.Errorf("discovery: client: endpoint %q has scheme %q: use https:// (or http:// for plaintext)", raw, u.Scheme)
	}
	return net.JoinHostPort(u.Hostname(), port), insecure, nil
}

// Run keeps every endpoint connected until ctx ends, then deletes our
// affiliate from each service (best effort, 5 s) so peers drop us at once
// instead of after the TTL.
func (c *Client) Run(ctx context.Context) error {
	notify := make(chan struct{}, 1)
	errs := make([]error, len(c.subs))
	var wg sync.WaitGroup
	for i, s := range c.subs {
		zl := zap.New(&slogCore{log: c.log, failures: &c.decryptFailures, publishFailed: s.republish})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.dc.Run(ctx, zl.With(zap.String("endpoint", s.url)), notify); err != nil {
				errs[i] = fmt.Errorf("discovery: client: %s: %w", s.url, err)
			}
		}()
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-notify:
			c.gen.Add(1)
			c.signal()
		}
	}
	wg.Wait()
	c.gen.Add(1) // a change whose notification was not taken
	if c.published.Load() {
		c.deleteSelf()
	}
	return errors.Join(errs...)
}

func (c *Client) deleteSelf() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range c.subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := grpc.NewClient(s.opts.Endpoint, dclient.GRPCDialOptions(s.opts)...)
			if err != nil {
				c.log.Warn("discovery: client: delete own affiliate", "endpoint", s.url, "err", err)
				return
			}
			defer conn.Close() //nolint:errcheck
			_, err = serverpb.NewClusterClient(conn).AffiliateDelete(ctx, &serverpb.AffiliateDeleteRequest{
				ClusterId: c.opts.ClusterID, AffiliateId: c.opts.AffiliateID,
			})
			if err != nil {
				c.log.Warn("discovery: client: delete own affiliate", "endpoint", s.url, "err", err)
			}
		}()
	}
	wg.Wait()
}

func (c *Client) signal() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// SetLocal sets what we publish: our own affiliate and the endpoints we
// observed for peers (by affiliate ID). It triggers a publish.
func (c *Client) SetLocal(self Affiliate, observed map[string][]netip.AddrPort) {
	self.ID = c.opts.AffiliateID
	local := &dclient.Affiliate{Affiliate: toProto(self), Endpoints: endpointsProto(self.Endpoints)}
	ids := make([]string, 0, len(observed))
	for id := range observed {
		if id != c.opts.AffiliateID && len(observed[id]) > 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	others := make([]dclient.Endpoint, 0, len(ids))
	for _, id := range ids {
		others = append(others, dclient.Endpoint{AffiliateID: id, Endpoints: endpointsProto(observed[id])})
	}
	for _, s := range c.subs {
		if err := s.setLocal(local, others); err != nil {
			// Only marshalling or the random source can fail here.
			c.log.Error("discovery: client: seal local data", "endpoint", s.url, "err", err)
			continue
		}
		c.published.Store(true)
	}
}

// Affiliates is the merged, de-duplicated view of every live affiliate but
// ourselves. While a service is unreachable its last view is kept.
//
// Between changes it returns the same slice, and an affiliate that did not
// change is the same pointer from view to view: every reconcile pass reads
// the view, and at a thousand members building it was a fifth of a pass,
// copying affiliates a tenth of the members' CPU. The slice, the
// affiliates and the slices in them are shared with other calls: read
// them, do not modify them.
//
// Each affiliate is converted once per change: the underlying client
// replaces an affiliate's value whenever its blob changes, so conversions
// are kept by that value and a call after one change converts one
// affiliate, not all of them.
func (c *Client) Affiliates() []*Affiliate {
	c.memoMu.Lock()
	defer c.memoMu.Unlock()
	// The generation is read before the clients' data: a change after this
	// read has its notification counted after it, so the view built below
	// is not taken for the newer generation.
	gen := c.gen.Load()
	if c.viewOK && c.viewGen == gen {
		return c.view
	}
	if c.memo == nil {
		c.memo = make(map[*dclient.Affiliate]*memoEntry)
	}
	c.builds++
	lists, n := make([][]*dclient.Affiliate, len(c.subs)), 0
	for i, s := range c.subs {
		lists[i] = s.dc.GetAffiliates()
		n += len(lists[i])
	}
	if len(lists) == 1 {
		c.view, c.viewGen, c.viewOK = c.sortedView(lists[0]), gen, true
		return c.view
	}
	// The view is sorted through small items; an affiliate that other
	// services list with more endpoints is a merged copy.
	items := make([]viewItem, 0, n)
	byID := make(map[string]int, n) // to merge the services' views
	for _, list := range lists {
		for _, da := range list {
			e, _ := c.entry(da)
			if e == nil {
				continue
			}
			e.build = c.builds
			if i, seen := byID[e.a.ID]; seen {
				items[i].more = append(items[i].more, e.a.Endpoints...)
				continue
			}
			byID[e.a.ID] = len(items)
			items = append(items, viewItem{e: e})
		}
	}
	for da, e := range c.memo {
		if e.build != c.builds {
			delete(c.memo, da) // replaced or gone
		}
	}
	slices.SortFunc(items, func(x, y viewItem) int { return strings.Compare(x.e.a.ID, y.e.a.ID) })
	sorted := make([]*Affiliate, len(items))
	for i, it := range items {
		sorted[i] = &it.e.a
		for _, ep := range it.more {
			if !slices.Contains(sorted[i].Endpoints, ep) {
				if sorted[i] == &it.e.a {
					merged := it.e.a
					sorted[i] = &merged
				}
				sorted[i].Endpoints = append(slices.Clip(sorted[i].Endpoints), ep)
			}
		}
	}
	c.view, c.viewGen, c.viewOK = sorted, gen, true
	return sorted
}

// memoEntry is an affiliate converted from the client's value da, and the
// last view build that listed it.
type memoEntry struct {
	a     Affiliate
	build uint64
	da    *dclient.Affiliate
}

// entry is da's conversion, made now (isNew) or before; nil for a value
// that does not convert.
func (c *Client) entry(da *dclient.Affiliate) (e *memoEntry, isNew bool) {
	if e = c.memo[da]; e != nil {
		return e, false
	}
	a, ok := affiliateFromProto(da)
	if !ok {
		return nil, false
	}
	a.Endpoints = slices.Clip(a.Endpoints)
	e = &memoEntry{a: a, da: da}
	c.memo[da] = e
	return e, true
}

// sortedView is the view of one service's affiliates. A change replaces a
// few of the client's values: the others keep their order from the last
// view, only the new ones are sorted, and the two are merged (sorting a
// thousand on every change was a tenth of a member's CPU at N = 1,000 in
// tests/scale).
func (c *Client) sortedView(list []*dclient.Affiliate) []*Affiliate {
	c.memo = reserve.Map(c.memo, len(list)-len(c.order))
	var fresh []*memoEntry
	for _, da := range list {
		e, isNew := c.entry(da)
		if e == nil {
			continue
		}
		if isNew {
			fresh = append(fresh, e)
		}
		e.build = c.builds
	}
	byID := func(x, y *memoEntry) int { return strings.Compare(x.a.ID, y.a.ID) }
	slices.SortFunc(fresh, byID)
	order := make([]*memoEntry, 0, len(list))
	for _, e := range c.order {
		if e.build != c.builds {
			delete(c.memo, e.da) // replaced or gone
			continue
		}
		for len(fresh) > 0 && byID(fresh[0], e) < 0 {
			order, fresh = append(order, fresh[0]), fresh[1:]
		}
		order = append(order, e)
	}
	order = append(order, fresh...)
	c.order = order
	view := make([]*Affiliate, len(order))
	for i, e := range order {
		view[i] = &e.a
	}
	return view
}

// viewItem is an affiliate of the view being built, with the endpoints
// other services list for it.
type viewItem struct {
	e    *memoEntry
	more []netip.AddrPort
}

// ObservedAddress is our address as the first service that reported one
// sees it (Hello client_ip); zero if unknown.
func (c *Client) ObservedAddress() netip.Addr {
	for _, s := range c.subs {
		var a netip.Addr
		if b := s.dc.GetPublicIP(); len(b) > 0 && a.UnmarshalBinary(b) == nil && a.IsValid() {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// Changes is signalled (coalesced) when Affiliates or ObservedAddress may
// have changed.
func (c *Client) Changes() <-chan struct{} { return c.changes }

// DecryptFailures counts received blobs that did not open with our key
// (another cluster's data under the same ID, or tampering).
func (c *Client) DecryptFailures() uint64 { return c.decryptFailures.Load() }

// NewAffiliateID returns 32 random bytes in base62, like a Talos node ID.
func NewAffiliateID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("discovery: affiliate ID: %w", err)
	}
	return new(big.Int).SetBytes(b[:]).Text(62), nil
}

func addrBytes(a netip.Addr) []byte { return a.Unmap().AsSlice() }

func prefixesProto(ps []netip.Prefix) []*clientpb.IPPrefix {
	out := make([]*clientpb.IPPrefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, &clientpb.IPPrefix{Ip: addrBytes(p.Masked().Addr()), Bits: uint32(p.Bits())})
	}
	return out
}

func endpointsProto(eps []netip.AddrPort) []*clientpb.Endpoint {
	out := make([]*clientpb.Endpoint, 0, len(eps))
	for _, ep := range eps {
		out = append(out, &clientpb.Endpoint{Ip: addrBytes(ep.Addr()), Port: uint32(ep.Port())})
	}
	return out
}

// toProto is the affiliate's plaintext as Talos encodes it (fact sheet 3.2).
func toProto(a Affiliate) *clientpb.Affiliate {
	p := &clientpb.Affiliate{
		NodeId:          a.ID,
		Hostname:        a.Hostname,
		Nodename:        a.NodeName,
		MachineType:     a.MachineType,
		OperatingSystem: a.OperatingSystem,
	}
	for _, addr := range a.Addresses {
		p.Addresses = append(p.Addresses, addrBytes(addr))
	}
	if a.PublicKey != "" {
		p.Kubespan = &clientpb.KubeSpan{
			PublicKey:                  a.PublicKey,
			AdditionalAddresses:        prefixesProto(a.Networks),
			ExcludeAdvertisedAddresses: prefixesProto(a.ExcludeNetworks),
		}
		if a.Address.IsValid() {
			p.Kubespan.Address = a.Address.AsSlice()
		}
	}
	if !a.Traversal.IsZero() {
		p.ProtoReflect().SetUnknown(appendTraversal(nil, a.Traversal))
	}
	return p
}

func prefixesFromProto(ps []*clientpb.IPPrefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		a, ok := netip.AddrFromSlice(p.GetIp())
		if !ok || int(p.GetBits()) > a.BitLen() {
			continue
		}
		out = append(out, netip.PrefixFrom(a, int(p.GetBits())).Masked())
	}
	return out
}

// affiliateFromProto converts a decrypted affiliate, skipping malformed
// addresses; ok is false without a node ID.
func affiliateFromProto(da *dclient.Affiliate) (Affiliate, bool) {
	p := da.Affiliate
	if p == nil || p.NodeId == "" {
		return Affiliate{}, false
	}
	a := Affiliate{
		ID:              p.NodeId,
		NodeName:        p.Nodename,
		Hostname:        p.Hostname,
		MachineType:     p.MachineType,
		OperatingSystem: p.OperatingSystem,
	}
	for _, b := range p.Addresses {
		if addr, ok := netip.AddrFromSlice(b); ok {
			a.Addresses = append(a.Addresses, addr)
		}
	}
	if ks := p.Kubespan; ks != nil {
		a.PublicKey = ks.PublicKey
		if addr, ok := netip.AddrFromSlice(ks.Address); ok {
			a.Address = addr
		}
		a.Networks = prefixesFromProto(ks.AdditionalAddresses)
		a.ExcludeNetworks = prefixesFromProto(ks.ExcludeAdvertisedAddresses)
	}
	if t, err := traversalFrom(p.ProtoReflect().GetUnknown()); err == nil {
		a.Traversal = t // malformed: the affiliate still counts, without traversal data
	}
	for _, ep := range da.Endpoints {
		addr, ok := netip.AddrFromSlice(ep.GetIp())
		if !ok || ep.GetPort() == 0 || ep.GetPort() > 65535 {
			continue
		}
		ap := netip.AddrPortFrom(addr.Unmap(), uint16(ep.GetPort()))
		if !slices.Contains(a.Endpoints, ap) {
			a.Endpoints = append(a.Endpoints, ap)
		}
	}
	return a, true
}
