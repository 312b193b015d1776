package rig

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// recorder is a testing.TB that records Skip and Fatal instead of acting on
// the real test, so the skip rules can be tested without skipping.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatal(args ...any) {
	r.failed = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runRecorded runs f with a recorder in its own goroutine, so that Goexit
// ends only f.
func runRecorded(t *testing.T, f func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestMissingBinarySkipsOrFails(t *testing.T) {
	const bin, pkg = "daneroll-rig-no-such-program", "daneroll-no-such-package"

	t.Setenv(RequireEnv, "")
	r := runRecorded(t, func(tb testing.TB) { lookBinary(tb, bin, pkg) })
	if r.failed != "" || !strings.Contains(r.skipped, pkg) || !strings.Contains(r.skipped, bin) {
		t.Errorf("without %s: skipped %q, failed %q; want a skip naming %s and %s", RequireEnv, r.skipped, r.failed, bin, pkg)
	}

	t.Setenv(RequireEnv, "1")
	r = runRecorded(t, func(tb testing.TB) { lookBinary(tb, bin, pkg) })
	if r.skipped != "" || !strings.Contains(r.failed, pkg) {
		t.Errorf("with %s=1: skipped %q, failed %q; want a failure naming %s", RequireEnv, r.skipped, r.failed, pkg)
	}

	r = runRecorded(t, func(tb testing.TB) { lookBinary(tb, "sh", "dash") })
	if r.skipped != "" || r.failed != "" {
		t.Errorf("sh: skipped %q, failed %q; want it found", r.skipped, r.failed)
	}
}

func TestUnboundAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5353":  "127.0.0.1@5353",
		"127.0.0.1@5353":  "127.0.0.1@5353",
		"127.53.1.2:53":   "127.53.1.2@53",
		"192.0.2.1:53":    "",
		"127.0.0.1":       "",
		"127.0.0.1:0":     "",
		"mail.test:53":    "",
		"127.0.0.1@65536": "",
	} {
		got, err := unboundAddr(in)
		if want == "" {
			if err == nil {
				t.Errorf("unboundAddr(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("unboundAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// ctxFor returns a context that ends after d or with the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tsigUpdate sends an RFC 2136 update inserting rrs into zone, signed with
// the given key, over TCP.
func tsigUpdate(ctx context.Context, addr, zone, keyName, alg, secret string, rrs ...dns.RR) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Insert(rrs)
	m.SetTsig(keyName, dns.Fqdn(alg), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{keyName: secret}}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	return r, err
}

// randomTLSA returns a 3 1 1 TLSA record at name with a random digest.
func randomTLSA(t *testing.T, name string) *dns.TLSA {
	t.Helper()
	digest := make([]byte, 32)
	if _, err := rand.Read(digest); err != nil {
		t.Fatal(err)
	}
	return tlsa311(name, digest)
}

func tlsa311(name string, digest []byte) *dns.TLSA {
	return &dns.TLSA{
		// TTL 1: resolvers see a replaced RRset within a second.
		Hdr:          dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: 1},
		Usage:        3,
		Selector:     1,
		MatchingType: 1,
		Certificate:  hex.EncodeToString(digest),
	}
}

// servedTLSA reports whether r answers with want, covered by an RRSIG.
func servedTLSA(r *dns.Msg, want *dns.TLSA) bool {
	if r == nil || !hasRRSIG(r.Answer, dns.TypeTLSA) {
		return false
	}
	for _, rr := range r.Answer {
		if got, ok := rr.(*dns.TLSA); ok && strings.EqualFold(got.Certificate, want.Certificate) &&
			got.Usage == want.Usage && got.Selector == want.Selector && got.MatchingType == want.MatchingType {
			return true
		}
	}
	return false
}

func TestBINDSignedZoneAndTSIGUpdates(t *testing.T) {
	t.Parallel()
	began := time.Now()
	b := StartBIND(t, BINDOptions{Signed: true, Records: []string{"mail IN A 127.0.0.1"}})
	t.Logf("named started and zone signed in %v", time.Since(began).Round(time.Millisecond))
	ctx := ctxFor(t, 60*time.Second)

	if !strings.HasPrefix(b.DS(), "example.test.") || !strings.Contains(b.DS(), " DS ") {
		t.Errorf("DS() = %q, want an example.test. DS record", b.DS())
	}
	r, err := b.Query(ctx, "mail.example.test.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Authoritative || !hasType(r.Answer, dns.TypeA) || !hasRRSIG(r.Answer, dns.TypeA) {
		t.Fatalf("mail A with DO: want an authoritative signed answer, got:\n%v", r)
	}
	serial0, err := b.Serial(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A TSIG-signed update is accepted and served signed with a new serial.
	want := randomTLSA(t, "_25._tcp.mail.example.test.")
	sent := time.Now()
	r, err = tsigUpdate(ctx, b.Addr, b.Zone, b.TSIGName, b.TSIGAlgorithm, b.TSIGSecret, want)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("update: rcode %s, want NOERROR\nnamed log:\n%s", dns.RcodeToString[r.Rcode], b.Log())
	}
	var serial1 uint32
	err = poll(ctx, 5*time.Millisecond, func() error {
		r, err := b.Query(ctx, want.Hdr.Name, dns.TypeTLSA)
		if err != nil {
			return err
		}
		if !servedTLSA(r, want) {
			return errors.New("TLSA not served signed yet")
		}
		if serial1, err = b.Serial(ctx); err != nil {
			return err
		}
		if serial1 == serial0 {
			return errors.New("serial unchanged")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("updated TLSA: %v\nnamed log:\n%s", err, b.Log())
	}
	t.Logf("update served signed after %v (serial %d -> %d)", time.Since(sent).Round(time.Millisecond), serial0, serial1)

	// Updates without the right key change nothing.
	wrongSecret := make([]byte, 32)
	if _, err := rand.Read(wrongSecret); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, key, secret string }{
		{"wrong secret", b.TSIGName, base64.StdEncoding.EncodeToString(wrongSecret)},
		{"unknown key", "intruder.", b.TSIGSecret},
	} {
		rejected := randomTLSA(t, "_443._tcp.mail.example.test.")
		r, err := tsigUpdate(ctx, b.Addr, b.Zone, tc.key, b.TSIGAlgorithm, tc.secret, rejected)
		// miekg/dns also reports that the unsigned error reply fails TSIG
		// verification; the rcode is what named decided.
		if r == nil {
			t.Errorf("%s: no reply: %v", tc.name, err)
		} else if r.Rcode != dns.RcodeNotAuth {
			t.Errorf("%s: rcode %s (err %v), want NOTAUTH", tc.name, dns.RcodeToString[r.Rcode], err)
		}
		r, err = b.Query(ctx, rejected.Hdr.Name, dns.TypeTLSA)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: %s TLSA: rcode %s, want NXDOMAIN:\n%v", tc.name, rejected.Hdr.Name, dns.RcodeToString[r.Rcode], r)
		}
	}
	if s, err := b.Serial(ctx); err != nil || s != serial1 {
		t.Errorf("serial after rejected updates = %d, %v; want %d", s, err, serial1)
	}
}

func TestBINDUnsigned(t *testing.T) {
	t.Parallel()
	b := StartBIND(t, BINDOptions{Zone: "Other.Test", TSIGName: "k1", TSIGAlgorithm: "hmac-sha512", DefaultTTL: 60, SOAMinimum: 30})
	ctx := ctxFor(t, 30*time.Second)
	if b.DS() != "" || b.WaitSigned(ctx) == nil {
		t.Errorf("unsigned zone: DS() = %q, WaitSigned succeeded; want neither", b.DS())
	}
	r, err := b.Query(ctx, "other.test.", dns.TypeSOA)
	if err != nil {
		t.Fatal(err)
	}
	var soa *dns.SOA
	if len(r.Answer) > 0 {
		soa, _ = r.Answer[0].(*dns.SOA)
	}
	if soa == nil || hasRRSIG(r.Answer, dns.TypeSOA) || soa.Hdr.Ttl != 60 || soa.Minttl != 30 {
		t.Fatalf("SOA: want unsigned, TTL 60, minimum 30; got:\n%v", r)
	}
	rr := randomTLSA(t, "_25._tcp.mx.other.test.")
	r, err = tsigUpdate(ctx, b.Addr, b.Zone, "k1.", "hmac-sha512", b.TSIGSecret, rr)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("update with hmac-sha512 key: %v, %v", r, err)
	}
	r, err = b.Query(ctx, rr.Hdr.Name, dns.TypeTLSA)
	if err != nil || !hasType(r.Answer, dns.TypeTLSA) {
		t.Fatalf("updated TLSA not served: %v, %v", r, err)
	}
}

func TestUnboundValidates(t *testing.T) {
	t.Parallel()
	want := randomTLSA(t, "_25._tcp.mail.example.test.")
	b := StartBIND(t, BINDOptions{Signed: true, Records: []string{"mail IN A 127.0.0.1", want.String()}})
	began := time.Now()
	good := StartUnbound(t, UnboundOptions{StubZone: b.Zone, StubAddr: b.Addr, TrustAnchor: b.DS()})
	t.Logf("unbound started in %v", time.Since(began).Round(time.Millisecond))

	// A DS whose digest is wrong in its last byte: the DNSKEY no longer matches.
	ds, err := dns.NewRR(b.DS())
	if err != nil {
		t.Fatal(err)
	}
	bad := ds.(*dns.DS)
	last := bad.Digest[len(bad.Digest)-1:]
	if last == "0" {
		last = "1"
	} else {
		last = "0"
	}
	bad.Digest = bad.Digest[:len(bad.Digest)-1] + last
	broken := StartUnbound(t, UnboundOptions{StubZone: b.Zone, StubAddr: b.Addr, TrustAnchor: bad.String()})
	insecure := StartUnbound(t, UnboundOptions{StubZone: b.Zone, StubAddr: "127.0.0.1@" + b.Addr[strings.LastIndex(b.Addr, ":")+1:]})

	ctx := ctxFor(t, 30*time.Second)
	r, err := good.Query(ctx, want.Hdr.Name, dns.TypeTLSA)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || !r.AuthenticatedData || !servedTLSA(r, want) {
		t.Errorf("validating resolver: want NOERROR with AD and the TLSA, got:\n%v\nunbound log:\n%s", r, good.Log())
	}

	r, err = broken.Query(ctx, want.Hdr.Name, dns.TypeTLSA)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeServerFailure || r.AuthenticatedData || hasType(r.Answer, dns.TypeTLSA) {
		t.Errorf("broken trust anchor: want SERVFAIL without AD or TLSA, got:\n%v", r)
	}

	r, err = insecure.Query(ctx, want.Hdr.Name, dns.TypeTLSA)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || r.AuthenticatedData || !hasType(r.Answer, dns.TypeTLSA) {
		t.Errorf("no trust anchor: want the TLSA without AD, got:\n%v", r)
	}

	// A record added by update reaches the validating resolver quickly:
	// negative answers are cached for a second at most.
	if r, err := good.Query(ctx, "_587._tcp.mail.example.test.", dns.TypeTLSA); err != nil || r.Rcode != dns.RcodeNameError || !r.AuthenticatedData {
		t.Fatalf("before update: want a validated NXDOMAIN, got %v, %v", r, err)
	}
	added := randomTLSA(t, "_587._tcp.mail.example.test.")
	sent := time.Now()
	if r, err := tsigUpdate(ctx, b.Addr, b.Zone, b.TSIGName, b.TSIGAlgorithm, b.TSIGSecret, added); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("update: %v, %v", r, err)
	}
	err = poll(ctx, 20*time.Millisecond, func() error {
		r, err := good.Query(ctx, added.Hdr.Name, dns.TypeTLSA)
		if err != nil {
			return err
		}
		if !r.AuthenticatedData || !servedTLSA(r, added) {
			return fmt.Errorf("not yet: %s ad=%v", dns.RcodeToString[r.Rcode], r.AuthenticatedData)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("added TLSA via resolver: %v", err)
	}
	t.Logf("update visible with AD through unbound after %v", time.Since(sent).Round(time.Millisecond))
}

// selfSigned returns a fresh ECDSA key and a self-signed certificate for host,
// both PEM-encoded, and the parsed certificate.
func selfSigned(t *testing.T, host string) (keyPEM, certPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert
}

// installChain writes privkey.pem and fullchain.pem into dir, each replaced
// atomically, and returns their paths in smtpd_tls_chain_files order.
func installChain(t *testing.T, dir string, keyPEM, certPEM []byte) []string {
	t.Helper()
	var paths []string
	for _, f := range []struct {
		name string
		data []byte
	}{{"privkey.pem", keyPEM}, {"fullchain.pem", certPEM}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p+".tmp", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// starttlsLeaf speaks SMTP to addr up to STARTTLS, completes the TLS
// handshake and returns the leaf certificate the server sent.
func starttlsLeaf(ctx context.Context, addr, serverName string) (*x509.Certificate, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("banner: %w", err)
	}
	if err := tp.PrintfLine("EHLO client.test"); err != nil {
		return nil, err
	}
	_, ehlo, err := tp.ReadResponse(250)
	if err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if !strings.Contains(ehlo, "STARTTLS") {
		return nil, fmt.Errorf("EHLO does not offer STARTTLS: %q", ehlo)
	}
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return nil, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("STARTTLS: %w", err)
	}
	// The certificates are self-signed: the test compares the served leaf
	// with the expected one byte for byte instead of verifying a chain.
	tc := tls.Client(conn, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	defer tc.Close()
	return tc.ConnectionState().PeerCertificates[0], nil
}

// groupAlive lists the processes of process group pgid that still run
// (zombies excluded: they are dead, merely not reaped by init yet).
func groupAlive(t *testing.T, pgid int) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var alive []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			alive = append(alive, string(b[:i+1]))
		}
	}
	return alive
}

