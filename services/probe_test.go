package services

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestProbeEveryScheme(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	implicit := func(c *fconn) {
		if c.startTLS() {
			c.hang()
		}
	}
	tests := []struct {
		scheme   string
		dialogue func(*fconn)
		bye      string // what the client must say inside TLS to end politely
	}{
		// A multi-line greeting, as busy servers send.
		{"smtp", smtpServer("220-mail.example.test ESMTP\r\n220-no UCE\r\n220 ready\r\n"), "QUIT"},
		{"submission", smtpServer("220 mail.example.test ESMTP\r\n"), "QUIT"},
		{"imap", func(c *fconn) {
			// Capabilities in the greeting: no CAPABILITY command needed.
			c.send("* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED] ready\r\n")
			if !c.expect("a1 STARTTLS") {
				return
			}
			c.send("a1 OK begin TLS\r\n")
			if c.startTLS() && c.expect("a2 LOGOUT") {
				c.send("* BYE logging out\r\na2 OK done\r\n")
			}
		}, "a2 LOGOUT"},
		{"pop3", func(c *fconn) {
			c.send("+OK POP3 ready\r\n")
			if !c.expect("CAPA") {
				return
			}
			c.send("+OK capabilities follow\r\nTOP\r\nSTLS\r\nUIDL\r\n.\r\n")
			if !c.expect("STLS") {
				return
			}
			c.send("+OK begin TLS\r\n")
			if c.startTLS() && c.expect("QUIT") {
				c.send("+OK bye\r\n")
			}
		}, "QUIT"},
		{"smtps", implicit, ""},
		{"imaps", implicit, ""},
		{"pop3s", implicit, ""},
		{"tls", implicit, ""},
		{"https", implicit, ""},
	}
	for _, tt := range tests {
		t.Run(tt.scheme, func(t *testing.T) {
			f := startFake(t, cert, tt.dialogue)
			e := endpointAt(t, tt.scheme, f.addr)
			res, err := Probe(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Chain) != 1 || !res.Chain[0].Equal(cert.Leaf) {
				t.Errorf("chain = %v, want the server's certificate", res.Chain)
			}
			if res.Addr != f.addr || res.Endpoint != e {
				t.Errorf("result for %s at %s, want %s at %s", res.Endpoint, res.Addr, e, f.addr)
			}
			if res.Version < tls.VersionTLS12 || res.CipherSuite == 0 {
				t.Errorf("version %x, cipher suite %x", res.Version, res.CipherSuite)
			}
			if !f.saw("SNI mail.example.test") {
				t.Errorf("server saw %q, want SNI mail.example.test", f.received())
			}
			if tt.bye != "" && !f.saw(tt.bye) {
				t.Errorf("server saw %q, want a polite %s after the handshake", f.received(), tt.bye)
			}
		})
	}
}

func TestProbeSMTPSaysEHLO(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, smtpServer("220 mail.example.test ESMTP\r\n"))
	e := endpointAt(t, "smtp", f.addr)
	if _, err := Probe(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !f.saw("EHLO " + DefaultEHLOName) {
		t.Errorf("server saw %q, want EHLO %s", f.received(), DefaultEHLOName)
	}
	if _, err := Probe(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second, EHLOName: "probe.example.net"}); err != nil {
		t.Fatal(err)
	}
	if !f.saw("EHLO probe.example.net") {
		t.Errorf("server saw %q, want EHLO probe.example.net", f.received())
	}
}

func TestProbeIMAPAsksForCapabilities(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, func(c *fconn) {
		c.send("* OK IMAP ready\r\n")
		if !c.expect("a0 CAPABILITY") {
			return
		}
		c.send("* CAPABILITY IMAP4rev1 STARTTLS\r\na0 OK done\r\n")
		if !c.expect("a1 STARTTLS") {
			return
		}
		// Untagged data before the tagged answer is allowed.
		c.send("* NOTE hello\r\na1 OK begin TLS\r\n")
		if c.startTLS() && c.expect("a2 LOGOUT") {
			c.send("a2 OK bye\r\n")
		}
	})
	res, err := Probe(context.Background(), endpointAt(t, "imap", f.addr), ProbeOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Chain[0].Equal(cert.Leaf) {
		t.Error("wrong chain")
	}
}

