// Package tlsstorm floods loopback TLS listeners with full handshakes
// (no session resumption), bounded in time, rate and concurrency.
package tlsstorm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/faultline/faultline/go_targets/internal/loopback"
)

// MaxDuration bounds every storm.
const MaxDuration = 10 * time.Minute

// Config describes one storm.
type Config struct {
	Targets          []string // host:port, loopback only
	Rate             float64  // handshakes/s over all workers; 0 = unlimited
	Concurrency      int
	Duration         time.Duration
	MaxHandshakes    int64 // 0 = no cap besides Duration
	TLSVersion       string
	Curves           []tls.CurveID
	CertFile         string
	KeyFile          string
	CAFile           string
	Insecure         bool
	ServerName       string
	DialTimeout      time.Duration
	HandshakeTimeout time.Duration
	// Client is "lean" (this package's TLS 1.3 client, see lean13.go),
	// "stdlib" (crypto/tls) or "" for lean whenever it can run the
	// configuration (TLS 1.3 with explicit curves), else stdlib.
	Client string
	// FreshKeys makes the lean client generate its ephemeral key shares for
	// every handshake instead of reusing them for up to a second.
	FreshKeys bool
}

// Summary is the JSON printed at the end of a storm.
type Summary struct {
	Event            string             `json:"event"`
	Targets          []string           `json:"targets"`
	TLS              string             `json:"tls"`
	Client           string             `json:"client"`
	FreshKeys        bool               `json:"fresh_keys"`
	Concurrency      int                `json:"concurrency"`
	Rate             float64            `json:"rate"`
	StoppedBy        string             `json:"stopped_by"`
	ElapsedSeconds   float64            `json:"elapsed_s"`
	Attempts         int64              `json:"attempts"`
	Handshakes       int64              `json:"handshakes"`
	HandshakesPerSec float64            `json:"handshakes_per_s"`
	Errors           map[string]int64   `json:"errors"`
	ErrorsTotal      int64              `json:"errors_total"`
	LatencyMS        map[string]float64 `json:"handshake_latency_ms"`
	CPUSeconds       float64            `json:"cpu_seconds"`
	CPUUserSeconds   float64            `json:"cpu_user_s"`
	CPUSysSeconds    float64            `json:"cpu_sys_s"`
	HandshakesPerCPU float64            `json:"handshakes_per_cpu_s"`
}

// Progress is one per-second line with --progress.
type Progress struct {
	Event      string  `json:"event"`
	T          float64 `json:"t"`
	Handshakes int64   `json:"handshakes"`
	Errors     int64   `json:"errors"`
	RateLast   float64 `json:"rate_last_s"`
}

// Validate checks limits and resolves every target; all must be loopback.
// It returns the resolved dial addresses.
func (c *Config) Validate() ([]string, error) {
	if c.Duration <= 0 || c.Duration > MaxDuration {
		return nil, fmt.Errorf("--duration is required and must be in (0, %s]", MaxDuration)
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		return nil, fmt.Errorf("--concurrency must be in 1..4096")
	}
	if c.Rate < 0 {
		return nil, fmt.Errorf("--rate must be >= 0")
	}
	if c.TLSVersion != "1.2" && c.TLSVersion != "1.3" {
		return nil, fmt.Errorf("--tls must be 1.2 or 1.3")
	}
	switch c.Client {
	case "", "stdlib":
	case "lean":
		if err := leanSupports(c); err != nil {
			return nil, fmt.Errorf("--client lean: %w", err)
		}
	default:
		return nil, fmt.Errorf("--client must be lean or stdlib, not %q", c.Client)
	}
	if len(c.Targets) == 0 {
		return nil, fmt.Errorf("at least one --target host:port is required")
	}
	var addrs []string
	for _, t := range c.Targets {
		host, port, err := net.SplitHostPort(t)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", t, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("target %q: bad port", t)
		}
		ips, err := loopback.Resolve(context.Background(), host)
		if err != nil {
			return nil, fmt.Errorf("refusing target %q: %w", t, err)
		}
		addrs = append(addrs, netip.AddrPortFrom(ips[0], mustPort(port)).String())
	}
	return addrs, nil
}

func mustPort(p string) uint16 {
	v, _ := strconv.ParseUint(p, 10, 16)
	return uint16(v)
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	v := uint16(tls.VersionTLS13)
	if c.TLSVersion == "1.2" {
		v = tls.VersionTLS12
	}
	tc := &tls.Config{
		MinVersion:         v,
		MaxVersion:         v,
		InsecureSkipVerify: c.Insecure, //nolint:gosec // handshake load, not trust
		ServerName:         c.ServerName,
		CurvePreferences:   c.Curves,
		ClientSessionCache: nil, // every handshake is a full one
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate found", c.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// limiter is a token bucket with a burst of one slot per worker, lock based.
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(l.interval)
	l.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// Classify maps an error to a short kind for the summary.
func Classify(stage string, err error) string {
	var alert tls.AlertError
	var verr *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + "_refused"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return stage + "_reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return stage + "_addr_unavailable"
	case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE):
		return stage + "_too_many_files"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return stage + "_timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return stage + "_eof"
	case errors.As(err, &alert):
		return stage + "_tls_alert"
	case errors.As(err, &verr):
		return stage + "_cert_verify"
	case errors.As(err, new(protocolError)):
		return stage + "_protocol"
	default:
		return stage + "_other"
	}
}