// waitGroupGone waits until process group pgid has no live process.
func waitGroupGone(t *testing.T, ctx context.Context, what string, pgid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var alive []string
	err := poll(ctx, 20*time.Millisecond, func() error {
		if alive = groupAlive(t, pgid); len(alive) > 0 {
			return errors.New("still alive")
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: processes still alive: %v", what, alive)
	}
}

func TestPostfixServesAndReloadsCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key1, cert1PEM, cert1 := selfSigned(t, "mail.example.test")
	chain := installChain(t, dir, key1, cert1PEM)
	began := time.Now()
	pf := StartPostfix(t, PostfixOptions{ChainFiles: chain})
	t.Logf("postfix started in %v", time.Since(began).Round(time.Millisecond))
	ctx := ctxFor(t, 60*time.Second)

	leaf, err := starttlsLeaf(ctx, pf.Addr, pf.Hostname)
	if err != nil {
		t.Fatalf("STARTTLS: %v\nmaillog:\n%s", err, pf.Log())
	}
	if !leaf.Equal(cert1) {
		t.Fatalf("served leaf %q serial %v, want the ChainFiles certificate (serial %v)", leaf.Subject, leaf.SerialNumber, cert1.SerialNumber)
	}

	// The instance's own configuration passes postfix's integrity check.
	if out, err := exec.CommandContext(ctx, pf.ReloadArgv()[0], "-c", pf.ConfigDir, "check").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("postfix check: %v %s", err, out)
	}

	key2, cert2PEM, cert2 := selfSigned(t, "mail.example.test")
	installChain(t, dir, key2, cert2PEM)
	argv := pf.ReloadArgv()
	if len(argv) != 4 || argv[1] != "-c" || argv[2] != pf.ConfigDir || argv[3] != "reload" {
		t.Fatalf("ReloadArgv() = %q", argv)
	}
	reloaded := time.Now()
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%q: %v %s", argv, err, out)
	}
	err = poll(ctx, 20*time.Millisecond, func() error {
		leaf, err := starttlsLeaf(ctx, pf.Addr, pf.Hostname)
		if err != nil {
			return err
		}
		if !leaf.Equal(cert2) {
			return fmt.Errorf("still serving serial %v", leaf.SerialNumber)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after reload: %v\nmaillog:\n%s", err, pf.Log())
	}
	t.Logf("new certificate served %v after reload", time.Since(reloaded).Round(time.Millisecond))
}

func TestInstancesAreIndependentAndStopCleanly(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 60*time.Second)
	var pfs [2]*Postfix
	var certs [2]*x509.Certificate
	for i := range pfs {
		dir := t.TempDir()
		key, certPEM, cert := selfSigned(t, fmt.Sprintf("mx%d.example.test", i))
		certs[i] = cert
		pfs[i] = StartPostfix(t, PostfixOptions{Hostname: cert.DNSNames[0], ChainFiles: installChain(t, dir, key, certPEM)})
	}
	b1 := StartBIND(t, BINDOptions{Signed: true})
	b2 := StartBIND(t, BINDOptions{Signed: true})
	u := StartUnbound(t, UnboundOptions{StubZone: b1.Zone, StubAddr: b1.Addr, TrustAnchor: b1.DS()})
	if b1.DS() == b2.DS() || b1.TSIGSecret == b2.TSIGSecret {
		t.Error("two BIND instances share a key")
	}

	for i, pf := range pfs {
		leaf, err := starttlsLeaf(ctx, pf.Addr, pf.Hostname)
		if err != nil || !leaf.Equal(certs[i]) {
			t.Fatalf("instance %d: want its own certificate, got %v", i, err)
		}
	}

	pfs[0].Stop()
	waitGroupGone(t, ctx, "postfix", pfs[0].proc.cmd.Process.Pid)
	if _, err := starttlsLeaf(ctx, pfs[0].Addr, pfs[0].Hostname); err == nil {
		t.Error("stopped postfix still answers")
	}
	if leaf, err := starttlsLeaf(ctx, pfs[1].Addr, pfs[1].Hostname); err != nil || !leaf.Equal(certs[1]) {
		t.Errorf("other postfix after the first stopped: %v", err)
	}

	b1.Stop()
	waitGroupGone(t, ctx, "named", b1.proc.cmd.Process.Pid)
	if _, err := b2.Serial(ctx); err != nil {
		t.Errorf("second named after the first stopped: %v", err)
	}
	u.Stop()
	waitGroupGone(t, ctx, "unbound", u.proc.cmd.Process.Pid)
	u.Stop() // a second Stop (as in t.Cleanup) is harmless
}