func TestProbePOP3WithoutCAPA(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, func(c *fconn) {
		c.send("+OK old POP3 server\r\n")
		if !c.expect("CAPA") {
			return
		}
		c.send("-ERR unknown command\r\n")
		if !c.expect("STLS") {
			return
		}
		c.send("+OK go\r\n")
		if c.startTLS() && c.expect("QUIT") {
			c.send("+OK bye\r\n")
		}
	})
	if _, err := Probe(context.Background(), endpointAt(t, "pop3", f.addr), ProbeOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
}

func TestProbeNoSNIForAnIPAddress(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, func(c *fconn) { c.startTLS(); c.hang() })
	_, port, _ := net.SplitHostPort(f.addr)
	e, err := ParseEndpoint("tls://127.0.0.1:" + port)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Probe(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !f.saw("SNI ") {
		t.Errorf("server saw %q, want a handshake without SNI", f.received())
	}
}

func TestProbeDialsConnectThroughDialContext(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, smtpServer("220 hi\r\n"))
	e, err := ParseEndpoint("smtp://mail.example.test?connect=192.0.2.25")
	if err != nil {
		t.Fatal(err)
	}
	var dialled []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialled = append(dialled, network+" "+addr)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", f.addr)
	}
	if _, err := Probe(context.Background(), e, ProbeOptions{DialContext: dial, Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if len(dialled) != 1 || dialled[0] != "tcp 192.0.2.25:25" {
		t.Errorf("dialled %q, want tcp 192.0.2.25:25", dialled)
	}
	if !f.saw("SNI mail.example.test") {
		t.Errorf("server saw %q: SNI must still be the host name", f.received())
	}
}

func TestProbeFailuresAreClear(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	tests := []struct {
		name, scheme string
		want         string // in the message, after "ENDPOINT: "
		told         string // a line the server must have received, if any
		dialogue     func(*fconn)
	}{
		{"smtp without STARTTLS", "smtp", "server does not offer STARTTLS", "QUIT", func(c *fconn) {
			c.send("220 hi\r\n")
			c.expect("EHLO")
			c.send("250-mail.example.test\r\n250-STARTTLSX\r\n250 8BITMIME\r\n")
			if c.expect("QUIT") {
				c.send("221 bye\r\n")
			}
		}},
		{"smtp STARTTLS refused", "smtp", "STARTTLS refused: 454 4.7.0 TLS not available", "", func(c *fconn) {
			c.send("220 hi\r\n")
			c.expect("EHLO")
			c.send("250-mail\r\n250 STARTTLS\r\n")
			c.expect("STARTTLS")
			c.send("454 4.7.0 TLS not available\r\n")
		}},
		{"smtp busy", "smtp", "greeting refused: 421 4.3.2 too busy / try later", "", func(c *fconn) {
			c.send("421-4.3.2 too busy\r\n421 try later\r\n")
		}},
		{"smtp EHLO refused", "smtp", "EHLO refused: 502 5.5.2 what", "", func(c *fconn) {
			c.send("220 hi\r\n")
			c.expect("EHLO")
			c.send("502 5.5.2 what\r\n")
		}},
		{"smtp garbage", "smtp", `malformed SMTP reply "SSH-2.0-OpenSSH_9.6", waiting for the greeting`, "", func(c *fconn) {
			c.send("SSH-2.0-OpenSSH_9.6\r\n")
		}},
		{"smtp codes differ", "smtp", "malformed SMTP reply", "", func(c *fconn) {
			c.send("220-hi\r\n250 there\r\n")
		}},
		{"smtp closes", "smtp", "connection closed by the server waiting for the greeting", "", func(c *fconn) {}},
		{"smtp long line", "smtp", "line longer than 4096 bytes", "", func(c *fconn) {
			c.send("220 " + strings.Repeat("x", 10000) + "\r\n")
		}},
		{"smtp endless reply", "smtp", "SMTP reply longer than 100 lines", "", func(c *fconn) {
			c.send(strings.Repeat("220-hi\r\n", 150))
		}},
		{"smtp too much", "smtp", "server sent more than 64 KiB before TLS", "", func(c *fconn) {
			c.send(strings.Repeat("220-"+strings.Repeat("x", 4000)+"\r\n", 30))
		}},
		{"smtp injection", "smtp", "server sent data after its STARTTLS go-ahead", "", func(c *fconn) {
			c.send("220 hi\r\n")
			c.expect("EHLO")
			c.send("250-mail\r\n250 STARTTLS\r\n")
			c.expect("STARTTLS")
			c.send("220 go ahead\r\n250 injected\r\n")
			c.hang()
		}},
		{"smtp control characters", "smtp", "greeting refused: 554 ?[31mred", "", func(c *fconn) {
			c.send("554 \x1b[31mred\r\n")
		}},
		{"imap without STARTTLS", "imap", "server does not offer STARTTLS", "a2 LOGOUT", func(c *fconn) {
			c.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
			if c.expect("a2 LOGOUT") {
				c.send("* BYE\r\na2 OK\r\n")
			}
		}},
		{"imap STARTTLS refused", "imap", "STARTTLS refused: NO [UNAVAILABLE] no TLS today", "", func(c *fconn) {
			c.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
			c.expect("a1 STARTTLS")
			c.send("a1 NO [UNAVAILABLE] no TLS today\r\n")
		}},
		{"imap STARTTLS refused with escapes", "imap", "STARTTLS refused: ?[2JNO? no ?[31mTLS", "", func(c *fconn) {
			c.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
			c.expect("a1 STARTTLS")
			c.send("a1 \x1b[2JNO\a no \x1b[31mTLS\r\n")
		}},
		{"imap preauth", "imap", "PREAUTH", "", func(c *fconn) {
			c.send("* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome\r\n")
		}},
		{"imap bye", "imap", "greeting refused: * BYE overloaded", "", func(c *fconn) {
			c.send("* BYE overloaded\r\n")
		}},
		{"imap CAPABILITY refused", "imap", "CAPABILITY refused: BAD", "", func(c *fconn) {
			c.send("* OK hi\r\n")
			c.expect("a0 CAPABILITY")
			c.send("a0 BAD what\r\n")
		}},
		{"imap endless untagged", "imap", "more than 100 lines", "", func(c *fconn) {
			c.send("* OK [CAPABILITY STARTTLS] hi\r\n")
			c.expect("a1 STARTTLS")
			c.send(strings.Repeat("* NOTE chatter\r\n", 150))
		}},
		{"pop3 without STLS", "pop3", "server does not offer STARTTLS (no STLS capability)", "QUIT", func(c *fconn) {
			c.send("+OK hi\r\n")
			c.expect("CAPA")
			c.send("+OK\r\nUSER\r\nUIDL\r\n.\r\n")
			if c.expect("QUIT") {
				c.send("+OK bye\r\n")
			}
		}},
		{"pop3 STLS refused", "pop3", "STLS refused: -ERR not now", "", func(c *fconn) {
			c.send("+OK hi\r\n")
			c.expect("CAPA")
			c.send("-ERR no CAPA\r\n")
			c.expect("STLS")
			c.send("-ERR not now\r\n")
		}},
		{"pop3 refused", "pop3", "greeting refused: -ERR go away", "", func(c *fconn) {
			c.send("-ERR go away\r\n")
		}},
		{"tls not TLS", "tls", "TLS handshake", "", func(c *fconn) {
			c.send("HTTP/1.0 400 Bad Request\r\n\r\n")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, cert, tt.dialogue)
			e := endpointAt(t, tt.scheme, f.addr)
			_, err := Probe(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second})
			checkProbeError(t, err, e, tt.want)
			if tt.told != "" && !f.saw(tt.told) {
				t.Errorf("server saw %q, want %q", f.received(), tt.told)
			}
		})
	}
}

