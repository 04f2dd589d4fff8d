package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

const etcdBin = "/usr/bin/etcd"

type pki struct{ dir, ca, serverCert, serverKey, clientCert, clientKey string }

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// makePKI writes a CA plus a server (127.0.0.1) and a client certificate.
func makePKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	p := pki{dir: dir, ca: filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem")}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "faultline test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage []x509.ExtKeyUsage, certPath, keyPath string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, certPath, "CERTIFICATE", der)
		kder, _ := x509.MarshalECPrivateKey(k)
		writePEM(t, keyPath, "EC PRIVATE KEY", kder)
	}
	leaf(2, "etcd", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, p.serverCert, p.serverKey)
	leaf(3, "orderd", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, p.clientCert, p.clientKey)
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a throwaway single-member etcd with client-certificate auth.
func startEtcd(t *testing.T, p pki) (endpoint string, stop func()) {
	t.Helper()
	cport, pport := freePort(t), freePort(t)
	endpoint = fmt.Sprintf("https://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	cmd := exec.Command(etcdBin, "--name", "t0", "--data-dir", filepath.Join(p.dir, "data"),
		"--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t0="+peer, "--initial-cluster-state", "new",
		"--cert-file", p.serverCert, "--key-file", p.serverKey, "--trusted-ca-file", p.ca, "--client-cert-auth",
		"--log-level", "error")
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH=")
	logf, _ := os.Create(filepath.Join(p.dir, "etcd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-done
		logf.Close()
	}
	t.Cleanup(stop)
	return endpoint, stop
}

func TestEtcdStoreOverMutualTLS(t *testing.T) {
	if _, err := os.Stat(etcdBin); err != nil {
		t.Skip("etcd not installed (apt-get install -y etcd-server)")
	}
	t.Parallel()
	p := makePKI(t)
	endpoint, stopEtcd := startEtcd(t, p)
	o := startOrderd(t, startOpts{args: []string{"--etcd-endpoints", endpoint, "--etcd-cacert", p.ca,
		"--etcd-cert", p.clientCert, "--etcd-key", p.clientKey, "--reserve-workers", "16", "--health-timeout", "2s"}})
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, b := do(defaultClient, "GET", o.HTTP+"/readyz", nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			b2, _ := os.ReadFile(filepath.Join(p.dir, "etcd.log"))
			t.Fatalf("orderd never ready against etcd: %d %s\netcd log:\n%s", code, b, tail(string(b2), 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	code, b := do(defaultClient, "POST", o.HTTP+"/orders", map[string]any{"sku": "e", "qty": 1})
	if code != 201 {
		t.Fatalf("create via etcd: %d %s", code, b)
	}
	if code, b := do(defaultClient, "GET", o.HTTP+"/orders", nil); code != 200 || len(b) < 20 {
		t.Fatalf("list via etcd: %d %s", code, b)
	}
	t.Run("check_then_act=off", func(t *testing.T) {
		o.setBug("check_then_act", false, 2)
		checkOversell(t, o, "etcd-safe", false)
	})
	t.Run("check_then_act=on", func(t *testing.T) {
		o.setBug("check_then_act", true, 2)
		checkOversell(t, o, "etcd-racy", true)
	})
	if v := o.metric("orderd_etcd_request_duration_seconds_count", `op="txn"`); v < 40 {
		t.Fatalf("etcd txn latency not recorded: %v", v)
	}
	// etcd gone: readiness fails and errors are counted.
	stopEtcd()
	code, _ = do(client(5*time.Second), "GET", o.HTTP+"/readyz", nil)
	if code != 503 {
		t.Fatalf("readyz with etcd down: %d", code)
	}
	if v := o.metric("orderd_etcd_errors_total", ""); v < 1 {
		t.Fatalf("etcd errors not counted: %v", v)
	}
}
