package orderd

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// latencyBuckets resolve P95/P99 from 1ms to 30s, finely between 5ms and 10s.
var latencyBuckets = []float64{
	.001, .0025, .005, .0075, .01, .015, .02, .03, .04, .05, .075, .1, .15, .2, .3, .4,
	.5, .75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 30,
}

// Metrics are orderd's Prometheus collectors, on their own registry.
type Metrics struct {
	Registry        *prometheus.Registry
	Requests        *prometheus.CounterVec
	Duration        *prometheus.HistogramVec
	EtcdDuration    *prometheus.HistogramVec
	EtcdErrors      *prometheus.CounterVec
	LeakedGoroutine prometheus.Counter
	Oversold        prometheus.Counter
	RetainedBytes   prometheus.Gauge
	BugEnabled      *prometheus.GaugeVec
	StuckWorkers    prometheus.Gauge
}

// NewMetrics registers every collector, including the Go and process ones.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_http_requests_total",
			Help: "Requests served, by route and status code (gRPC routes are prefixed grpc: and use gRPC code names).",
		}, []string{"route", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderd_http_request_duration_seconds",
			Help:    "Request latency by route.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		EtcdDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderd_etcd_request_duration_seconds",
			Help:    "etcd operation latency by operation.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		EtcdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_etcd_errors_total",
			Help: "Failed etcd operations by operation.",
		}, []string{"op"}),
		LeakedGoroutine: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_leaked_goroutines_total",
			Help: "Goroutines deliberately leaked by the goroutine_leak bug.",
		}),
		Oversold: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_inventory_oversold_total",
			Help: "Units reserved beyond the known stock (inventory invariant violations, this process's view).",
		}),
		RetainedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_retained_bytes",
			Help: "Bytes kept reachable by the memory_leak bug.",
		}),
		BugEnabled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orderd_bug_enabled",
			Help: "1 when the named bug is switched on.",
		}, []string{"bug"}),
		StuckWorkers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_reserve_workers_stuck",
			Help: "Reserve workers blocked by the channel_deadlock bug.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.Duration, m.EtcdDuration, m.EtcdErrors,
		m.LeakedGoroutine, m.Oversold, m.RetainedBytes, m.BugEnabled, m.StuckWorkers,
	)
	return m
}

// ObserveEtcd records one etcd operation.
func (m *Metrics) ObserveEtcd(op string, d time.Duration, err error) {
	m.EtcdDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.EtcdErrors.WithLabelValues(op).Inc()
	}
}
