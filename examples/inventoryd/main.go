// Command inventoryd is a small inventory service: the example faultline tests
// through exactly the path a user takes (`faultline init`, then pytest).
//
// It keeps stock per SKU in memory and serves a JSON API over HTTP, with
// Prometheus metrics and a health endpoint on the same listener:
//
//	GET  /items                 every SKU and its stock
//	GET  /items/{sku}           one SKU (with the warehouse's stock when --warehouse is set)
//	POST /items/{sku}/reserve   {"qty": n}: 200 and the stock left, or 409 when short
//	POST /items/{sku}/restock   {"qty": n}: 200 and the new stock
//	GET  /healthz               200 "ok" while the service can serve
//	GET  /metrics               Prometheus text exposition
//
// Flags: --listen (host:port, default 127.0.0.1:8080), --pprof-listen
// (host:port for net/http/pprof, off by default), --skus, --stock, and
// --warehouse (base URL of another inventoryd standing for the warehouse: a
// dependency each GET /items/{sku} asks, 502 when it fails or takes over 2 s).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "host:port of the API, /metrics and /healthz")
	pprofListen := flag.String("pprof-listen", "", "host:port for /debug/pprof (off when empty)")
	skus := flag.Int("skus", 50, "number of SKUs (sku-0 ... sku-N-1)")
	stock := flag.Int("stock", 1000, "initial units per SKU")
	warehouse := flag.String("warehouse", "", "base URL of the warehouse service (none when empty)")
	flag.Parse()
	if *skus < 1 || *stock < 0 {
		log.Fatalf("inventoryd: --skus must be >= 1 and --stock >= 0")
	}

	store := newStore(*skus, *stock)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewGoCollector(),
		prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
	)
	m := newMetrics(reg, store)

	api := &http.Server{
		Addr:              *listen,
		Handler:           routes(store, m, reg, newWarehouse(*warehouse)),
		ReadHeaderTimeout: 5 * time.Second,
	}
	servers := []*http.Server{api}
	if *pprofListen != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		servers = append(servers, &http.Server{
			Addr: *pprofListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		})
	}
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func(s *http.Server) { errs <- s.ListenAndServe() }(s)
	}
	log.Printf("inventoryd: serving %d SKUs on %s", *skus, *listen)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errs:
		log.Fatalf("inventoryd: %v", err)
	case sig := <-stop:
		log.Printf("inventoryd: %v, shutting down", sig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("inventoryd: shutdown: %v", err)
		}
	}
}

// store is the stock per SKU, guarded by one mutex.
type store struct {
	mu    sync.Mutex
	stock map[string]int
}

func newStore(skus, units int) *store {
	s := &store{stock: make(map[string]int, skus)}
	for i := 0; i < skus; i++ {
		s.stock[fmt.Sprintf("sku-%d", i)] = units
	}
	return s
}

var errUnknownSKU = errors.New("unknown sku")

// reserve takes qty units of sku; ok is false (and nothing changes) when fewer are left.
func (s *store) reserve(sku string, qty int) (left int, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	have, known := s.stock[sku]
	if !known {
		return 0, false, errUnknownSKU
	}
	if have < qty {
		return have, false, nil
	}
	s.stock[sku] = have - qty
	return have - qty, true, nil
}

func (s *store) restock(sku string, qty int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	have, known := s.stock[sku]
	if !known {
		return 0, errUnknownSKU
	}
	s.stock[sku] = have + qty
	return have + qty, nil
}

func (s *store) get(sku string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.stock[sku]
	return n, ok
}

type item struct {
	SKU       string `json:"sku"`
	Stock     int    `json:"stock"`
	Warehouse *int   `json:"warehouse,omitempty"`
}

// warehouse is the dependency: another service that holds more stock.
type warehouse struct {
	base   string
	client *http.Client
}

func newWarehouse(base string) *warehouse {
	if base == "" {
		return nil
	}
	return &warehouse{base: base, client: &http.Client{Timeout: 2 * time.Second}}
}

// stock asks the warehouse how many units of sku it has.
func (w *warehouse) stock(ctx context.Context, sku string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"/items/"+sku, nil)
	if err != nil {
		return 0, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var it item
	if err := json.NewDecoder(resp.Body).Decode(&it); err != nil {
		return 0, err
	}
	return it.Stock, nil
}

func (s *store) list() []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]item, 0, len(s.stock))
	for sku, n := range s.stock {
		out = append(out, item{SKU: sku, Stock: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SKU < out[j].SKU })
	return out
}

func (s *store) units() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for _, n := range s.stock {
		total += n
	}
	return float64(total)
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	short    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inventoryd_http_requests_total",
			Help: "HTTP requests served, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inventoryd_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		short: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inventoryd_reservations_short_total",
			Help: "Reservations refused because the SKU had fewer units than asked.",
		}),
	}
	stock := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "inventoryd_stock_units",
		Help: "Units in stock over every SKU.",
	}, s.units)
	reg.MustRegister(m.requests, m.duration, m.short, stock)
	return m
}

// recorder keeps the status code a handler wrote.
type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (m *metrics) wrap(route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		h(rec, req)
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type qtyBody struct {
	Qty int `json:"qty"`
}

func readQty(w http.ResponseWriter, req *http.Request) (int, error) {
	var body qtyBody
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 1<<10)).Decode(&body); err != nil {
		return 0, fmt.Errorf("body: %w", err)
	}
	if body.Qty < 1 || body.Qty > 1000 {
		return 0, fmt.Errorf("qty %d out of range 1..1000", body.Qty)
	}
	return body.Qty, nil
}

func routes(s *store, m *metrics, reg *prometheus.Registry, wh *warehouse) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /items", m.wrap("GET /items", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.list())
	}))
	mux.HandleFunc("GET /items/{sku}", m.wrap("GET /items/{sku}", func(w http.ResponseWriter, req *http.Request) {
		sku := req.PathValue("sku")
		n, ok := s.get(sku)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": errUnknownSKU.Error()})
			return
		}
		it := item{SKU: sku, Stock: n}
		if wh != nil {
			more, err := wh.stock(req.Context(), sku)
			if err != nil {
				writeJSON(w, http.StatusBadGateway, map[string]string{"error": "warehouse: " + err.Error()})
				return
			}
			it.Warehouse = &more
		}
		writeJSON(w, http.StatusOK, it)
	}))
	mux.HandleFunc("POST /items/{sku}/reserve", m.wrap("POST /items/{sku}/reserve", func(w http.ResponseWriter, req *http.Request) {
		qty, err := readQty(w, req)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		left, ok, err := s.reserve(req.PathValue("sku"), qty)
		switch {
		case err != nil:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		case !ok:
			m.short.Inc()
			writeJSON(w, http.StatusConflict, map[string]any{"error": "short", "stock": left})
		default:
			writeJSON(w, http.StatusOK, map[string]int{"stock": left})
		}
	}))
	mux.HandleFunc("POST /items/{sku}/restock", m.wrap("POST /items/{sku}/restock", func(w http.ResponseWriter, req *http.Request) {
		qty, err := readQty(w, req)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		n, err := s.restock(req.PathValue("sku"), qty)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"stock": n})
	}))
	return mux
}
