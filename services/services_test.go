package services

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}
}

// fakeServer runs dialogue on each connection; dialogue gets the raw
// connection and a function that switches it to TLS.
func fakeServer(t *testing.T, cert *atomic.Pointer[tls.Certificate], dialogue func(c net.Conn, r *bufio.Reader, startTLS func() net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.Load(), nil }}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				dialogue(c, bufio.NewReader(c), func() net.Conn {
					tc := tls.Server(c, cfg)
					if err := tc.Handshake(); err != nil {
						return nil
					}
					return tc
				})
			}()
		}
	}()
	return l.Addr().String()
}

func endpoint(t *testing.T, scheme, addr string) Endpoint {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	e, err := ParseEndpoint(fmt.Sprintf("%s://mail.example.test:%s?connect=%s", scheme, port, host))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func readUntil(r *bufio.Reader, prefix string) string {
	for {
		l, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(strings.ToUpper(l), prefix) {
			return l
		}
	}
}

func TestProbeEveryScheme(t *testing.T) {
	var cert atomic.Pointer[tls.Certificate]
	c := selfSigned(t, "mail.example.test")
	cert.Store(&c)
	smtp := func(c net.Conn, r *bufio.Reader, start func() net.Conn) {
		// A multi-line greeting, as busy servers send.
		fmt.Fprint(c, "220-mail.example.test ESMTP\r\n220-no UCE\r\n220 ready\r\n")
		readUntil(r, "EHLO")
		fmt.Fprint(c, "250-mail.example.test\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
		readUntil(r, "STARTTLS")
		fmt.Fprint(c, "220 go ahead\r\n")
		if tc := start(); tc != nil {
			bufio.NewReader(tc).ReadString('\n')
		}
	}
	imap := func(c net.Conn, r *bufio.Reader, start func() net.Conn) {
		fmt.Fprint(c, "* OK ready\r\n")
		readUntil(r, "A0 CAPABILITY")
		fmt.Fprint(c, "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na0 OK done\r\n")
		readUntil(r, "A1 STARTTLS")
		fmt.Fprint(c, "a1 OK begin TLS\r\n")
		start()
	}
	pop3 := func(c net.Conn, r *bufio.Reader, start func() net.Conn) {
		fmt.Fprint(c, "+OK POP3 ready\r\n")
		readUntil(r, "STLS")
		fmt.Fprint(c, "+OK begin TLS\r\n")
		start()
	}
	implicit := func(c net.Conn, r *bufio.Reader, start func() net.Conn) { start() }
	for scheme, dlg := range map[string]func(net.Conn, *bufio.Reader, func() net.Conn){
		"smtp": smtp, "submission": smtp, "imap": imap, "pop3": pop3,
		"smtps": implicit, "imaps": implicit, "pop3s": implicit, "tls": implicit, "https": implicit,
	} {
		t.Run(scheme, func(t *testing.T) {
			addr := fakeServer(t, &cert, dlg)
			res, err := Probe(context.Background(), endpoint(t, scheme, addr), ProbeOptions{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Chain) != 1 || !res.Chain[0].Equal(c.Leaf) {
				t.Errorf("chain = %v", res.Chain)
			}
			if res.Addr != addr {
				t.Errorf("dialled %s, want %s (connect=)", res.Addr, addr)
			}
		})
	}
}

func TestProbeFailuresAreClear(t *testing.T) {
	var cert atomic.Pointer[tls.Certificate]
	c := selfSigned(t, "mail.example.test")
	cert.Store(&c)
	tests := []struct {
		name, scheme, want string
		dlg                func(net.Conn, *bufio.Reader, func() net.Conn)
	}{
		{"no starttls", "smtp", "server does not offer STARTTLS", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "220 hi\r\n")
			readUntil(r, "EHLO")
			fmt.Fprint(c, "250-mail\r\n250 8BITMIME\r\n")
		}},
		{"starttls refused", "smtp", "STARTTLS refused: 454 4.7.0 TLS not available", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "220 hi\r\n")
			readUntil(r, "EHLO")
			fmt.Fprint(c, "250-mail\r\n250 STARTTLS\r\n")
			readUntil(r, "STARTTLS")
			fmt.Fprint(c, "454 4.7.0 TLS not available\r\n")
		}},
		{"busy", "smtp", "greeting: 421", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "421 too busy\r\n")
		}},
		{"hangs", "smtp", "timeout", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			time.Sleep(3 * time.Second)
		}},
		{"imap without starttls", "imap", "server does not offer STARTTLS", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
		}},
		{"pop3 stls refused", "pop3", "STLS refused", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "+OK hi\r\n")
			readUntil(r, "STLS")
			fmt.Fprint(c, "-ERR no\r\n")
		}},
		{"injection", "smtp", "before the TLS handshake", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "220 hi\r\n")
			readUntil(r, "EHLO")
			fmt.Fprint(c, "250 STARTTLS\r\n")
			readUntil(r, "STARTTLS")
			fmt.Fprint(c, "220 go\r\n250 injected\r\n")
			time.Sleep(time.Second)
		}},
		{"long line", "smtp", "too long", func(c net.Conn, r *bufio.Reader, _ func() net.Conn) {
			fmt.Fprint(c, "220 "+strings.Repeat("x", 10000)+"\r\n")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeServer(t, &cert, tt.dlg)
			e := endpoint(t, tt.scheme, addr)
			_, err := Probe(context.Background(), e, ProbeOptions{Timeout: time.Second})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), e.String()+": ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q does not start with the endpoint or is not one line", err)
			}
		})
	}
	// Nobody listening.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err := Probe(context.Background(), endpoint(t, "smtp", addr), ProbeOptions{Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("refused: %v", err)
	}
}

