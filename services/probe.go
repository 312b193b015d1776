package services

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// defaultPorts maps schemes to ports.
var defaultPorts = map[string]string{
	"smtp": "25", "submission": "587", "smtps": "465",
	"imap": "143", "imaps": "993", "pop3": "110", "pop3s": "995",
	"tls": "443", "https": "443",
}

// Endpoint is a service to probe.
type Endpoint struct {
	Scheme string
	Host   string // the name: SNI and the identity the chain is checked for
	Port   string
	// Connect, when set, is the address dialled instead of resolving Host.
	Connect string
}

func (e Endpoint) String() string {
	return e.Scheme + "://" + net.JoinHostPort(e.Host, e.Port)
}

// ParseEndpoint reads "smtp://mail.example.org:25",
// "imaps://mail.example.org", "tls://host:443?connect=127.0.0.1".
func ParseEndpoint(raw string) (Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, fmt.Errorf("probe %q: %w", raw, err)
	}
	def, ok := defaultPorts[u.Scheme]
	if !ok {
		return Endpoint{}, fmt.Errorf("probe %q: unknown scheme %q", raw, u.Scheme)
	}
	e := Endpoint{Scheme: u.Scheme, Host: u.Hostname(), Port: u.Port(), Connect: u.Query().Get("connect")}
	if e.Host == "" {
		return Endpoint{}, fmt.Errorf("probe %q: no host", raw)
	}
	if e.Port == "" {
		e.Port = def
	}
	if n, err := strconv.Atoi(e.Port); err != nil || n < 1 || n > 65535 {
		return Endpoint{}, fmt.Errorf("probe %q: bad port %q", raw, e.Port)
	}
	e.Connect = strings.Trim(e.Connect, "[]")
	if e.Connect != "" && net.ParseIP(e.Connect) == nil {
		return Endpoint{}, fmt.Errorf("probe %q: connect=%q is not an IP address", raw, e.Connect)
	}
	return e, nil
}

// ProbeOptions configure a probe.
type ProbeOptions struct {
	// DialContext replaces the dialer (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds one probe, dial to handshake; default 15s.
	Timeout time.Duration
	// EHLOName is the name daneroll gives in SMTP EHLO.
	EHLOName string
}

// ProbeResult is what a server served.
type ProbeResult struct {
	Endpoint    Endpoint
	Addr        string // the address connected to
	Chain       []*x509.Certificate
	Version     uint16
	CipherSuite uint16
}

// ProbeError is a probe that failed; it names the endpoint.
type ProbeError struct {
	Endpoint Endpoint
	Err      error
}

func (e *ProbeError) Error() string { return e.Endpoint.String() + ": " + e.Err.Error() }
func (e *ProbeError) Unwrap() error { return e.Err }

// maxLine bounds a protocol line from the server.
const maxLine = 4096

// Probe connects to e, negotiates TLS as its scheme says, and returns the
// chain the server sent.
func Probe(ctx context.Context, e Endpoint, opts ProbeOptions) (*ProbeResult, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	host := e.Host
	if e.Connect != "" {
		host = e.Connect
	}
	addr := net.JoinHostPort(host, e.Port)
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &ProbeError{e, unwrapOp(err)}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Close the connection when ctx ends, so blocked reads return.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	r := bufio.NewReaderSize(conn, maxLine)
	ehlo := opts.EHLOName
	if ehlo == "" {
		ehlo = "daneroll.invalid"
	}
	switch e.Scheme {
	case "smtp", "submission":
		err = smtpStartTLS(conn, r, ehlo)
	case "imap":
		err = imapStartTLS(conn, r)
	case "pop3":
		err = pop3StartTLS(conn, r)
	}
	if err != nil {
		return nil, &ProbeError{e, timeoutWords(ctx, err)}
	}
	if r.Buffered() > 0 {
		return nil, &ProbeError{e, errors.New("server sent data before the TLS handshake (STARTTLS injection?)")}
	}
	cfg := &tls.Config{
		// The chain is checked against TLSA records, not the Web PKI.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
	}
	if net.ParseIP(e.Host) == nil {
		cfg.ServerName = e.Host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &ProbeError{e, fmt.Errorf("TLS handshake: %w", timeoutWords(ctx, err))}
	}
	cs := tc.ConnectionState()
	res := &ProbeResult{Endpoint: e, Addr: addr, Chain: cs.PeerCertificates, Version: cs.Version, CipherSuite: cs.CipherSuite}
	switch e.Scheme {
	case "smtp", "submission", "smtps":
		_, _ = io.WriteString(tc, "QUIT\r\n")
	case "imap", "imaps":
		_, _ = io.WriteString(tc, "a9 LOGOUT\r\n")
	case "pop3", "pop3s":
		_, _ = io.WriteString(tc, "QUIT\r\n")
	}
	_ = tc.Close()
	return res, nil
}