type worker struct {
	h      hist
	errors map[string]int64
}

// Run runs the storm until ctx ends, Duration passes or MaxHandshakes is
// reached. progress, when non-nil, receives one line per second.
func Run(ctx context.Context, c Config, addrs []string, progress func(Progress)) (Summary, error) {
	tc, err := c.tlsConfig()
	if err != nil {
		return Summary{}, err
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	var lim *limiter
	if c.Rate > 0 {
		lim = &limiter{interval: time.Duration(float64(time.Second) / c.Rate)}
	}
	end := time.Now().Add(c.Duration)
	runCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var ok, fail, attempts atomic.Int64
	var capHit atomic.Bool
	cpu0 := cpuTimes()
	start := time.Now()
	workers := make([]*worker, c.Concurrency)
	var wg sync.WaitGroup
	// No keep-alive: every connection closes right after its handshake.
	dialer := &net.Dialer{Timeout: c.DialTimeout, KeepAlive: -1}
	client := c.Client
	if client == "" {
		client = "stdlib"
		if leanSupports(&c) == nil {
			client = "lean"
		}
	}
	for i := range workers {
		w := &worker{errors: map[string]int64{}}
		workers[i] = w
		handshake := func(ctx context.Context, addr string) (string, time.Duration) {
			return stdlibHandshake(ctx, dialer, tc, addr, c.HandshakeTimeout)
		}
		if client == "lean" {
			handshake = newLean13(&c, tc, dialer).handshake
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := i; ; n++ {
				if err := lim.wait(runCtx); err != nil {
					return
				}
				if c.MaxHandshakes > 0 && attempts.Add(1) > c.MaxHandshakes {
					capHit.Store(true)
					cancel()
					return
				} else if c.MaxHandshakes == 0 {
					attempts.Add(1)
				}
				kind, d := handshake(runCtx, addrs[n%len(addrs)])
				// Cut short by the end of the storm (the dial deadline can fire
				// a hair before the context reports it): not counted.
				if kind != "" && (runCtx.Err() != nil || !time.Now().Before(end)) {
					attempts.Add(-1) // cut short by the end of the storm: not counted
					return
				}
				if kind != "" {
					w.errors[kind]++
					fail.Add(1)
					continue
				}
				w.h.add(d)
				ok.Add(1)
			}
		}(i)
	}
	done := make(chan struct{})
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			last := int64(0)
			lastT := start
			for {
				select {
				case <-done:
					return
				case now := <-t.C:
					cur := ok.Load()
					progress(Progress{Event: "progress", T: now.Sub(start).Seconds(), Handshakes: cur, Errors: fail.Load(),
						RateLast: float64(cur-last) / now.Sub(lastT).Seconds()})
					last, lastT = cur, now
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	pwg.Wait()
	elapsed := time.Since(start)
	cpu1 := cpuTimes()

	var all hist
	errs := map[string]int64{}
	for _, w := range workers {
		all.merge(&w.h)
		for k, v := range w.errors {
			errs[k] += v
		}
	}
	stopped := "duration"
	switch {
	case capHit.Load():
		stopped = "max_handshakes"
	case ctx.Err() != nil:
		stopped = "signal"
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	user, sys := cpu1[0]-cpu0[0], cpu1[1]-cpu0[1]
	s := Summary{
		Event: "summary", Targets: c.Targets, TLS: c.TLSVersion, Client: client, FreshKeys: c.FreshKeys && client == "lean", Concurrency: c.Concurrency, Rate: c.Rate,
		StoppedBy: stopped, ElapsedSeconds: elapsed.Seconds(), Attempts: ok.Load() + fail.Load(),
		Handshakes: ok.Load(), HandshakesPerSec: float64(ok.Load()) / elapsed.Seconds(),
		Errors: errs, ErrorsTotal: fail.Load(),
		LatencyMS: map[string]float64{
			"p50": ms(all.quantile(.50)), "p95": ms(all.quantile(.95)), "p99": ms(all.quantile(.99)), "max": ms(all.max),
		},
		CPUSeconds: user + sys, CPUUserSeconds: user, CPUSysSeconds: sys,
	}
	if s.CPUSeconds > 0 {
		s.HandshakesPerCPU = float64(s.Handshakes) / s.CPUSeconds
	}
	return s, nil
}

// stdlibHandshake dials, completes one full TLS handshake with crypto/tls and closes with RST
// (linger 0) so that the generator does not pile up TIME_WAIT sockets.
// It returns an error kind ("" on success) and the handshake latency
// (TCP connect + TLS handshake).
func stdlibHandshake(ctx context.Context, d *net.Dialer, tc *tls.Config, addr string, hsTimeout time.Duration) (string, time.Duration) {
	start := time.Now()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Classify("dial", err), 0
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(hsTimeout))
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(ctx); err != nil {
		return Classify("handshake", err), 0
	}
	return "", time.Since(start)
}

func cpuTimes() [2]float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return [2]float64{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return [2]float64{tv(ru.Utime), tv(ru.Stime)}
}
