package tlsstorm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// tlsListener serves self-signed P-256 handshakes and counts those completed.
func tlsListener(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	addr, ok, _ := serve(t, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	return addr, ok
}

// serve runs a crypto/tls server with cfg and counts the handshakes it
// completed: the server only completes after checking the client's Finished
// (and its certificate and CertificateVerify when it asks for one).
func serve(t *testing.T, cfg *tls.Config) (string, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var ok, failed atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tls.Server(c, cfg).Handshake() == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}()
		}
	}()
	return l.Addr().String(), &ok, &failed
}

func TestValidateRefusesNonLoopback(t *testing.T) {
	base := Config{Concurrency: 1, Duration: time.Second, TLSVersion: "1.3"}
	for _, tgt := range []string{"10.0.0.1:443", "0.0.0.0:443", "[2001:db8::1]:443", "example.invalid:443", "127.0.0.1"} {
		c := base
		c.Targets = []string{tgt}
		if _, err := c.Validate(); err == nil {
			t.Errorf("%s accepted", tgt)
		}
	}
	c := base
	c.Targets = []string{"localhost:443", "[::1]:443", "127.0.0.2:1"}
	if _, err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Duration = 11 * time.Minute
	if _, err := c.Validate(); err == nil {
		t.Fatal("duration over the cap accepted")
	}
}

func TestStormRateLimited(t *testing.T) {
	for _, ver := range []string{"1.2", "1.3"} {
		t.Run(ver, func(t *testing.T) {
			addr, served := tlsListener(t)
			c := Config{Targets: []string{addr}, Rate: 100, Concurrency: 8, Duration: 1500 * time.Millisecond, TLSVersion: ver, Insecure: true}
			addrs, err := c.Validate()
			if err != nil {
				t.Fatal(err)
			}
			var prog []Progress
			s, err := Run(context.Background(), c, addrs, func(p Progress) { prog = append(prog, p) })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", s)
			if s.Handshakes < 100 || s.Handshakes > 170 || s.ErrorsTotal != 0 {
				t.Fatalf("rate 100/s for 1.5s gave %d handshakes, %d errors", s.Handshakes, s.ErrorsTotal)
			}
			if s.LatencyMS["p99"] <= 0 || s.LatencyMS["p50"] > s.LatencyMS["p99"] || s.CPUSeconds <= 0 {
				t.Fatalf("bad latency/cpu figures: %+v", s)
			}
			if len(prog) < 1 {
				t.Fatal("no progress line")
			}
			time.Sleep(50 * time.Millisecond)
			if served.Load() < s.Handshakes-5 {
				t.Fatalf("server saw %d handshakes, client %d", served.Load(), s.Handshakes)
			}
		})
	}
}

func TestStormStopsOnCancelAndCountsErrors(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens: every dial is refused
	c := Config{Targets: []string{addr}, Concurrency: 2, Duration: time.Minute, TLSVersion: "1.3", Rate: 500}
	addrs, _ := c.Validate()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	s, err := Run(ctx, c, addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second || s.StoppedBy != "signal" {
		t.Fatalf("did not stop on cancel: %+v", s)
	}
	if s.Errors["dial_refused"] == 0 || s.Handshakes != 0 {
		t.Fatalf("errors not classified: %+v", s.Errors)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{.5: 500 * time.Millisecond, .95: 950 * time.Millisecond, .99: 990 * time.Millisecond} {
		got := h.quantile(q)
		if got < want*97/100 || got > want*103/100 {
			t.Errorf("q%.2f = %v, want ~%v", q, got, want)
		}
	}
}
