package tlsstorm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// testCA issues certificates for the lean client's tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a leaf for key, valid for 127.0.0.1 and "localhost".
func (ca *testCA) issue(t *testing.T, key crypto.Signer) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func ecKey(t *testing.T, c elliptic.Curve) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// leanClient is a lean client for c; roots, when set, turns verification on.
func leanClient(t *testing.T, c Config, roots *x509.CertPool, certs ...tls.Certificate) *lean13 {
	t.Helper()
	c.TLSVersion, c.HandshakeTimeout = "1.3", 5*time.Second
	c.Insecure = roots == nil
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	tc.RootCAs, tc.Certificates = roots, certs
	return newLean13(&c, tc, &net.Dialer{Timeout: 2 * time.Second})
}

// handshakes runs n handshakes to addr and returns the error kinds.
func handshakes(t *testing.T, l *lean13, addr string, n int) map[string]int {
	t.Helper()
	kinds := map[string]int{}
	for i := 0; i < n; i++ {
		kind, d := l.handshake(context.Background(), addr)
		if kind == "" && d <= 0 {
			t.Fatalf("success without a latency")
		}
		kinds[kind]++
	}
	return kinds
}

// waitServed waits for the server side to count want handshakes.
func waitServed(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := n.Load(); got != want {
		t.Fatalf("server completed %d handshakes, want %d", got, want)
	}
}

func TestLeanCompletesHandshakesTheServerAccepts(t *testing.T) {
	ca := newTestCA(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	servers := map[string]crypto.Signer{"ecdsa-p256": ecKey(t, elliptic.P256()), "ecdsa-p384": ecKey(t, elliptic.P384()),
		"rsa-pss": rsaKey, "ed25519": edKey}
	groups := map[string][]tls.CurveID{"x25519": {tls.X25519}, "p256": {tls.CurveP256}, "p384": {tls.CurveP384},
		"x25519+p256": {tls.X25519, tls.CurveP256}}
	for sname, skey := range servers {
		for gname, g := range groups {
			t.Run(sname+"/"+gname, func(t *testing.T) {
				addr, ok, failed := serve(t, &tls.Config{Certificates: []tls.Certificate{ca.issue(t, skey)}})
				if kinds := handshakes(t, leanClient(t, Config{Curves: g}, nil), addr, 3); kinds[""] != 3 {
					t.Fatalf("without verification: %v", kinds)
				}
				// Verified against the CA, the name being the target's IP.
				if kinds := handshakes(t, leanClient(t, Config{Curves: g}, ca.pool), addr, 1); kinds[""] != 1 {
					t.Fatalf("with verification: %v", kinds)
				}
				waitServed(t, ok, 4)
				if failed.Load() != 0 {
					t.Fatalf("server failed %d handshakes", failed.Load())
				}
			})
		}
	}
}

func TestLeanPresentsAClientCertificateWhenAsked(t *testing.T) {
	ca := newTestCA(t)
	srv := &tls.Config{Certificates: []tls.Certificate{ca.issue(t, ecKey(t, elliptic.P256()))},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool}
	addr, ok, failed := serve(t, srv)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	x25519 := Config{Curves: []tls.CurveID{tls.X25519}}
	for i, key := range []crypto.Signer{ecKey(t, elliptic.P256()), ecKey(t, elliptic.P384()), rsaKey, edKey} {
		if kinds := handshakes(t, leanClient(t, x25519, nil, ca.issue(t, key)), addr, 1); kinds[""] != 1 {
			t.Fatalf("client key %T: %v", key, kinds)
		}
		waitServed(t, ok, int64(i+1))
	}
	// Without a certificate the server refuses. In TLS 1.3 its alert comes
	// after the client's Finished, so the client (this one and crypto/tls
	// alike) has completed its side by then: the refusal shows on the server.
	handshakes(t, leanClient(t, x25519, nil), addr, 1)
	deadline := time.Now().Add(5 * time.Second)
	for failed.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if failed.Load() != 1 {
		t.Fatalf("server failures %d, want 1", failed.Load())
	}
}

func TestLeanRejectsWhatItMust(t *testing.T) {
	ca := newTestCA(t)
	good := ca.issue(t, ecKey(t, elliptic.P256()))
	// A server whose certificate does not match its signing key: only a
	// client that checks CertificateVerify notices.
	forged := tls.Certificate{Certificate: good.Certificate, PrivateKey: ecKey(t, elliptic.P256())}
	otherCA := newTestCA(t)
	x25519 := Config{Curves: []tls.CurveID{tls.X25519}}
	cases := []struct {
		name   string
		server *tls.Config
		client Config
		roots  *x509.CertPool
		want   string
	}{
		{"signature does not verify", &tls.Config{Certificates: []tls.Certificate{forged}}, x25519, nil, "handshake_protocol"},
		{"untrusted CA", &tls.Config{Certificates: []tls.Certificate{good}}, x25519, otherCA.pool, "handshake_cert_verify"},
		{"wrong name", &tls.Config{Certificates: []tls.Certificate{good}},
			Config{Curves: []tls.CurveID{tls.X25519}, ServerName: "etcd.invalid"}, ca.pool, "handshake_cert_verify"},
		{"server only speaks TLS 1.2", &tls.Config{Certificates: []tls.Certificate{good}, MaxVersion: tls.VersionTLS12},
			x25519, nil, "handshake_tls_alert"},
		{"no common group", &tls.Config{Certificates: []tls.Certificate{good}, CurvePreferences: []tls.CurveID{tls.CurveP384}},
			x25519, nil, "handshake_tls_alert"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, ok, _ := serve(t, tc.server)
			if kinds := handshakes(t, leanClient(t, tc.client, tc.roots), addr, 1); kinds[tc.want] != 1 {
				t.Fatalf("got %v, want %q", kinds, tc.want)
			}
			time.Sleep(50 * time.Millisecond)
			if ok.Load() != 0 {
				t.Fatal("the server completed a handshake the client should have refused")
			}
		})
	}
}