func TestProbeUntilSeesTheChange(t *testing.T) {
	var cert atomic.Pointer[tls.Certificate]
	old, fresh := selfSigned(t, "mail.example.test"), selfSigned(t, "mail.example.test")
	cert.Store(&old)
	addr := fakeServer(t, &cert, func(c net.Conn, r *bufio.Reader, start func() net.Conn) { start() })
	e := endpoint(t, "tls", addr)
	go func() {
		time.Sleep(300 * time.Millisecond)
		cert.Store(&fresh)
	}()
	probes := 0
	res, err := ProbeUntil(context.Background(), e, ProbeOptions{Timeout: time.Second}, 10*time.Second, func(r *ProbeResult) bool {
		probes++
		return r.Chain[0].Equal(fresh.Leaf)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Chain[0].Equal(fresh.Leaf) || probes < 2 {
		t.Errorf("probes = %d, result %v", probes, res.Chain[0].Subject)
	}
	_, err = ProbeUntil(context.Background(), e, ProbeOptions{Timeout: time.Second}, 500*time.Millisecond, func(*ProbeResult) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "not accepted") {
		t.Errorf("never accepted: %v", err)
	}
}

func TestParseEndpoint(t *testing.T) {
	good := map[string]Endpoint{
		"smtp://mail.example.org":                  Endpoint{"smtp", "mail.example.org", "25", ""},
		"submission://mail.example.org":            Endpoint{"submission", "mail.example.org", "587", ""},
		"imaps://mail.example.org":                 Endpoint{"imaps", "mail.example.org", "993", ""},
		"pop3://mail.example.org":                  Endpoint{"pop3", "mail.example.org", "110", ""},
		"https://www.example.org":                  Endpoint{"https", "www.example.org", "443", ""},
		"tls://h.example:8443?connect=[::1]":       Endpoint{"tls", "h.example", "8443", "::1"},
		"smtp://mx.example:2525?connect=127.0.0.1": Endpoint{"smtp", "mx.example", "2525", "127.0.0.1"},
	}
	for in, want := range good {
		got, err := ParseEndpoint(in)
		if err != nil || got != want {
			t.Errorf("ParseEndpoint(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"ftp://x.example", "smtp://", "smtp://x.example:0", "smtp://x.example?connect=host.example"} {
		if _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q) succeeded", bad)
		}
	}
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	if err := Reload(ctx, []string{"true"}, time.Second, nil); err != nil {
		t.Errorf("true: %v", err)
	}
	err := Reload(ctx, []string{"sh", "-c", "echo oops; echo more >&2; exit 3"}, time.Second, nil)
	var re *ReloadError
	if !errors.As(err, &re) || re.ExitCode != 3 || !strings.Contains(re.Output, "oops") || !strings.Contains(re.Output, "more") {
		t.Fatalf("err = %#v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("message %q is not one line", err)
	}
	start := time.Now()
	err = Reload(ctx, []string{"sh", "-c", "sleep 30 & sleep 30"}, 200*time.Millisecond, nil)
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "killed after 200ms") {
		t.Errorf("timeout: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("a timed-out command held Reload for %v", time.Since(start))
	}
	if err := Reload(ctx, []string{"/nonexistent/reload"}, time.Second, nil); err == nil || !strings.Contains(err.Error(), "/nonexistent/reload") {
		t.Errorf("missing binary: %v", err)
	}
	// An argument with spaces is one argument: never split, never a shell.
	out := filepath.Join(t.TempDir(), "file with spaces")
	if err := Reload(ctx, []string{"touch", out}, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("argument was split: %v", err)
	}
}
