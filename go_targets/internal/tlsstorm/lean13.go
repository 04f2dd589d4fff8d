package tlsstorm

// A lean TLS 1.3 client handshake, for load.
//
// With crypto/tls about a quarter of a storm's CPU goes to Go code outside the
// key exchange and the signature check (key-schedule objects, the record
// layer, message marshalling, certificate parsing), so the storm stays far
// below the client-side crypto ceiling (bench/bench_tlsstorm.py). This client
// does what a full TLS 1.3 handshake requires of a client (RFC 8446 section 2)
// and little else:
//
//   - one ClientHello with a key share for each configured group (X25519,
//     P-256, P-384), TLS_AES_128_GCM_SHA256, no session ID, no PSK, no early
//     data, SNI when a server name is set;
//   - the server's flight decrypted and checked: its CertificateVerify
//     signature against the leaf's key, its Finished MAC, and with a CA pool
//     the certificate chain and name;
//   - a client certificate and CertificateVerify when the server asks;
//   - its own Finished.
//
// A HelloRetryRequest, another cipher suite or anything the client did not
// offer ends the handshake with a protocol error. Every handshake is a full
// one: the server generates a fresh key share, computes the shared secret and
// signs, exactly as for crypto/tls. What the client reuses is its own side:
// parsed certificates (as crypto/tls does) and, unless FreshKeys, its
// ephemeral key shares for up to keyLife.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"hash"
	"net"
	"time"
)

const (
	recCCS       = 20
	recAlert     = 21
	recHandshake = 22
	recAppData   = 23

	msgClientHello         = 1
	msgServerHello         = 2
	msgEncryptedExtensions = 8
	msgCertificate         = 11
	msgCertificateRequest  = 13
	msgCertificateVerify   = 15
	msgFinished            = 20

	extServerName          = 0
	extSupportedGroups     = 10
	extSignatureAlgorithms = 13
	extSupportedVersions   = 43
	extKeyShare            = 51

	suiteAES128GCMSHA256 = 0x1301

	sigECDSAP256   = 0x0403
	sigECDSAP384   = 0x0503
	sigRSAPSS256   = 0x0804
	sigRSAPSS384   = 0x0805
	sigEd25519     = 0x0807
	maxRecordBody  = 16384 + 256
	maxPlaintext   = 16384
	maxMessageSize = 1 << 17

	// keyLife bounds how long a worker's ephemeral keys are reused.
	keyLife = time.Second
)

// helloRetryRandom is the ServerHello.random of a HelloRetryRequest.
var helloRetryRandom = [32]byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

var offeredSignatures = []uint16{sigECDSAP256, sigECDSAP384, sigRSAPSS256, sigRSAPSS384, sigEd25519}

// derivedSecret is Derive-Secret(Early Secret, "derived", "") with no PSK:
// the same for every handshake.
var derivedSecret = func() []byte {
	s := newSchedule()
	zero := make([]byte, sha256.Size)
	early := s.hmac(zero, zero)
	empty := sha256.Sum256(nil)
	return s.expandLabel(early, "derived", empty[:], sha256.Size)
}()

// protocolError is a server message this client cannot accept.
type protocolError string

func (e protocolError) Error() string { return "tls13: " + string(e) }

var errTooShort = protocolError("truncated message")

// curveOf maps a crypto/tls curve ID to its key-exchange curve.
func curveOf(id tls.CurveID) (ecdh.Curve, bool) {
	switch id {
	case tls.X25519:
		return ecdh.X25519(), true
	case tls.CurveP256:
		return ecdh.P256(), true
	case tls.CurveP384:
		return ecdh.P384(), true
	}
	return nil, false
}

// leanSupports reports whether the lean client can run this configuration.
func leanSupports(c *Config) error {
	if c.TLSVersion != "1.3" {
		return fmt.Errorf("the lean client speaks TLS 1.3 only")
	}
	if len(c.Curves) == 0 {
		return fmt.Errorf("the lean client needs explicit --curves (x25519, p256, p384)")
	}
	for _, id := range c.Curves {
		if _, ok := curveOf(id); !ok {
			return fmt.Errorf("the lean client has no curve %v", id)
		}
	}
	return nil
}