// crashEnv makes TestDaemonsDieWithTestBinary's child start daemons and exit
// without running cleanups.
const crashEnv = "DANEROLL_RIG_CRASH_CHILD"

func TestDaemonsDieWithTestBinary(t *testing.T) {
	if os.Getenv(crashEnv) == "1" {
		crashChild(t)
		return
	}
	t.Parallel()
	integration(t)
	needRoot(t, "postfix")
	lookBinary(t, "named", "bind9")
	lookBinary(t, "unbound", "unbound")
	lookBinary(t, "postfix", "postfix")

	ctx := ctxFor(t, 60*time.Second)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDaemonsDieWithTestBinary$", "-test.v")
	// The child's temporary directories land in ours, so they are removed
	// even though the child never cleans up.
	cmd.Env = append(os.Environ(), crashEnv+"=1", "TMPDIR="+tempDir(t))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child: want exit status 3, got %v:\n%s", err, out)
	}
	var pgids []int
	for _, line := range strings.Split(string(out), "\n") {
		if _, rest, ok := strings.Cut(line, "PGID "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				t.Fatalf("child output %q: %v", line, err)
			}
			pgids = append(pgids, n)
		}
	}
	if len(pgids) != 3 {
		t.Fatalf("child reported %d process groups, want 3:\n%s", len(pgids), out)
	}
	for _, pgid := range pgids {
		waitGroupGone(t, ctx, fmt.Sprintf("daemon group %d after the test binary died", pgid), pgid)
	}
}

