// Package orderd is the order-fulfillment service used as a fault target:
// HTTP JSON and gRPC APIs over an etcd or in-memory store, with run-time
// switchable bugs (see package bugs).
package orderd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/faultline/faultline/go_targets/internal/bugs"
	"github.com/faultline/faultline/go_targets/internal/loopback"
	"github.com/faultline/faultline/go_targets/internal/store"
	pb "github.com/faultline/faultline/go_targets/proto/ordersv1"
)

// ErrGlobalDeadlock is returned by Run when global_deadlock was switched on:
// the listeners are closed and the caller should enter the deadlock mode.
var ErrGlobalDeadlock = errors.New("global_deadlock requested")

// Config is orderd's configuration (flags in cmd/orderd).
type Config struct {
	HTTPAddr, GRPCAddr, AdminAddr string
	AllowNonLoopback              bool
	EtcdEndpoints                 []string
	EtcdCACert, EtcdCert, EtcdKey string
	EtcdServerName                string
	EtcdPrefix                    string
	EtcdTimeout                   time.Duration
	HealthTimeout                 time.Duration
	DefaultStock                  int64
	ReserveWorkers                int
	Bugs                          map[string]*float64 // enabled at start; nil = default intensity
}

// Server is a configured orderd instance.
type Server struct {
	cfg       Config
	log       *slog.Logger
	m         *Metrics
	bugs      *bugs.Registry
	svc       *Service
	storeKind string
	deadlock  chan struct{}
	dlOnce    sync.Once
}

// New validates cfg and builds the server (no listener opened yet).
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 3 * time.Second
	}
	if cfg.EtcdTimeout <= 0 {
		cfg.EtcdTimeout = time.Second
	}
	if cfg.ReserveWorkers <= 0 {
		cfg.ReserveWorkers = 8
	}
	if cfg.EtcdPrefix == "" {
		cfg.EtcdPrefix = "/faultline/orderd/"
	}
	if !cfg.AllowNonLoopback {
		for _, a := range []string{cfg.HTTPAddr, cfg.GRPCAddr, cfg.AdminAddr} {
			if err := loopback.CheckHostPort(a); err != nil {
				return nil, fmt.Errorf("refusing to listen: %w (use --allow-non-loopback to override)", err)
			}
		}
		for _, e := range cfg.EtcdEndpoints {
			if err := loopback.CheckURL(e); err != nil {
				return nil, fmt.Errorf("refusing etcd endpoint: %w (use --allow-non-loopback to override)", err)
			}
		}
	}
	srv := &Server{cfg: cfg, log: log, m: NewMetrics(), bugs: bugs.NewRegistry(), deadlock: make(chan struct{})}
	for _, sp := range bugs.Specs {
		srv.m.BugEnabled.WithLabelValues(sp.Name).Set(0)
	}
	var st store.Store
	if len(cfg.EtcdEndpoints) > 0 {
		e, err := store.NewEtcd(store.EtcdConfig{
			Endpoints: cfg.EtcdEndpoints, CACert: cfg.EtcdCACert, Cert: cfg.EtcdCert, Key: cfg.EtcdKey,
			ServerName: cfg.EtcdServerName,
			OpTimeout:  cfg.EtcdTimeout, Observe: srv.m.ObserveEtcd,
		})
		if err != nil {
			return nil, err
		}
		st, srv.storeKind = e, "etcd"
	} else {
		st, srv.storeKind = store.NewMemory(), "memory"
	}
	srv.svc = newService(st, srv.bugs, srv.m, log, cfg.EtcdPrefix, cfg.DefaultStock, cfg.ReserveWorkers)
	srv.bugs.OnChange(srv.onBugChange)
	for name, intensity := range cfg.Bugs {
		if _, err := srv.bugs.Set(name, true, intensity); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	return srv, nil
}

func (srv *Server) onBugChange(name string, st bugs.State) {
	v := 0.0
	if st.Enabled {
		v = 1
	}
	srv.m.BugEnabled.WithLabelValues(name).Set(v)
	switch {
	case name == bugs.ChannelDeadlock && !st.Enabled:
		srv.svc.pool.drain()
	case name == bugs.GlobalDeadlock && st.Enabled:
		srv.dlOnce.Do(func() { close(srv.deadlock) })
	}
}

// Run listens, prints the listening line to out, and serves until ctx ends
// (nil error) or global_deadlock is switched on (ErrGlobalDeadlock).
func (srv *Server) Run(ctx context.Context, out io.Writer) error {
	defer srv.svc.st.Close()
	defer srv.svc.pool.stop()
	var lc net.ListenConfig
	listen := func(addr string) (net.Listener, error) {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		return l, nil
	}
	hl, err := listen(srv.cfg.HTTPAddr)
	if err != nil {
		return err
	}
	gl, err := listen(srv.cfg.GRPCAddr)
	if err != nil {
		hl.Close()
		return err
	}
	al, err := listen(srv.cfg.AdminAddr)
	if err != nil {
		hl.Close()
		gl.Close()
		return err
	}
	api := &http.Server{Handler: srv.apiMux(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
	admin := &http.Server{Handler: srv.adminMux(), ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer(grpc.UnaryInterceptor(srv.grpcMetrics))
	pb.RegisterOrderServiceServer(gs, &grpcAPI{s: srv.svc})

	errc := make(chan error, 3)
	go func() { errc <- api.Serve(hl) }()
	go func() { errc <- admin.Serve(al) }()
	go func() { errc <- gs.Serve(gl) }()

	line, _ := json.Marshal(map[string]any{
		"event": "listening", "http": hl.Addr().String(), "grpc": gl.Addr().String(),
		"admin": al.Addr().String(), "pid": os.Getpid(), "store": srv.storeKind,
	})
	fmt.Fprintf(out, "%s\n", line)
	srv.log.Info("listening", "http", hl.Addr().String(), "grpc", gl.Addr().String(), "admin", al.Addr().String(), "store", srv.storeKind)

	var result error
	select {
	case <-ctx.Done():
		srv.log.Info("shutting down")
	case <-srv.deadlock:
		srv.log.Error("global_deadlock switched on: closing listeners and deadlocking the process")
		result = ErrGlobalDeadlock
	case err := <-errc:
		result = fmt.Errorf("server stopped: %w", err)
	}
	// Hung handlers (deadlock bugs) never finish: bound the graceful part.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = api.Shutdown(sctx)
	_ = admin.Shutdown(sctx)
	_ = api.Close()
	_ = admin.Close()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
	}
	return result
}