type groupKey struct {
	id  tls.CurveID
	key *ecdh.PrivateKey
	pub []byte
}

// lean13 runs handshakes for one worker; not safe for concurrent use.
type lean13 struct {
	dialer     *net.Dialer
	timeout    time.Duration // per TLS handshake, after the connect
	groups     []groupKey
	keysAt     time.Time
	fresh      bool
	serverName string // SNI and verification name; "" = the target's IP
	insecure   bool
	roots      *x509.CertPool
	clientCert *tls.Certificate

	in, hs, out []byte // record input buffer, handshake bytes, output buffer
	n, r, hsr   int    // bytes in `in`, read offset in `in`, read offset in `hs`

	transcript hash.Hash
	schedule   *schedule
	dec        cipher.AEAD
	decIV      [12]byte
	decSeq     uint64

	// The last server chain seen and what was parsed from it.
	chainDER [][]byte
	chain    []*x509.Certificate
}

func newLean13(c *Config, tc *tls.Config, d *net.Dialer) *lean13 {
	l := &lean13{
		dialer:     d,
		timeout:    c.HandshakeTimeout,
		fresh:      c.FreshKeys,
		serverName: tc.ServerName,
		insecure:   tc.InsecureSkipVerify,
		roots:      tc.RootCAs,
		in:         make([]byte, 2*(5+maxRecordBody)),
		transcript: sha256.New(),
		schedule:   newSchedule(),
	}
	if len(tc.Certificates) > 0 {
		l.clientCert = &tc.Certificates[0]
	}
	for _, id := range c.Curves {
		l.groups = append(l.groups, groupKey{id: id})
	}
	return l
}

func (l *lean13) rotateKeys(now time.Time) error {
	if !l.fresh && l.groups[0].key != nil && now.Sub(l.keysAt) < keyLife {
		return nil
	}
	for i := range l.groups {
		curve, _ := curveOf(l.groups[i].id)
		k, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		l.groups[i].key, l.groups[i].pub = k, k.PublicKey().Bytes()
	}
	l.keysAt = now
	return nil
}

// handshake runs one full handshake over a fresh connection to addr. It
// returns an error kind ("" on success) and the latency (connect +
// handshake), as the crypto/tls path does.
func (l *lean13) handshake(ctx context.Context, addr string) (string, time.Duration) {
	start := time.Now()
	raw, err := l.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Classify("dial", err), 0
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(l.timeout))
	// The storm's end or a signal interrupts a handshake in progress.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := l.run(raw, start); err != nil {
		return Classify("handshake", err), 0
	}
	return "", time.Since(start)
}