// crashChild starts one of each daemon, reports their process groups and
// dies without running t.Cleanup.
func crashChild(t *testing.T) {
	b := StartBIND(t, BINDOptions{Signed: true})
	u := StartUnbound(t, UnboundOptions{StubZone: b.Zone, StubAddr: b.Addr, TrustAnchor: b.DS()})
	key, certPEM, _ := selfSigned(t, "mail.example.test")
	pf := StartPostfix(t, PostfixOptions{ChainFiles: installChain(t, t.TempDir(), key, certPEM)})
	for _, p := range []*process{b.proc, u.proc, pf.proc} {
		fmt.Printf("PGID %d\n", p.cmd.Process.Pid)
	}
	os.Exit(3)
}

func TestPostTLSFingerVerifiesDANE(t *testing.T) {
	t.Parallel()
	b := StartBIND(t, BINDOptions{Signed: true, Records: []string{"mail IN A 127.0.0.1"}})
	ip := FreeResolverIP(t)
	u := StartUnbound(t, UnboundOptions{StubZone: b.Zone, StubAddr: b.Addr, TrustAnchor: b.DS(), ExtraListen: []string{ip + "@53"}})
	key, certPEM, cert := selfSigned(t, "mail.example.test")
	pf := StartPostfix(t, PostfixOptions{ChainFiles: installChain(t, t.TempDir(), key, certPEM)})
	ctx := ctxFor(t, 60*time.Second)
	target := fmt.Sprintf("[%s]:%d", pf.Hostname, pf.Port)
	owner := fmt.Sprintf("_%d._tcp.%s.", pf.Port, pf.Hostname)

	finger := func() string {
		t.Helper()
		began := time.Now()
		out, err := PostTLSFinger(t, ip, target)
		t.Logf("posttls-finger took %v (err %v)", time.Since(began).Round(time.Millisecond), err)
		if !strings.Contains(out, "TLS connection established") {
			t.Fatalf("posttls-finger made no TLS connection (%v):\n%s", err, out)
		}
		return out
	}
	publish := func(rr *dns.TLSA) {
		t.Helper()
		if r, err := tsigUpdate(ctx, b.Addr, b.Zone, b.TSIGName, b.TSIGAlgorithm, b.TSIGSecret, rr); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("update: %v, %v", r, err)
		}
		err := poll(ctx, 20*time.Millisecond, func() error {
			r, err := u.Query(ctx, owner, dns.TypeTLSA)
			if err != nil {
				return err
			}
			if !r.AuthenticatedData || !servedTLSA(r, rr) {
				return errors.New("TLSA not visible with AD yet")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("published TLSA: %v", err)
		}
	}

	if out := finger(); DANEVerified(out) {
		t.Fatalf("verified without any TLSA record:\n%s", out)
	}

	// posttls-finger uses TLSA records only when they validate (AD), so this
	// message also proves the lookup went through the validating resolver.
	publish(randomTLSA(t, owner))
	if out := finger(); DANEVerified(out) || !strings.Contains(out, "no matching DANE TLSA records") {
		t.Fatalf("with only a non-matching TLSA record: want \"no matching DANE TLSA records\", not verified:\n%s", out)
	}

	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	publish(tlsa311(owner, spki[:]))
	out := finger()
	if !DANEVerified(out) || !strings.Contains(strings.ToLower(out), hex.EncodeToString(spki[:])) {
		t.Fatalf("not DANE-verified with a matching 3 1 1 record:\n%s", out)
	}
}