// ProbeUntil probes until accept returns true or wait has passed, with a
// short backoff: reloads are asynchronous, and a server may serve the old
// chain for a moment after its reload command returned.
func ProbeUntil(ctx context.Context, e Endpoint, opts ProbeOptions, wait time.Duration, accept func(*ProbeResult) bool) (*ProbeResult, error) {
	deadline := time.Now().Add(wait)
	delay := 100 * time.Millisecond
	var (
		last    *ProbeResult
		lastErr error
	)
	for {
		res, err := Probe(ctx, e, opts)
		switch {
		case err == nil && accept(res):
			return res, nil
		case err == nil:
			last, lastErr = res, fmt.Errorf("%s: the served chain was not accepted", e)
		default:
			lastErr = err
		}
		if time.Now().Add(delay).After(deadline) {
			return last, fmt.Errorf("after %s: %w", wait, lastErr)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// readLine reads one CRLF-terminated line, refusing over-long ones.
func readLine(r *bufio.Reader) (string, error) {
	line, isPrefix, err := r.ReadLine()
	if err != nil {
		return "", err
	}
	if isPrefix {
		return "", errors.New("line from the server too long")
	}
	return string(line), nil
}

// smtpReply reads a (possibly multi-line) SMTP reply: its code and lines.
func smtpReply(r *bufio.Reader) (int, []string, error) {
	var lines []string
	for len(lines) < 100 {
		l, err := readLine(r)
		if err != nil {
			return 0, lines, err
		}
		if len(l) < 3 {
			return 0, lines, fmt.Errorf("malformed reply %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			return 0, lines, fmt.Errorf("malformed reply %q", l)
		}
		lines = append(lines, l)
		if len(l) == 3 || l[3] == ' ' {
			return code, lines, nil
		}
		if l[3] != '-' {
			return 0, lines, fmt.Errorf("malformed reply %q", l)
		}
	}
	return 0, lines, errors.New("reply too long")
}

func smtpStartTLS(w io.Writer, r *bufio.Reader, ehlo string) error {
	code, lines, err := smtpReply(r)
	if err != nil {
		return fmt.Errorf("waiting for the greeting: %w", err)
	}
	if code != 220 {
		return fmt.Errorf("greeting: %s", strings.Join(lines, " "))
	}
	if _, err := fmt.Fprintf(w, "EHLO %s\r\n", ehlo); err != nil {
		return err
	}
	code, lines, err = smtpReply(r)
	if err != nil {
		return fmt.Errorf("waiting for the EHLO reply: %w", err)
	}
	if code != 250 {
		return fmt.Errorf("EHLO refused: %s", strings.Join(lines, " "))
	}
	offered := false
	for _, l := range lines {
		if len(l) > 4 && strings.EqualFold(strings.TrimSpace(l[4:]), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		return errors.New("server does not offer STARTTLS")
	}
	if _, err := io.WriteString(w, "STARTTLS\r\n"); err != nil {
		return err
	}
	code, lines, err = smtpReply(r)
	if err != nil {
		return fmt.Errorf("waiting for the STARTTLS reply: %w", err)
	}
	if code != 220 {
		return fmt.Errorf("STARTTLS refused: %s", strings.Join(lines, " "))
	}
	return nil
}

func imapStartTLS(w io.Writer, r *bufio.Reader) error {
	greeting, err := readLine(r)
	if err != nil {
		return fmt.Errorf("waiting for the greeting: %w", err)
	}
	if !strings.HasPrefix(greeting, "* OK") {
		return fmt.Errorf("greeting: %q", greeting)
	}
	caps := greeting
	if !strings.Contains(strings.ToUpper(greeting), "[CAPABILITY ") {
		if _, err := io.WriteString(w, "a0 CAPABILITY\r\n"); err != nil {
			return err
		}
		caps = ""
		for {
			l, err := readLine(r)
			if err != nil {
				return fmt.Errorf("waiting for CAPABILITY: %w", err)
			}
			if strings.HasPrefix(l, "a0 ") {
				if !strings.HasPrefix(l, "a0 OK") {
					return fmt.Errorf("CAPABILITY: %q", l)
				}
				break
			}
			caps += " " + l
		}
	}
	if !containsWord(strings.ToUpper(caps), "STARTTLS") {
		return errors.New("server does not offer STARTTLS")
	}
	if _, err := io.WriteString(w, "a1 STARTTLS\r\n"); err != nil {
		return err
	}
	for {
		l, err := readLine(r)
		if err != nil {
			return fmt.Errorf("waiting for the STARTTLS reply: %w", err)
		}
		if strings.HasPrefix(l, "a1 ") {
			if !strings.HasPrefix(l, "a1 OK") {
				return fmt.Errorf("STARTTLS refused: %q", l)
			}
			return nil
		}
	}
}

func containsWord(s, word string) bool {
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '[' || r == ']' }) {
		if f == word {
			return true
		}
	}
	return false
}

func pop3StartTLS(w io.Writer, r *bufio.Reader) error {
	greeting, err := readLine(r)
	if err != nil {
		return fmt.Errorf("waiting for the greeting: %w", err)
	}
	if !strings.HasPrefix(greeting, "+OK") {
		return fmt.Errorf("greeting: %q", greeting)
	}
	if _, err := io.WriteString(w, "STLS\r\n"); err != nil {
		return err
	}
	l, err := readLine(r)
	if err != nil {
		return fmt.Errorf("waiting for the STLS reply: %w", err)
	}
	if !strings.HasPrefix(l, "+OK") {
		return fmt.Errorf("STLS refused: %q", l)
	}
	return nil
}

// timeoutWords turns the errors of a deadline into "timeout".
func timeoutWords(ctx context.Context, err error) error {
	var ne net.Error
	if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("timeout: %w", err)
	}
	return err
}

// unwrapOp shortens "dial tcp 127.0.0.1:25: connect: connection refused"
// to its cause.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return fmt.Errorf("%s: %w", oe.Addr, oe.Err)
	}
	return err
}