func (l *lean13) run(conn net.Conn, now time.Time) error {
	if err := l.rotateKeys(now); err != nil {
		return err
	}
	l.n, l.r, l.hs, l.hsr, l.dec, l.decSeq = 0, 0, l.hs[:0], 0, nil, 0
	l.transcript.Reset()

	hello := l.clientHello()
	l.transcript.Write(hello[5:])
	if _, err := conn.Write(hello); err != nil {
		return err
	}

	msg, err := l.readMessage(conn, msgServerHello)
	if err != nil {
		return err
	}
	shared, err := l.serverHello(msg[4:])
	if err != nil {
		return err
	}
	l.transcript.Write(msg)
	if l.hsr != len(l.hs) {
		return protocolError("handshake data after ServerHello in the clear")
	}
	th := l.transcript.Sum(nil)
	ks := l.schedule
	hsSecret := ks.hmac(derivedSecret, shared)
	cTraffic := ks.expandLabel(hsSecret, "c hs traffic", th, sha256.Size)
	sTraffic := ks.expandLabel(hsSecret, "s hs traffic", th, sha256.Size)
	if l.dec, err = ks.trafficAEAD(sTraffic, &l.decIV); err != nil {
		return err
	}

	if msg, err = l.readMessage(conn, msgEncryptedExtensions); err != nil {
		return err
	}
	l.transcript.Write(msg)
	if msg, err = l.readMessage(conn, 0); err != nil {
		return err
	}
	var certContext []byte
	certRequested := msg[0] == msgCertificateRequest
	if certRequested {
		p := parser(msg[4:])
		certContext = p.vec8()
		if p.bad {
			return errTooShort
		}
		l.transcript.Write(msg)
		if msg, err = l.readMessage(conn, msgCertificate); err != nil {
			return err
		}
	} else if msg[0] != msgCertificate {
		return protocolError(fmt.Sprintf("message %d where Certificate was expected", msg[0]))
	}
	pub, err := l.serverCertificate(msg[4:], conn)
	if err != nil {
		return err
	}
	l.transcript.Write(msg)

	if msg, err = l.readMessage(conn, msgCertificateVerify); err != nil {
		return err
	}
	if err := verifyCertificateVerify(pub, msg[4:], serverSignatureContext, l.transcript.Sum(nil)); err != nil {
		return err
	}
	l.transcript.Write(msg)

	if msg, err = l.readMessage(conn, msgFinished); err != nil {
		return err
	}
	want := ks.hmac(ks.expandLabel(sTraffic, "finished", nil, sha256.Size), l.transcript.Sum(nil))
	if !hmac.Equal(msg[4:], want) {
		return protocolError("the server's Finished does not match the transcript")
	}
	l.transcript.Write(msg)

	flight := l.hs[len(l.hs):] // reuse spare capacity for the client's flight
	if certRequested {
		start := len(flight)
		flight = l.clientCertificate(flight, certContext)
		l.transcript.Write(flight[start:])
		if l.clientCert != nil && len(l.clientCert.Certificate) > 0 {
			start = len(flight)
			if flight, err = l.clientCertificateVerify(flight); err != nil {
				return err
			}
			l.transcript.Write(flight[start:])
		}
	}
	verify := ks.hmac(ks.expandLabel(cTraffic, "finished", nil, sha256.Size), l.transcript.Sum(nil))
	flight = append(flight, msgFinished, 0, 0, byte(len(verify)))
	flight = append(flight, verify...)
	var encIV [12]byte
	enc, err := ks.trafficAEAD(cTraffic, &encIV)
	if err != nil {
		return err
	}
	l.out = sealRecords(l.out[:0], enc, &encIV, flight)
	_, err = conn.Write(l.out)
	return err
}

// clientHello returns the ClientHello record, built in l.out.
func (l *lean13) clientHello() []byte {
	b := append(l.out[:0], recHandshake, 3, 1, 0, 0) // record header, length patched below
	b = append(b, msgClientHello, 0, 0, 0)           // message header, length patched below
	b = append(b, 3, 3)                              // legacy_version
	var random [32]byte
	_, _ = rand.Read(random[:])
	b = append(b, random[:]...)
	b = append(b, 0)                                // legacy_session_id: empty, so no CCS
	b = append(b, 0, 2, suiteAES128GCMSHA256>>8, 1) // cipher_suites
	b = append(b, 1, 0)                             // legacy_compression_methods: null
	extAt := len(b)
	b = append(b, 0, 0)
	if name := l.sniName(); name != "" {
		b = binary.BigEndian.AppendUint16(b, extServerName)
		b = binary.BigEndian.AppendUint16(b, uint16(len(name)+5))
		b = binary.BigEndian.AppendUint16(b, uint16(len(name)+3))
		b = append(b, 0) // host_name
		b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
	}
	b = binary.BigEndian.AppendUint16(b, extSupportedGroups)
	b = binary.BigEndian.AppendUint16(b, uint16(2+2*len(l.groups)))
	b = binary.BigEndian.AppendUint16(b, uint16(2*len(l.groups)))
	for _, g := range l.groups {
		b = binary.BigEndian.AppendUint16(b, uint16(g.id))
	}
	b = binary.BigEndian.AppendUint16(b, extSignatureAlgorithms)
	b = binary.BigEndian.AppendUint16(b, uint16(2+2*len(offeredSignatures)))
	b = binary.BigEndian.AppendUint16(b, uint16(2*len(offeredSignatures)))
	for _, s := range offeredSignatures {
		b = binary.BigEndian.AppendUint16(b, s)
	}
	b = append(b, 0, extSupportedVersions, 0, 3, 2, 3, 4)
	shares := 0
	for _, g := range l.groups {
		shares += 4 + len(g.pub)
	}
	b = binary.BigEndian.AppendUint16(b, extKeyShare)
	b = binary.BigEndian.AppendUint16(b, uint16(2+shares))
	b = binary.BigEndian.AppendUint16(b, uint16(shares))
	for _, g := range l.groups {
		b = binary.BigEndian.AppendUint16(b, uint16(g.id))
		b = binary.BigEndian.AppendUint16(b, uint16(len(g.pub)))
		b = append(b, g.pub...)
	}
	binary.BigEndian.PutUint16(b[extAt:], uint16(len(b)-extAt-2))
	putUint24(b[6:], len(b)-9)
	binary.BigEndian.PutUint16(b[3:], uint16(len(b)-5))
	l.out = b
	return b
}

