// Command tlssink is a minimal loopback TLS listener for benchmarks and tests:
// it completes handshakes and closes the connection. It generates a
// self-signed ECDSA P-256 certificate unless --cert/--key are given and stops
// by itself after --duration, or on SIGINT/SIGTERM. On stopping it prints how
// many handshakes it completed (each one checked the client's Finished).
//
//	tlssink --addr 127.0.0.1:0 --duration 60s
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/faultline/faultline/go_targets/internal/loopback"
)

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	certFile := flag.String("cert", "", "server certificate (PEM); default: self-signed P-256")
	keyFile := flag.String("key", "", "server key (PEM)")
	duration := flag.Duration("duration", time.Minute, "stop after this long (max 30m)")
	flag.Parse()
	if err := loopback.CheckHostPort(*addr); err != nil {
		fmt.Fprintf(os.Stderr, "tlssink: %v\n", err)
		os.Exit(2)
	}
	if *duration <= 0 || *duration > 30*time.Minute {
		fmt.Fprintln(os.Stderr, "tlssink: --duration must be in (0, 30m]")
		os.Exit(2)
	}
	var cert tls.Certificate
	var err error
	if *certFile != "" {
		cert, err = tls.LoadX509KeyPair(*certFile, *keyFile)
	} else {
		cert, err = selfSigned()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlssink: certificate: %v\n", err)
		os.Exit(1)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlssink: %v\n", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"event": "listening", "addr": l.Addr().String(), "pid": os.Getpid()})
	var ok, failed atomic.Int64
	var handlers sync.WaitGroup
	time.AfterFunc(*duration, func() { l.Close() })
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			break
		}
		handlers.Add(1)
		go func(c net.Conn) {
			defer handlers.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tls.Server(c, cfg).Handshake(); err != nil {
				failed.Add(1)
				return
			}
			ok.Add(1)
		}(c)
	}
	handlers.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"event": "stopped", "handshakes": ok.Load(), "failed": failed.Load()})
}