// A server flight recorded from another connection (other keys), replayed
// whole and cut short at every length: always an error, never a success,
// a panic or a hang.
func TestLeanRejectsReplayedAndTruncatedFlights(t *testing.T) {
	ca := newTestCA(t)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{ca.issue(t, ecKey(t, elliptic.P256()))}, SessionTicketsDisabled: true}
	x25519 := Config{Curves: []tls.CurveID{tls.X25519}}

	// Record one server flight.
	cl, sv := net.Pipe()
	rec := &recorder{Conn: sv}
	served := make(chan error, 1)
	go func() { served <- tls.Server(rec, srvCfg).Handshake() }()
	if err := leanClient(t, x25519, nil).run(cl, time.Now()); err != nil {
		t.Fatalf("handshake over a pipe: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server over a pipe: %v", err)
	}
	cl.Close()
	flight := rec.written
	if len(flight) < 200 {
		t.Fatalf("recorded flight too short: %d bytes", len(flight))
	}

	for n := 0; n <= len(flight); n += max(1, len(flight)/97) {
		lst, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func(part []byte) {
			conn, err := lst.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = conn.Read(make([]byte, 4096))
			_, _ = conn.Write(part)
		}(flight[:n])
		kinds := handshakes(t, leanClient(t, x25519, nil), lst.Addr().String(), 1)
		lst.Close()
		if kinds[""] != 0 {
			t.Fatalf("a replayed flight cut at %d of %d bytes was accepted", n, len(flight))
		}
	}
}

type recorder struct {
	net.Conn
	written []byte
}

func (r *recorder) Write(b []byte) (int, error) {
	r.written = append(r.written, b...)
	return r.Conn.Write(b)
}

func TestLeanKeySharesReusedForAtMostKeyLife(t *testing.T) {
	c := Config{Curves: []tls.CurveID{tls.X25519, tls.CurveP256}}
	l := newLean13(&c, &tls.Config{}, nil)
	now := time.Now()
	if err := l.rotateKeys(now); err != nil {
		t.Fatal(err)
	}
	first := l.groups[0].key
	_ = l.rotateKeys(now.Add(keyLife / 2))
	if l.groups[0].key != first {
		t.Fatal("key rotated before keyLife")
	}
	_ = l.rotateKeys(now.Add(keyLife))
	if l.groups[0].key == first {
		t.Fatal("key kept past keyLife")
	}
	c.FreshKeys = true
	l = newLean13(&c, &tls.Config{}, nil)
	_ = l.rotateKeys(now)
	first = l.groups[1].key
	_ = l.rotateKeys(now)
	if l.groups[1].key == first {
		t.Fatal("FreshKeys reused a key")
	}
}

func TestScheduleHMACMatchesCryptoHMAC(t *testing.T) {
	s := newSchedule()
	for n := 0; n <= 2*sha256.BlockSize; n += 7 {
		key, data := make([]byte, n), make([]byte, 3*n+1)
		_, _ = rand.Read(key)
		_, _ = rand.Read(data)
		m := hmac.New(sha256.New, key)
		m.Write(data)
		if got, want := s.hmac(key, data), m.Sum(nil); !bytes.Equal(got, want) {
			t.Fatalf("key of %d bytes: %x, want %x", n, got, want)
		}
	}
}

func TestClientChoiceIsValidated(t *testing.T) {
	base := Config{Targets: []string{"127.0.0.1:1"}, Concurrency: 1, Duration: time.Second, TLSVersion: "1.3"}
	for _, bad := range []Config{
		{Client: "lean", TLSVersion: "1.2", Curves: []tls.CurveID{tls.X25519}},
		{Client: "lean"}, // Go's default curves include hybrids the lean client lacks
		{Client: "boring"},
	} {
		c := base
		c.Client, c.Curves = bad.Client, bad.Curves
		if bad.TLSVersion != "" {
			c.TLSVersion = bad.TLSVersion
		}
		if _, err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestStormUsesTheLeanClientAndTheServerAgrees(t *testing.T) {
	addr, served := tlsListener(t)
	c := Config{Targets: []string{addr}, Rate: 200, Concurrency: 4, Duration: time.Second, TLSVersion: "1.3",
		Curves: []tls.CurveID{tls.X25519}, Insecure: true}
	addrs, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Run(context.Background(), c, addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Client != "lean" || s.Handshakes < 150 || s.ErrorsTotal != 0 {
		t.Fatalf("%+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for served.Load() < s.Handshakes && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if served.Load() != s.Handshakes {
		t.Fatalf("server completed %d handshakes, client counted %d", served.Load(), s.Handshakes)
	}
}