// sniName is the server_name to send: the configured name unless it is an IP.
func (l *lean13) sniName() string {
	if l.serverName == "" || net.ParseIP(l.serverName) != nil {
		return ""
	}
	return l.serverName
}

// serverHello checks a ServerHello body and returns the ECDHE shared secret.
func (l *lean13) serverHello(body []byte) ([]byte, error) {
	p := parser(body)
	if p.u16() != 0x0303 {
		return nil, protocolError("ServerHello legacy_version is not TLS 1.2")
	}
	if random := p.bytes(32); !p.bad && bytes.Equal(random, helloRetryRandom[:]) {
		return nil, protocolError("HelloRetryRequest: the server wants a group this client did not offer a share for")
	}
	if sid := p.vec8(); len(sid) != 0 {
		return nil, protocolError("ServerHello echoes a session ID that was not sent")
	}
	if suite := p.u16(); !p.bad && suite != suiteAES128GCMSHA256 {
		return nil, protocolError(fmt.Sprintf("server chose cipher suite %#04x; only TLS_AES_128_GCM_SHA256 was offered", suite))
	}
	if p.u8() != 0 {
		return nil, protocolError("ServerHello compression is not null")
	}
	exts := parser(p.vec16())
	if p.bad {
		return nil, errTooShort
	}
	var version uint16
	var share []byte
	var group tls.CurveID
	for len(exts.b) > 0 && !exts.bad {
		typ, data := exts.u16(), parser(exts.vec16())
		switch typ {
		case extSupportedVersions:
			version = data.u16()
		case extKeyShare:
			group = tls.CurveID(data.u16())
			share = data.vec16()
		}
		if data.bad {
			return nil, errTooShort
		}
	}
	if exts.bad {
		return nil, errTooShort
	}
	if version != 0x0304 {
		return nil, protocolError("the server did not select TLS 1.3")
	}
	for _, g := range l.groups {
		if g.id != group {
			continue
		}
		curve, _ := curveOf(group)
		peer, err := curve.NewPublicKey(share)
		if err != nil {
			return nil, protocolError("bad server key share: " + err.Error())
		}
		return g.key.ECDH(peer)
	}
	return nil, protocolError(fmt.Sprintf("server key share for group %v, which was not offered", group))
}

