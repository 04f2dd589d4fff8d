package orderd

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// instrument wraps h with the request counter and latency histogram for route.
func (srv *Server) instrument(route string, h http.HandlerFunc) http.Handler {
	dur := srv.m.Duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		if extraDelay > 0 {
			time.Sleep(extraDelay)
		}
		dur.Observe(time.Since(start).Seconds())
		srv.m.Requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		code = 499
	default:
		code = http.StatusServiceUnavailable // store unavailable
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

type skuQty struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errors.Join(ErrInvalid, err)
	}
	return nil
}

func (srv *Server) apiMux() *http.ServeMux {
	s := srv.svc
	mux := http.NewServeMux()
	mux.Handle("GET /ping", srv.instrument("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "pong\n")
	}))
	mux.Handle("POST /orders", srv.instrument("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var in skuQty
		if err := decode(r, &in); err != nil {
			writeErr(w, err)
			return
		}
		o, err := s.CreateOrder(r.Context(), in.SKU, in.Qty)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, o)
	}))
	mux.Handle("GET /orders/{id}", srv.instrument("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		o, err := s.GetOrder(r.Context(), r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, o)
	}))
	mux.Handle("GET /orders", srv.instrument("GET /orders", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		os, err := s.ListOrders(r.Context(), limit)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"orders": os})
	}))
	mux.Handle("POST /inventory/reserve", srv.instrument("POST /inventory/reserve", func(w http.ResponseWriter, r *http.Request) {
		var in skuQty
		if err := decode(r, &in); err != nil {
			writeErr(w, err)
			return
		}
		res, err := s.Reserve(r.Context(), in.SKU, in.Qty)
		if err != nil {
			writeErr(w, err)
			return
		}
		code := http.StatusOK
		if !res.OK {
			code = http.StatusConflict
		}
		writeJSON(w, code, res)
	}))
	mux.Handle("GET /inventory/{sku}", srv.instrument("GET /inventory/{sku}", func(w http.ResponseWriter, r *http.Request) {
		sku := r.PathValue("sku")
		n, err := s.Stock(r.Context(), sku)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sku": sku, "stock": n})
	}))
	mux.Handle("GET /healthz", srv.instrument("GET /healthz", srv.healthz))
	mux.Handle("GET /readyz", srv.instrument("GET /readyz", srv.readyz))
	srv.commonRoutes(mux)
	return mux
}

// commonRoutes are on both the API and the admin listener.
func (srv *Server) commonRoutes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(srv.m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// healthz is liveness: it fails when a reserve worker's heartbeat is older
// than the health timeout (e.g. stuck by channel_deadlock or mutex_deadlock).
func (srv *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := srv.svc.pool.healthy(srv.cfg.HealthTimeout); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is readiness: the store must answer within the health timeout.
func (srv *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), srv.cfg.HealthTimeout)
	defer cancel()
	if err := srv.svc.st.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "store": srv.storeKind})
}

type bugUpdate struct {
	Enabled   *bool    `json:"enabled"`
	Intensity *float64 `json:"intensity"`
}

func (srv *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bugs", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, srv.bugs.Snapshot())
	})
	setBug := func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var in bugUpdate
		if err := decode(r, &in); err != nil || in.Enabled == nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": `body must be JSON {"enabled": bool, "intensity": number (optional)}`})
			return
		}
		st, err := srv.bugs.Set(name, *in.Enabled, in.Intensity)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		srv.log.Info("bug switched", "bug", name, "enabled", st.Enabled, "intensity", st.Intensity)
		writeJSON(w, http.StatusOK, map[string]any{name: st})
	}
	mux.HandleFunc("PUT /bugs/{name}", setBug)
	mux.HandleFunc("POST /bugs/{name}", setBug)
	mux.HandleFunc("PUT /stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Qty *int64 `json:"qty"`
		}
		if err := decode(r, &in); err != nil || in.Qty == nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": `body must be JSON {"qty": integer}`})
			return
		}
		if err := srv.svc.SetStock(r.Context(), r.PathValue("sku"), *in.Qty); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sku": r.PathValue("sku"), "stock": *in.Qty})
	})
	mux.HandleFunc("GET /healthz", srv.healthz)
	mux.HandleFunc("GET /readyz", srv.readyz)
	srv.commonRoutes(mux)
	return mux
}