// checkProbeError checks that err is a one-line *ProbeError that names the
// endpoint and contains want.
func checkProbeError(t *testing.T, err error, e Endpoint, want string) *ProbeError {
	t.Helper()
	var pe *ProbeError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v (%T), want a *ProbeError containing %q", err, err, want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, e.String()+": ") || !strings.Contains(msg, want) {
		t.Errorf("err = %q, want %q", msg, e.String()+": …"+want+"…")
	}
	if strings.ContainsAny(msg, "\r\n\x1b") {
		t.Errorf("err %q is not one clean line", msg)
	}
	t.Logf("%v", err)
	return pe
}

func TestProbeTimeouts(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	tests := []struct {
		name, want string
		dialogue   func(*fconn)
	}{
		{"silent server", "timeout waiting for the greeting", func(c *fconn) { c.hang() }},
		{"half a greeting", "timeout waiting for the greeting", func(c *fconn) {
			c.send("220-still ")
			c.hang()
		}},
		{"EHLO unanswered", "timeout waiting for the reply to EHLO", func(c *fconn) {
			c.send("220 hi\r\n")
			c.hang()
		}},
		{"no handshake", "timeout during the TLS handshake", func(c *fconn) {
			c.send("220 hi\r\n")
			c.expect("EHLO")
			c.send("250-mail\r\n250 STARTTLS\r\n")
			c.expect("STARTTLS")
			c.send("220 go\r\n")
			c.hang()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t, cert, tt.dialogue)
			e := endpointAt(t, "smtp", f.addr)
			start := time.Now()
			_, err := Probe(context.Background(), e, ProbeOptions{Timeout: 500 * time.Millisecond})
			checkProbeError(t, err, e, tt.want)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want errors.Is context.DeadlineExceeded", err)
			}
			// Generous for a loaded machine, far below "hangs".
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("a 500ms probe took %v", d)
			}
		})
	}
}

