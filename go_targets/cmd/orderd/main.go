// Command orderd is the order-fulfillment fault target: HTTP JSON and gRPC
// APIs, state in etcd (mutual TLS) or memory, and run-time bug switches.
//
//	orderd --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
//	       [--etcd-endpoints https://127.0.0.1:2379 --etcd-cacert ca.pem --etcd-cert c.pem --etcd-key c-key.pem] \
//	       [--bug map_race=8 ...]
//
// It prints {"event":"listening","http":...,"grpc":...,"admin":...} on stdout
// once bound; logs are JSON on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/faultline/faultline/go_targets/internal/bugs"
	"github.com/faultline/faultline/go_targets/internal/deadlock"
	"github.com/faultline/faultline/go_targets/internal/orderd"
)

type bugFlags map[string]*float64

func (b bugFlags) String() string { return fmt.Sprint(map[string]*float64(b)) }
func (b bugFlags) Set(v string) error {
	name, intensity, err := bugs.ParseFlag(v)
	if err != nil {
		return err
	}
	b[name] = intensity
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	cfg := orderd.Config{Bugs: bugFlags{}}
	fs := flag.NewFlagSet("orderd", flag.ContinueOnError)
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP API listen address (port 0 = any free port)")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:8081", "admin (bug switches) listen address")
	fs.BoolVar(&cfg.AllowNonLoopback, "allow-non-loopback", false, "allow listen addresses and etcd endpoints outside 127.0.0.0/8 and ::1")
	endpoints := fs.String("etcd-endpoints", "", "comma-separated etcd endpoints; empty = in-memory store")
	fs.StringVar(&cfg.EtcdCACert, "etcd-cacert", "", "CA certificate that signed etcd's server certificate")
	fs.StringVar(&cfg.EtcdCert, "etcd-cert", "", "client certificate for etcd (mutual TLS)")
	fs.StringVar(&cfg.EtcdKey, "etcd-key", "", "client key for etcd")
	fs.StringVar(&cfg.EtcdServerName, "etcd-server-name", "", "name to verify etcd's server certificates against (default: each endpoint's host; set it when the endpoints are proxies)")
	fs.StringVar(&cfg.EtcdPrefix, "etcd-prefix", "/faultline/orderd/", "key prefix in etcd")
	fs.DurationVar(&cfg.EtcdTimeout, "etcd-timeout", time.Second, "timeout of one etcd operation")
	fs.DurationVar(&cfg.HealthTimeout, "health-timeout", 3*time.Second, "/healthz fails when a reserve worker is stuck longer than this; /readyz store ping timeout")
	fs.Int64Var(&cfg.DefaultStock, "default-stock", 1_000_000, "stock of a SKU never seen before")
	fs.IntVar(&cfg.ReserveWorkers, "reserve-workers", 8, "workers serving /inventory/reserve")
	fs.Var(bugFlags(cfg.Bugs), "bug", "enable a bug at start: name or name=intensity (repeatable); names: "+strings.Join(bugs.NewRegistry().Names(), ", "))
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	deadlockNow := fs.String("deadlock-now", "", "internal: deadlock this process at once (used by global_deadlock via re-exec)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *deadlockNow != "" {
		deadlock.Run(*deadlockNow)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "orderd: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if *endpoints != "" {
		for _, e := range strings.Split(*endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, e)
			}
		}
	}
	srv, err := orderd.New(cfg, log)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		fmt.Fprintf(os.Stderr, "orderd: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = srv.Run(ctx, os.Stdout)
	if errors.Is(err, orderd.ErrGlobalDeadlock) {
		// The runtime cannot see a deadlock while listeners, timers and the
		// etcd client are alive, so start afresh in the same process image
		// (same PID, same stdout/stderr) without any of them.
		self, e := os.Executable()
		if e == nil {
			e = syscall.Exec(self, []string{os.Args[0], "--deadlock-now=mutex"}, os.Environ())
		}
		log.Error("re-exec for global_deadlock failed; deadlocking in place", "err", e)
		deadlock.Run("mutex")
	}
	if err != nil {
		log.Error("orderd stopped", "err", err)
		return 1
	}
	return 0
}
