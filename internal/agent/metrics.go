package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshspan/terraform-provider-meshspan/internal/mesh"
)

// collector turns the latest status snapshot into Prometheus metrics at
// scrape time, so peers that left never linger as stale series.
type collector struct {
	snapshot func() *Status
	now      func() time.Time
}

var (
	descPeerUp          = prometheus.NewDesc("meshspan_peer_up", "1 if the peer is up, 0 if down or unknown.", []string{"peer", "node", "state"}, nil)
	descRx              = prometheus.NewDesc("meshspan_peer_receive_bytes_total", "Bytes received from the peer.", []string{"peer", "node"}, nil)
	descTx              = prometheus.NewDesc("meshspan_peer_transmit_bytes_total", "Bytes sent to the peer.", []string{"peer", "node"}, nil)
	descHandshakeAge    = prometheus.NewDesc("meshspan_peer_last_handshake_age_seconds", "Seconds since the last handshake with the peer (absent if never).", []string{"peer", "node"}, nil)
	descEndpointChanges = prometheus.NewDesc("meshspan_peer_endpoint_changes_total", "Endpoints the agent has set for the peer.", []string{"peer", "node"}, nil)
	descMode            = prometheus.NewDesc("meshspan_wireguard_mode", "WireGuard back end in use (label mode: kernel or userspace).", []string{"mode", "interface"}, nil)
	descPeers           = prometheus.NewDesc("meshspan_peers", "Peers by state.", []string{"state"}, nil)
	descWarnings        = prometheus.NewDesc("meshspan_warnings", "Warnings the last reconcile produced.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeerUp, descRx, descTx, descHandshakeAge, descEndpointChanges, descMode, descPeers, descWarnings} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	if s == nil {
		return
	}
	now := c.now()
	ch <- prometheus.MustNewConstMetric(descMode, prometheus.GaugeValue, 1, s.Mode, s.Interface)
	ch <- prometheus.MustNewConstMetric(descWarnings, prometheus.GaugeValue, float64(len(s.Warnings)))
	count := map[string]int{"up": 0, "down": 0, "unknown": 0}
	for _, p := range s.Peers {
		count[p.State]++
		up := 0.0
		if p.State == "up" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descPeerUp, prometheus.GaugeValue, up, p.PublicKey, p.Name, p.State)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(p.RxBytes), p.PublicKey, p.Name)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(p.TxBytes), p.PublicKey, p.Name)
		ch <- prometheus.MustNewConstMetric(descEndpointChanges, prometheus.CounterValue, float64(p.EndpointChanges), p.PublicKey, p.Name)
		if t, err := time.Parse(time.RFC3339Nano, p.LastHandshake); err == nil {
			ch <- prometheus.MustNewConstMetric(descHandshakeAge, prometheus.GaugeValue, now.Sub(t).Seconds(), p.PublicKey, p.Name)
		}
	}
	for state, n := range count {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(n), state)
	}
}

// refusedAdverts counts adverts refused from peers (meshspan_refused_adverts_total):
// each refusal once, when it first appears, not on every pass it persists.
type refusedAdverts struct {
	mu    sync.Mutex
	last  map[string]bool
	total prometheus.Counter
}

func (r *refusedAdverts) counter() prometheus.Counter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total == nil {
		r.total = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshspan_refused_adverts_total",
			Help: "Networks or addresses advertised by peers and refused (default or wide routes not approved, the mesh prefix, this node's or another member's addresses); status lists them as warnings.",
		})
	}
	return r.total
}

func (r *refusedAdverts) observe(refused []mesh.Refusal) {
	c := r.counter()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := make(map[string]bool, len(refused))
	for _, f := range refused {
		k := f.PublicKey.String() + " " + f.Prefix.String() + " " + f.Reason
		if !r.last[k] && !now[k] {
			c.Inc()
		}
		now[k] = true
	}
	r.last = now
}