func TestProbeCanceled(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	f := startFake(t, cert, func(c *fconn) { c.hang() })
	e := endpointAt(t, "smtp", f.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once connected, while the probe waits for the greeting.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		cancel()
		return c, err
	}
	_, err := Probe(ctx, e, ProbeOptions{DialContext: dial, Timeout: time.Minute})
	checkProbeError(t, err, e, "canceled waiting for the greeting")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want errors.Is context.Canceled", err)
	}
	// And while connecting.
	_, err = Probe(ctx, e, ProbeOptions{Timeout: time.Minute})
	checkProbeError(t, err, e, "canceled while connecting to "+f.addr)
}

func TestProbeConnectionRefused(t *testing.T) {
	e := endpointAt(t, "smtp", closedAddr(t))
	_, err := Probe(context.Background(), e, ProbeOptions{Timeout: 20 * time.Second})
	checkProbeError(t, err, e, "connect "+e.DialAddr()+": connection refused")
}

func TestProbeUnknownScheme(t *testing.T) {
	_, err := Probe(context.Background(), Endpoint{Scheme: "gopher", Host: "h.example", Port: "70"}, ProbeOptions{})
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "gopher"`) {
		t.Errorf("err = %v", err)
	}
}

func TestProbeResultLeafSPKI(t *testing.T) {
	cert := newCert(t, "mail.example.test")
	r := &ProbeResult{Chain: []*x509.Certificate{cert.Leaf}}
	// The "3 1 1" data is the digest of the DER SubjectPublicKeyInfo;
	// re-encode the public key to get there independently of the raw
	// bytes LeafSPKI hashes.
	der, err := x509.MarshalPKIXPublicKey(cert.PrivateKey.(crypto.Signer).Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if got, want := r.LeafSPKI(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("LeafSPKI = %s, want %s", got, want)
	}
	if (&ProbeResult{}).LeafSPKI() != "" {
		t.Error("LeafSPKI of an empty chain is not empty")
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"SSH-2.0-OpenSSH_9.6":       `"SSH-2.0-OpenSSH_9.6"`,
		"\x1b[31mred\x00\xff":       `"\x1b[31mred\x00\xff"`,
		"h\u00e9 \u202e":            `"hé \u202e"`,
		strings.Repeat("x", 200):    `"` + strings.Repeat("x", maxQuote) + `…"`,
		strings.Repeat("\x01", 200): `"` + strings.Repeat(`\x01`, maxQuote/4) + `…"`,
		// A rune is not split: 119 bytes, then a two-byte rune that would
		// end at 121.
		strings.Repeat("x", 119) + "é": `"` + strings.Repeat("x", 119) + `…"`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) =\n %s\nwant\n %s", in, got, want)
		}
	}
}
