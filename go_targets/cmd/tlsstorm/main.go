// Command tlsstorm floods loopback TLS listeners with full handshakes.
//
//	tlsstorm --target 127.0.0.1:2379 --duration 30s [--rate 2000] [--concurrency 64]
//	         [--tls 1.3] [--cert c.pem --key k.pem] [--cacert ca.pem --insecure=false]
//	         [--servername etcd] [--curves p256] [--progress]
//
// Only 127.0.0.0/8 and ::1 targets are accepted (names are resolved first);
// anything else exits 2. Prints one JSON summary line at the end (also on
// SIGINT/SIGTERM) and, with --progress, one JSON line per second.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/faultline/faultline/go_targets/internal/tlsstorm"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func parseCurves(s string) ([]tls.CurveID, error) {
	if s == "" || s == "default" {
		return nil, nil
	}
	var out []tls.CurveID
	for _, c := range strings.Split(s, ",") {
		switch strings.ToLower(strings.TrimSpace(c)) {
		case "x25519":
			out = append(out, tls.X25519)
		case "p256", "p-256", "prime256v1":
			out = append(out, tls.CurveP256)
		case "p384", "p-384":
			out = append(out, tls.CurveP384)
		default:
			return nil, fmt.Errorf("unknown curve %q (x25519, p256, p384, default)", c)
		}
	}
	return out, nil
}

func main() { os.Exit(run()) }

func run() int {
	var c tlsstorm.Config
	var targets multi
	fs := flag.NewFlagSet("tlsstorm", flag.ContinueOnError)
	fs.Var(&targets, "target", "host:port of a TLS listener (repeatable; loopback only)")
	fs.Float64Var(&c.Rate, "rate", 0, "handshakes per second over all workers (token bucket); 0 = as fast as --concurrency allows")
	fs.IntVar(&c.Concurrency, "concurrency", 16, "concurrent handshakes (1..4096)")
	fs.DurationVar(&c.Duration, "duration", 0, "how long to run (required, at most 10m)")
	fs.Int64Var(&c.MaxHandshakes, "max-handshakes", 0, "stop after this many attempts (0 = no cap)")
	fs.StringVar(&c.TLSVersion, "tls", "1.3", "TLS version: 1.2 or 1.3")
	curves := fs.String("curves", "x25519,p256", "key-exchange curves in preference order: x25519, p256, p384 or default (Go's, may include post-quantum hybrids)")
	fs.StringVar(&c.CertFile, "cert", "", "client certificate (PEM) for servers that require one")
	fs.StringVar(&c.KeyFile, "key", "", "client key (PEM)")
	fs.StringVar(&c.CAFile, "cacert", "", "CA to verify the server with (use with --insecure=false)")
	fs.BoolVar(&c.Insecure, "insecure", true, "skip server certificate verification (the goal is handshake load)")
	fs.StringVar(&c.ServerName, "servername", "", "SNI / verification name")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", 2*time.Second, "TCP connect timeout")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", 5*time.Second, "TLS handshake timeout")
	fs.StringVar(&c.Client, "client", "", "handshake client: lean (a minimal TLS 1.3 client, the default for --tls 1.3 with explicit --curves) or stdlib (crypto/tls)")
	fs.BoolVar(&c.FreshKeys, "fresh-keys", false, "lean client: a new ephemeral key share per handshake (default: reused for up to 1s; the server's work is the same)")
	progress := fs.Bool("progress", false, "print one JSON progress line per second")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the generator to this file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	c.Targets = targets
	var err error
	if c.Curves, err = parseCurves(*curves); err != nil {
		fmt.Fprintf(os.Stderr, "tlsstorm: --curves: %v\n", err)
		return 2
	}
	addrs, err := c.Validate()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlsstorm: %v\n", err)
		return 2
	}
	// Handshakes allocate little that lives long: trade memory for less GC CPU.
	debug.SetGCPercent(400)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	var prog func(tlsstorm.Progress)
	if *progress {
		prog = func(p tlsstorm.Progress) { _ = enc.Encode(p) }
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tlsstorm: --cpuprofile: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "tlsstorm: --cpuprofile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	sum, err := tlsstorm.Run(ctx, c, addrs, prog)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlsstorm: %v\n", err)
		return 2
	}
	_ = enc.Encode(sum)
	return 0
}
