package tlsservice

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testSet is a live set on disk: a key, its leaf and a CA certificate.
type testSet struct {
	dir      string
	spki     string // hex SHA-256 of the leaf SPKI
	notAfter time.Time
	keyPEM   []byte
	chainPEM []byte
}

// state is a daneroll-like state directory: archive/mail/ID sets and a
// live/mail symlink switched by rename.
type state struct {
	t    *testing.T
	root string
	ca   *x509.Certificate
	caK  *ecdsa.PrivateKey
}

func newState(t *testing.T) *state {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlsservice test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &state{t: t, root: t.TempDir(), ca: ca, caK: k}
}

func (st *state) live() string { return filepath.Join(st.root, "live", "mail") }

// set writes archive/mail/id with a fresh key and a leaf that expires in
// validFor.
func (st *state) set(id string, validFor time.Duration) testSet {
	t := st.t
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "mail.example.test"},
		DNSNames:  []string{"mail.example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(validFor).Truncate(time.Second),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, st.ca, k.Public(), st.caK)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s := testSet{
		dir:      filepath.Join(st.root, "archive", "mail", id),
		spki:     digest(leaf.RawSubjectPublicKeyInfo),
		notAfter: leaf.NotAfter,
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		chainPEM: append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: st.ca.Raw})...),
	}
	st.write(id, s.keyPEM, s.chainPEM)
	return s
}

// write stores a set's files as given (nil: file left out).
func (st *state) write(id string, key, chain []byte) {
	t := st.t
	t.Helper()
	dir := filepath.Join(st.root, "archive", "mail", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{keyFile: key, chainFile: chain} {
		if data == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// switchTo points live/mail at archive/mail/id atomically.
func (st *state) switchTo(id string) {
	st.t.Helper()
	if err := switchLink(st.live(), id); err != nil {
		st.t.Fatal(err)
	}
}

// switchLink switches live the way daneroll's store does: a relative
// symlink renamed over the old one.
func switchLink(live, id string) error {
	if err := os.MkdirAll(filepath.Dir(live), 0o700); err != nil {
		return err
	}
	tmp := live + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join("..", "archive", "mail", id), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, live)
}

func digest(spki []byte) string {
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])
}

// clock is a fake Now that ticks one minute per call.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Minute)
	return c.t
}

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// handshake connects over implicit TLS and returns the served chain.
func handshake(t *testing.T, addr string) ([]*x509.Certificate, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.test"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates, nil
}

func servedSPKI(t *testing.T, addr string) string {
	t.Helper()
	chain, err := handshake(t, addr)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return digest(chain[0].RawSubjectPublicKeyInfo)
}