// serverCertificate parses a Certificate body, checks the chain when a CA
// pool is set, and returns the leaf's public key.
func (l *lean13) serverCertificate(body []byte, conn net.Conn) (crypto.PublicKey, error) {
	p := parser(body)
	p.vec8() // certificate_request_context: empty from a server
	list := parser(p.vec24())
	if p.bad {
		return nil, errTooShort
	}
	var ders [][]byte
	for len(list.b) > 0 && !list.bad {
		ders = append(ders, list.vec24())
		list.vec16() // per-certificate extensions
	}
	if list.bad || len(ders) == 0 {
		return nil, protocolError("empty or malformed server Certificate")
	}
	if !sameChain(ders, l.chainDER) {
		chain := make([]*x509.Certificate, len(ders))
		owned := make([][]byte, len(ders))
		for i, der := range ders {
			owned[i] = bytes.Clone(der)
			cert, err := x509.ParseCertificate(owned[i])
			if err != nil {
				return nil, protocolError("server certificate: " + err.Error())
			}
			chain[i] = cert
		}
		l.chainDER, l.chain = owned, chain
	}
	if !l.insecure {
		name := l.serverName
		if name == "" {
			host, _, _ := net.SplitHostPort(conn.RemoteAddr().String())
			name = host
		}
		opts := x509.VerifyOptions{Roots: l.roots, DNSName: name, Intermediates: x509.NewCertPool()}
		for _, c := range l.chain[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := l.chain[0].Verify(opts); err != nil {
			return nil, &tls.CertificateVerificationError{UnverifiedCertificates: l.chain, Err: err}
		}
	}
	return l.chain[0].PublicKey, nil
}

func sameChain(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

const (
	serverSignatureContext = "TLS 1.3, server CertificateVerify"
	clientSignatureContext = "TLS 1.3, client CertificateVerify"
)

var signaturePad = bytes.Repeat([]byte{0x20}, 64)

// signedContent is what a TLS 1.3 CertificateVerify signs (RFC 8446 4.4.3).
func signedContent(label string, transcriptHash []byte) []byte {
	b := make([]byte, 0, 64+len(label)+1+len(transcriptHash))
	b = append(b, signaturePad...)
	b = append(b, label...)
	b = append(b, 0)
	return append(b, transcriptHash...)
}

func verifyCertificateVerify(pub crypto.PublicKey, body []byte, label string, transcriptHash []byte) error {
	p := parser(body)
	alg, sig := p.u16(), p.vec16()
	if p.bad {
		return errTooShort
	}
	content := signedContent(label, transcriptHash)
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch alg {
		case sigECDSAP256:
			h := sha256.Sum256(content)
			ok = ecdsa.VerifyASN1(k, h[:], sig)
		case sigECDSAP384:
			h := sha512.Sum384(content)
			ok = ecdsa.VerifyASN1(k, h[:], sig)
		default:
			return protocolError(fmt.Sprintf("signature algorithm %#04x for an ECDSA key", alg))
		}
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}
		switch alg {
		case sigRSAPSS256:
			h := sha256.Sum256(content)
			ok = rsa.VerifyPSS(k, crypto.SHA256, h[:], sig, opts) == nil
		case sigRSAPSS384:
			h := sha512.Sum384(content)
			ok = rsa.VerifyPSS(k, crypto.SHA384, h[:], sig, opts) == nil
		default:
			return protocolError(fmt.Sprintf("signature algorithm %#04x for an RSA key", alg))
		}
	case ed25519.PublicKey:
		if alg != sigEd25519 {
			return protocolError(fmt.Sprintf("signature algorithm %#04x for an Ed25519 key", alg))
		}
		ok = ed25519.Verify(k, content, sig)
	default:
		return protocolError(fmt.Sprintf("unsupported server key type %T", pub))
	}
	if !ok {
		return protocolError("the server's CertificateVerify signature does not verify")
	}
	return nil
}

// clientCertificate appends the client's Certificate message (an empty
// list without a certificate, as RFC 8446 4.4.2 allows).
func (l *lean13) clientCertificate(b []byte, requestContext []byte) []byte {
	at := len(b)
	b = append(b, msgCertificate, 0, 0, 0, byte(len(requestContext)))
	b = append(b, requestContext...)
	listAt := len(b)
	b = append(b, 0, 0, 0)
	if l.clientCert != nil {
		for _, der := range l.clientCert.Certificate {
			b = appendUint24(b, len(der))
			b = append(b, der...)
			b = append(b, 0, 0) // no extensions
		}
	}
	putUint24(b[listAt:], len(b)-listAt-3)
	putUint24(b[at+1:], len(b)-at-4)
	return b
}

