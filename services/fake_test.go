package services

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newCert makes a self-signed certificate for name.
func newCert(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour).Truncate(time.Second)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}
}

// fake is an in-process server on 127.0.0.1 that runs a scripted dialogue
// on each connection and records what the client said.
type fake struct {
	addr       string
	cert       atomic.Pointer[tls.Certificate]
	handshakes atomic.Int32
	// next, when set, is served from handshake number switchAfter+1 on.
	next        atomic.Pointer[tls.Certificate]
	switchAfter atomic.Int32
	stop        chan struct{} // closed at cleanup: hanging dialogues return

	mu  sync.Mutex // guards got
	got []string   // lines received and SNI seen, in order
}

// fconn is one connection of a fake.
type fconn struct {
	f *fake
	c net.Conn
	r *bufio.Reader
}

func startFake(t *testing.T, cert *tls.Certificate, dialogue func(*fconn)) *fake {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{addr: l.Addr().String(), stop: make(chan struct{})}
	f.cert.Store(cert)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(f.stop)
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				// Whatever happens, a dialogue ends: no test waits on it.
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				go func() {
					<-f.stop
					c.Close()
				}()
				dialogue(&fconn{f: f, c: c, r: bufio.NewReader(c)})
			}()
		}
	}()
	return f
}

func (f *fake) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, s)
}

// received returns what the server received so far.
func (f *fake) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func (f *fake) saw(line string) bool {
	for _, l := range f.received() {
		if l == line {
			return true
		}
	}
	return false
}

func (c *fconn) send(s string) { _, _ = io.WriteString(c.c, s) }

// expect reads a line, records it, and reports whether it starts with
// prefix (case-insensitive).
func (c *fconn) expect(prefix string) bool {
	l, err := c.r.ReadString('\n')
	if err != nil {
		return false
	}
	l = strings.TrimRight(l, "\r\n")
	c.f.record(l)
	return strings.HasPrefix(strings.ToUpper(l), strings.ToUpper(prefix))
}

// startTLS runs the server side of the handshake and switches the
// connection to it.
func (c *fconn) startTLS() bool {
	cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c.f.record("SNI " + h.ServerName)
		n := c.f.handshakes.Add(1)
		if next := c.f.next.Load(); next != nil && n > c.f.switchAfter.Load() {
			return next, nil
		}
		return c.f.cert.Load(), nil
	}}
	tc := tls.Server(c.c, cfg)
	if err := tc.Handshake(); err != nil {
		return false
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	return true
}

// hang blocks until the client goes away or the test ends.
func (c *fconn) hang() {
	_, _ = io.Copy(io.Discard, c.c)
}

// smtpServer is a well-behaved ESMTP server with STARTTLS, the base of the
// smtp tests: greeting, EHLO, STARTTLS, then QUIT inside TLS.
func smtpServer(greeting string) func(*fconn) {
	return func(c *fconn) {
		c.send(greeting)
		if !c.expect("EHLO ") {
			return
		}
		c.send("250-mail.example.test\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
		if !c.expect("STARTTLS") {
			return
		}
		c.send("220 2.0.0 go ahead\r\n")
		if !c.startTLS() {
			return
		}
		if c.expect("QUIT") {
			c.send("221 2.0.0 bye\r\n")
		}
	}
}

// endpointAt is scheme://mail.example.test:PORT?connect=127.0.0.1 for a
// fake listening on addr.
func endpointAt(t *testing.T, scheme, addr string) Endpoint {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseEndpoint(fmt.Sprintf("%s://mail.example.test:%s?connect=%s", scheme, port, host))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func spkiOf(c *tls.Certificate) string {
	return (&ProbeResult{Chain: []*x509.Certificate{c.Leaf}}).LeafSPKI()
}
