package discovery

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Metrics are the service's Prometheus series.
type Metrics struct {
	rpcs       *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	rejections *prometheus.CounterVec
	hellos     *prometheus.CounterVec
	watchSent  prometheus.Counter
	store      Store
	clusters   *prometheus.Desc
	affiliates *prometheus.Desc
	watchers   *prometheus.Desc
	storeUp    *prometheus.Desc
}

// NewMetrics creates the series and registers them with reg (nil: not
// registered, for tests that do not scrape).
func NewMetrics(reg prometheus.Registerer, store Store) *Metrics {
	m := &Metrics{
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshspan_discovery_rpcs_total", Help: "gRPC calls handled, by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshspan_discovery_rpc_duration_seconds",
			Help:    "gRPC call latency by method (Watch: stream lifetime).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 10, 60, 600},
		}, []string{"method"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshspan_discovery_rejections_total", Help: "Requests refused, by reason (limit or validation that failed).",
		}, []string{"reason"}),
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshspan_discovery_hellos_total", Help: "Hello calls by client version (vX.Y).",
		}, []string{"client_version"}),
		watchSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshspan_discovery_watch_messages_total", Help: "Watch change messages sent (snapshots excluded).",
		}),
		store:      store,
		clusters:   prometheus.NewDesc("meshspan_discovery_clusters", "Clusters stored.", nil, nil),
		affiliates: prometheus.NewDesc("meshspan_discovery_affiliates", "Affiliates stored.", nil, nil),
		watchers:   prometheus.NewDesc("meshspan_discovery_watchers", "Open Watch streams on this replica.", nil, nil),
		storeUp:    prometheus.NewDesc("meshspan_discovery_store_up", "1 if the store answered the last scrape.", nil, nil),
	}
	if reg != nil {
		reg.MustRegister(m.rpcs, m.latency, m.rejections, m.hellos, m.watchSent, m)
	}
	return m
}

func (m *Metrics) observe(method string, code codes.Code, d time.Duration) {
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
}

// Describe implements prometheus.Collector for the store gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.clusters
	ch <- m.affiliates
	ch <- m.watchers
	ch <- m.storeUp
}

// Collect implements prometheus.Collector: it asks the store at scrape time.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := m.store.Stats(ctx)
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(m.storeUp, prometheus.GaugeValue, up)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.clusters, prometheus.GaugeValue, float64(st.Clusters))
	ch <- prometheus.MustNewConstMetric(m.affiliates, prometheus.GaugeValue, float64(st.Affiliates))
	ch <- prometheus.MustNewConstMetric(m.watchers, prometheus.GaugeValue, float64(st.Watchers))
}