// clientCertificateVerify appends the client's CertificateVerify.
func (l *lean13) clientCertificateVerify(b []byte) ([]byte, error) {
	signer, ok := l.clientCert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("client key %T cannot sign", l.clientCert.PrivateKey)
	}
	content := signedContent(clientSignatureContext, l.transcript.Sum(nil))
	var alg uint16
	var sig []byte
	var err error
	switch k := signer.Public().(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize == 384 {
			h := sha512.Sum384(content)
			alg = sigECDSAP384
			sig, err = signer.Sign(rand.Reader, h[:], crypto.SHA384)
		} else {
			h := sha256.Sum256(content)
			alg = sigECDSAP256
			sig, err = signer.Sign(rand.Reader, h[:], crypto.SHA256)
		}
	case *rsa.PublicKey:
		h := sha256.Sum256(content)
		alg = sigRSAPSS256
		sig, err = signer.Sign(rand.Reader, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	case ed25519.PublicKey:
		alg = sigEd25519
		sig, err = signer.Sign(rand.Reader, content, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("unsupported client key type %T", k)
	}
	if err != nil {
		return nil, err
	}
	b = append(b, msgCertificateVerify)
	b = appendUint24(b, 4+len(sig))
	b = binary.BigEndian.AppendUint16(b, alg)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sig)))
	return append(b, sig...), nil
}

// readMessage returns the next handshake message, header included. want,
// when non-zero, is the only message type accepted.
func (l *lean13) readMessage(conn net.Conn, want byte) ([]byte, error) {
	for {
		if avail := len(l.hs) - l.hsr; avail >= 4 {
			n := int(l.hs[l.hsr+1])<<16 | int(l.hs[l.hsr+2])<<8 | int(l.hs[l.hsr+3])
			if n > maxMessageSize {
				return nil, protocolError("handshake message too long")
			}
			if avail >= 4+n {
				msg := l.hs[l.hsr : l.hsr+4+n]
				l.hsr += 4 + n
				if want != 0 && msg[0] != want {
					return nil, protocolError(fmt.Sprintf("message %d where %d was expected", msg[0], want))
				}
				return msg, nil
			}
		}
		if err := l.readRecord(conn); err != nil {
			return nil, err
		}
	}
}

// readRecord reads one record and appends its handshake bytes to l.hs.
func (l *lean13) readRecord(conn net.Conn) error {
	for {
		if avail := l.n - l.r; avail >= 5 {
			size := int(binary.BigEndian.Uint16(l.in[l.r+3:]))
			if size > maxRecordBody {
				return protocolError("record too long")
			}
			if avail >= 5+size {
				break
			}
		}
		if l.r > 0 {
			l.n = copy(l.in, l.in[l.r:l.n])
			l.r = 0
		}
		m, err := conn.Read(l.in[l.n:])
		l.n += m
		if err != nil && m == 0 {
			return err
		}
	}
	header := l.in[l.r : l.r+5]
	body := l.in[l.r+5 : l.r+5+int(binary.BigEndian.Uint16(header[3:]))]
	l.r += 5 + len(body)
	switch header[0] {
	case recCCS:
		return nil // a middlebox-compatibility ChangeCipherSpec: ignored
	case recAlert: // in the clear: before the keys, or from a server that failed early
		return alertOf(body)
	case recHandshake:
		if l.dec != nil {
			return protocolError("handshake record in the clear after the handshake keys")
		}
		l.hs = append(l.hs, body...)
		return nil
	case recAppData:
		if l.dec == nil {
			return protocolError("encrypted record before ServerHello")
		}
		nonce := l.decIV
		xorSeq(&nonce, l.decSeq)
		l.decSeq++
		plain, err := l.dec.Open(body[:0], nonce[:], body, header)
		if err != nil {
			return protocolError("a record does not decrypt (bad_record_mac)")
		}
		i := len(plain) - 1
		for i >= 0 && plain[i] == 0 {
			i--
		}
		if i < 0 {
			return protocolError("encrypted record without a content type")
		}
		switch plain[i] {
		case recHandshake:
			l.hs = append(l.hs, plain[:i]...)
			return nil
		case recAlert:
			return alertOf(plain[:i])
		}
		return protocolError(fmt.Sprintf("encrypted record of type %d during the handshake", plain[i]))
	}
	return protocolError(fmt.Sprintf("record type %d", header[0]))
}