func TestReloadAfterTheLiveSymlinkSwitches(t *testing.T) {
	st := newState(t)
	a := st.set("0001", 90*24*time.Hour)
	b := st.set("0002", 60*24*time.Hour)
	st.switchTo("0001")
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := start(t, Options{LiveDir: st.live(), Protocol: "tls", Now: clk.Now})
	if host, _, _ := net.SplitHostPort(s.Addr()); host != "127.0.0.1" {
		t.Errorf("listens on %s, want loopback by default", s.Addr())
	}

	chain, err := handshake(t, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if got := digest(chain[0].RawSubjectPublicKeyInfo); got != a.spki {
		t.Fatalf("serves %s, want set 0001 %s", got, a.spki)
	}
	if len(chain) != 2 || !chain[1].Equal(st.ca) {
		t.Errorf("served %d certificates, want the full chain: leaf and CA", len(chain))
	}
	if s.Served() != a.spki {
		t.Errorf("Served() = %s, want %s", s.Served(), a.spki)
	}

	// Like a real server, the switch alone changes nothing.
	st.switchTo("0002")
	if got := servedSPKI(t, s.Addr()); got != a.spki {
		t.Fatalf("serves the new set before a reload")
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedSPKI(t, s.Addr()); got != b.spki {
		t.Fatalf("after reload serves %s, want set 0002 %s", got, b.spki)
	}
	if s.Served() != b.spki {
		t.Errorf("Served() = %s, want %s", s.Served(), b.spki)
	}
	// A reload that finds the same leaf is not a change.
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{At: time.Date(2030, 1, 1, 0, 1, 0, 0, time.UTC), SPKI: a.spki, NotAfter: a.notAfter},
		{At: time.Date(2030, 1, 1, 0, 2, 0, 0, time.UTC), SPKI: b.spki, NotAfter: b.notAfter},
	}
	got := s.Timeline()
	if len(got) != len(want) {
		t.Fatalf("timeline = %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].At.Equal(want[i].At) || got[i].SPKI != want[i].SPKI || !got[i].NotAfter.Equal(want[i].NotAfter) {
			t.Errorf("timeline[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	// The caller's copy is its own.
	got[0].SPKI = "x"
	if s.Timeline()[0].SPKI != a.spki {
		t.Error("Timeline returned the server's own slice")
	}
}

func TestRenewalWithTheSameKeyIsAChange(t *testing.T) {
	st := newState(t)
	a := st.set("0001", 30*24*time.Hour)
	// The same key, a later certificate: what a routine renewal does.
	block, _ := pem.Decode(a.keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k := key.(*ecdsa.PrivateKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "mail.example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, st.ca, k.Public(), st.caK)
	if err != nil {
		t.Fatal(err)
	}
	st.write("0002", a.keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live()})
	st.switchTo("0002")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	tl := s.Timeline()
	if len(tl) != 2 || tl[0].SPKI != a.spki || tl[1].SPKI != a.spki || !tl[1].NotAfter.Equal(tmpl.NotAfter) {
		t.Errorf("timeline = %+v, want two entries with the same SPKI, the second expiring %v", tl, tmpl.NotAfter)
	}
}

func TestFailedReloadKeepsTheOldCertificate(t *testing.T) {
	st := newState(t)
	a := st.set("0001", 24*time.Hour)
	b := st.set("0002", 24*time.Hour)
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live(), Protocol: "tls"})

	st.write("nokey", nil, b.chainPEM)
	st.write("mixed", a.keyPEM, b.chainPEM) // a key from one set, a certificate from another
	st.write("garbage", []byte("not a key\n"), []byte("not a certificate\n"))
	for _, id := range []string{"missing", "nokey", "mixed", "garbage"} {
		st.switchTo(id)
		err := s.Reload()
		if err == nil {
			t.Fatalf("reload of set %q succeeded", id)
		}
		if !strings.Contains(err.Error(), st.live()) || strings.Contains(err.Error(), "\n") {
			t.Errorf("set %q: error %q should be one line naming %s", id, err, st.live())
		}
		if got := servedSPKI(t, s.Addr()); got != a.spki {
			t.Errorf("set %q: a failed reload changed the served key to %s", id, got)
		}
		if s.Served() != a.spki {
			t.Errorf("set %q: Served() = %s", id, s.Served())
		}
	}
	if tl := s.Timeline(); len(tl) != 1 || tl[0].SPKI != a.spki {
		t.Errorf("timeline = %+v, want only set 0001", tl)
	}
}

func TestStartBeforeTheFirstSet(t *testing.T) {
	st := newState(t)
	s := start(t, Options{LiveDir: st.live(), Protocol: "tls"})
	if s.Served() != "" || len(s.Timeline()) != 0 {
		t.Errorf("serves %q with nothing on disk", s.Served())
	}
	if _, err := handshake(t, s.Addr()); err == nil {
		t.Error("handshake succeeded without a certificate")
	}
	a := st.set("0001", time.Hour)
	st.switchTo("0001")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedSPKI(t, s.Addr()); got != a.spki {
		t.Errorf("serves %s, want %s", got, a.spki)
	}
}

func TestStartRefuses(t *testing.T) {
	st := newState(t)
	st.write("0001", []byte("junk"), []byte("junk"))
	st.switchTo("0001")
	for name, opts := range map[string]Options{
		"broken set":       {LiveDir: st.live()},
		"unknown protocol": {LiveDir: st.live(), Protocol: "gopher"},
		"no live dir":      {},
	} {
		if s, err := Start(opts); err == nil {
			s.Close()
			t.Errorf("%s: Start succeeded", name)
		}
	}
}

// TestReloadNeverMixesSets reloads while the live symlink flips between
// two sets: reading the key and the chain by path could pair a key from one
// set with a certificate from the other, and the pair would not load.
func TestReloadNeverMixesSets(t *testing.T) {
	st := newState(t)
	a := st.set("0001", time.Hour)
	b := st.set("0002", time.Hour)
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live()})

	var stop atomic.Bool
	type result struct {
		n   int
		err error
	}
	flipped := make(chan result, 1)
	go func() {
		n := 0
		for ; !stop.Load(); n++ {
			if err := switchLink(st.live(), []string{"0001", "0002"}[n%2]); err != nil {
				flipped <- result{n, err}
				return
			}
		}
		flipped <- result{n, nil}
	}()
	for range 300 {
		if err := s.Reload(); err != nil {
			stop.Store(true)
			<-flipped
			t.Fatalf("reload during a switch: %v", err)
		}
		if got := s.Served(); got != a.spki && got != b.spki {
			t.Fatalf("serves %s, from neither set", got)
		}
	}
	stop.Store(true)
	switch r := <-flipped; {
	case r.err != nil:
		t.Fatal(r.err)
	case r.n < 2:
		t.Skipf("the symlink flipped only %d times during the reloads; nothing was tested", r.n)
	}
}

func TestSMTPStartTLS(t *testing.T) {
	st := newState(t)
	a := st.set("0001", time.Hour)
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live(), Protocol: "smtp", Hostname: "mail.example.test"})

	raw, err := net.DialTimeout("tcp", s.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(raw)
	if _, msg, err := tp.ReadResponse(220); err != nil || !strings.HasPrefix(msg, "mail.example.test ") {
		t.Fatalf("greeting %q: %v", msg, err)
	}
	exts := ehlo(t, tp)
	if !exts["STARTTLS"] {
		t.Fatalf("EHLO does not offer STARTTLS: %v", exts)
	}
	// NOOP pipelined after STARTTLS, in plaintext, must be dropped, not
	// answered inside the TLS session (RFC 3207 §4.2).
	if _, err := io.WriteString(raw, "STARTTLS\r\nNOOP\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := digest(tc.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo); got != a.spki {
		t.Errorf("serves %s over STARTTLS, want %s", got, a.spki)
	}
	tp = textproto.NewConn(tc)
	if exts := ehlo(t, tp); exts["STARTTLS"] {
		t.Error("STARTTLS offered again inside TLS")
	}
	for _, c := range []struct {
		cmd  string
		code int
	}{{"STARTTLS", 503}, {"MAIL FROM:<a@example.test>", 554}, {"WHAT", 502}, {"QUIT", 221}} {
		id, err := tp.Cmd("%s", c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		tp.StartResponse(id)
		code, msg, err := tp.ReadResponse(c.code)
		tp.EndResponse(id)
		if err != nil {
			t.Errorf("%s: %d %s: %v (a plaintext NOOP answered here would show as 250)", c.cmd, code, msg, err)
		}
	}
	if _, err := tp.ReadLine(); !errors.Is(err, io.EOF) {
		t.Errorf("after QUIT: %v, want the connection closed", err)
	}
}

// ehlo sends EHLO and returns the extension keywords.
func ehlo(t *testing.T, tp *textproto.Conn) map[string]bool {
	t.Helper()
	if err := tp.PrintfLine("EHLO client.example.test"); err != nil {
		t.Fatal(err)
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	exts := map[string]bool{}
	for _, l := range strings.Split(msg, "\n")[1:] {
		exts[strings.Fields(l)[0]] = true
	}
	return exts
}

func TestReloadOnSignal(t *testing.T) {
	st := newState(t)
	st.set("0001", time.Hour)
	b := st.set("0002", time.Hour)
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.ReloadOnSignal(ctx, syscall.SIGHUP)

	st.switchTo("0002")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Served() != b.spki {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload: still serving %s", s.Served())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := servedSPKI(t, s.Addr()); got != b.spki {
		t.Errorf("handshake serves %s after SIGHUP, want %s", got, b.spki)
	}
}

func TestHTTPOverImplicitTLS(t *testing.T) {
	st := newState(t)
	a := st.set("0001", time.Hour)
	st.switchTo("0001")
	s := start(t, Options{LiveDir: st.live(), Hostname: "www.example.test"})
	c, err := tls.Dial("tcp", s.Addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
	body, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "HTTP/1.0 200 OK\r\n") || !strings.Contains(string(body), a.spki) {
		t.Errorf("HTTP answer %q", body)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	st := newState(t)
	st.set("0001", time.Hour)
	st.switchTo("0001")
	s, err := Start(Options{LiveDir: st.live(), Protocol: "smtp"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting %q: %v", l, err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close waits for an idle client")
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection still open after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second); err == nil {
		c.Close()
		t.Error("still accepting after Close")
	}
}