func alertOf(body []byte) error {
	if len(body) < 2 {
		return errTooShort
	}
	return tls.AlertError(body[1])
}

// sealRecords encrypts plaintext handshake bytes into TLS 1.3 records.
func sealRecords(out []byte, enc cipher.AEAD, iv *[12]byte, plain []byte) []byte {
	for seq := uint64(0); len(plain) > 0; seq++ {
		n := min(len(plain), maxPlaintext-1)
		at := len(out)
		out = append(out, recAppData, 3, 3, 0, 0)
		binary.BigEndian.PutUint16(out[at+3:], uint16(n+1+enc.Overhead()))
		nonce := *iv
		xorSeq(&nonce, seq)
		inner := append(append([]byte(nil), plain[:n]...), recHandshake)
		out = enc.Seal(out, nonce[:], inner, out[at:at+5])
		plain = plain[n:]
	}
	return out
}

func (s *schedule) trafficAEAD(secret []byte, iv *[12]byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(s.expandLabel(secret, "key", nil, 16))
	if err != nil {
		return nil, err
	}
	copy(iv[:], s.expandLabel(secret, "iv", nil, 12))
	return cipher.NewGCM(block)
}

func xorSeq(nonce *[12]byte, seq uint64) {
	for i := 0; i < 8; i++ {
		nonce[11-i] ^= byte(seq >> (8 * i))
	}
}

// schedule computes the HKDF-SHA256 steps of the TLS 1.3 key schedule with
// one scratch digest, instead of two new digests per HMAC.
type schedule struct {
	h    hash.Hash
	info []byte
}

func newSchedule() *schedule { return &schedule{h: sha256.New()} }

// hmac is HMAC-SHA256 (RFC 2104). Every key here is a secret of one hash
// length; a key longer than a block would have to be hashed first, so such a
// key goes to crypto/hmac.
func (s *schedule) hmac(key, data []byte) []byte {
	if len(key) > sha256.BlockSize {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		return m.Sum(nil)
	}
	var pad [sha256.BlockSize]byte
	copy(pad[:], key)
	for i := range pad {
		pad[i] ^= 0x36
	}
	s.h.Reset()
	s.h.Write(pad[:])
	s.h.Write(data)
	var inner [sha256.Size]byte
	s.h.Sum(inner[:0])
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	s.h.Reset()
	s.h.Write(pad[:])
	s.h.Write(inner[:])
	return s.h.Sum(make([]byte, 0, sha256.Size))
}

// expandLabel is HKDF-Expand-Label with SHA-256 for outputs of at most one
// hash length, all TLS 1.3 needs here.
func (s *schedule) expandLabel(secret []byte, label string, context []byte, length int) []byte {
	info := binary.BigEndian.AppendUint16(s.info[:0], uint16(length))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	info = append(info, 1)
	s.info = info
	return s.hmac(secret, info)[:length]
}

func putUint24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

func appendUint24(b []byte, v int) []byte { return append(b, byte(v>>16), byte(v>>8), byte(v)) }

// parser reads TLS vectors; any overrun sets bad and yields zero values.
type byteParser struct {
	b   []byte
	bad bool
}

func parser(b []byte) *byteParser { return &byteParser{b: b} }

func (p *byteParser) bytes(n int) []byte {
	if p.bad || len(p.b) < n {
		p.bad = true
		return nil
	}
	v := p.b[:n]
	p.b = p.b[n:]
	return v
}

func (p *byteParser) u8() byte {
	if v := p.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (p *byteParser) u16() uint16 {
	if v := p.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (p *byteParser) vec8() []byte { return p.bytes(int(p.u8())) }

func (p *byteParser) vec16() []byte { return p.bytes(int(p.u16())) }

func (p *byteParser) vec24() []byte {
	v := p.bytes(3)
	if v == nil {
		return nil
	}
	return p.bytes(int(v[0])<<16 | int(v[1])<<8 | int(v[2]))
}
