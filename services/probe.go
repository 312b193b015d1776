package services

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/daneroll/daneroll/internal/oneline"
)

const (
	// DefaultProbeTimeout bounds a probe, dial to handshake, when
	// ProbeOptions.Timeout is zero.
	DefaultProbeTimeout = 30 * time.Second
	// DefaultEHLOName is the name a probe gives in SMTP EHLO when
	// ProbeOptions.EHLOName is empty. A probe is not a mail server and has
	// no name of its own to claim; a name under the reserved .invalid
	// (RFC 6761) is syntactically a domain, which servers require, and
	// can never be mistaken for a real host in their logs.
	DefaultEHLOName = "daneroll.invalid"
)

// Limits against hostile or broken servers, before TLS.
const (
	// maxLine is the longest protocol line accepted; RFC 5321 allows 512
	// octets for a reply line, IMAP capability lines run to a few hundred.
	maxLine = 4096
	// maxLines bounds a multi-line reply and the untagged lines before a
	// tagged IMAP answer.
	maxLines = 100
	// maxPlaintext bounds everything read before the TLS handshake.
	maxPlaintext = 64 << 10
	// byeWait is how long a probe waits for the answer to its QUIT or
	// LOGOUT: politeness must not make a probe slow.
	byeWait = time.Second
)

// ProbeOptions configure Probe and ProbeUntil. The zero value is ready to
// use.
type ProbeOptions struct {
	// DialContext opens the TCP connection; default a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds one whole probe, from dial to handshake;
	// DefaultProbeTimeout when zero.
	Timeout time.Duration
	// EHLOName is the name sent in SMTP EHLO; DefaultEHLOName when empty.
	EHLOName string
}

// ProbeResult is what a server presented.
type ProbeResult struct {
	Endpoint Endpoint
	// Addr is the address the probe connected to ("192.0.2.25:25").
	Addr string
	// Chain is the certificate chain the server sent, leaf first,
	// unverified.
	Chain []*x509.Certificate
	// Version and CipherSuite are the negotiated TLS parameters
	// (tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256…).
	Version     uint16
	CipherSuite uint16
}

// LeafSPKI returns the hex SHA-256 digest of the leaf's
// SubjectPublicKeyInfo, the data of a "3 1 1" TLSA record for it.
func (r *ProbeResult) LeafSPKI() string {
	if r == nil || len(r.Chain) == 0 {
		return ""
	}
	sum := sha256.Sum256(r.Chain[0].RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// describe says what a probe saw, for error messages.
func (r *ProbeResult) describe() string {
	leaf := r.Chain[0]
	name := leaf.Subject.CommonName
	if name == "" && len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	return fmt.Sprintf("%s served a leaf for %q with SPKI SHA-256 %s, not after %s",
		r.Addr, oneline.Clean(name, 100), r.LeafSPKI(), leaf.NotAfter.UTC().Format(time.RFC3339))
}

// ProbeError is the error of Probe and ProbeUntil. Its message is one line:
// the endpoint, then what went wrong, with the server's reply where it
// explains it ("smtp://mail.example.org:25: STARTTLS refused: 454 4.7.0 TLS
// not available").
type ProbeError struct {
	Endpoint Endpoint
	// Reason says what went wrong, without the endpoint.
	Reason string
	// Err is the underlying error, if any: a network error,
	// context.DeadlineExceeded or context.Canceled, or for ProbeUntil the
	// last probe's error.
	Err error
}

func (e *ProbeError) Error() string { return e.Endpoint.String() + ": " + e.Reason }

func (e *ProbeError) Unwrap() error { return e.Err }

// stepError is a failure inside a probe, before the endpoint is added.
type stepError struct {
	reason string
	err    error
}

func (e *stepError) Error() string { return e.reason }

func (e *stepError) Unwrap() error { return e.err }

func failf(format string, args ...any) error {
	return &stepError{reason: fmt.Sprintf(format, args...)}
}

// Probe connects to e, does the protocol's STARTTLS dialogue where the
// scheme says so, and completes a TLS handshake with SNI = e.Host (unless it
// is an IP address) and without PKIX verification: the caller verifies the
// chain against TLSA records. It returns the chain the server sent, leaf
// first. Errors are *ProbeError.
func Probe(ctx context.Context, e Endpoint, opts ProbeOptions) (*ProbeResult, error) {
	_, proto, ok := lookupScheme(e.Scheme)
	if !ok {
		return nil, &ProbeError{Endpoint: e, Reason: fmt.Sprintf("unknown scheme %q (want one of %s)", e.Scheme, schemeList)}
	}
	if e.Host == "" || e.Port == "" {
		return nil, &ProbeError{Endpoint: e, Reason: "endpoint has no host or port"}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	addr := e.DialAddr()
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &ProbeError{Endpoint: e, Reason: dialReason(ctx, addr, err), Err: errors.Join(err, ctx.Err())}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A deadline in the past unblocks any read or write at once when ctx is
	// canceled; the error then says "canceled" (see ioFailure).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	s := &session{ctx: ctx, conn: conn}
	s.r = bufio.NewReaderSize(&budgetReader{r: conn, left: maxPlaintext}, maxLine)
	ehlo := opts.EHLOName
	if ehlo == "" {
		ehlo = DefaultEHLOName
	}
	switch proto {
	case smtpSTARTTLS:
		err = s.smtp(ehlo)
	case imapSTARTTLS:
		err = s.imap()
	case pop3STLS:
		err = s.pop3()
	}
	if err == nil && s.r.Buffered() > 0 {
		// Whatever the server sent after its go-ahead and before the
		// handshake is either garbage or an injection attempt
		// (CVE-2011-0411 is the server-side twin).
		err = failf("server sent data after its STARTTLS go-ahead, before the TLS handshake")
	}
	if err != nil {
		return nil, s.probeError(e, err)
	}

	cfg := &tls.Config{
		// DANE, not the Web PKI, decides whether the chain is right: the
		// caller matches it against TLSA records. Probes must also see
		// self-signed ("3 1 1" only) and expired certificates to report
		// on them.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
	}
	if net.ParseIP(e.Host) == nil {
		cfg.ServerName = e.Host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, s.probeError(e, s.ioFailure(err, "during the TLS handshake"))
	}
	cs := tc.ConnectionState()
	if len(cs.PeerCertificates) == 0 {
		return nil, &ProbeError{Endpoint: e, Reason: "server sent no certificate"}
	}
	res := &ProbeResult{Endpoint: e, Addr: addr, Chain: cs.PeerCertificates, Version: cs.Version, CipherSuite: cs.CipherSuite}
	if ra := conn.RemoteAddr(); ra != nil {
		res.Addr = ra.String()
	}
	s.goodbye(tc, proto)
	_ = tc.Close()
	return res, nil
}

// dialReason says why a connection could not be made, in one line.
func dialReason(ctx context.Context, addr string, err error) string {
	var (
		dnsErr     *net.DNSError
		resolveErr *resolveError
		dialErr    *dialError
	)
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return "canceled while connecting to " + addr
	case errors.As(err, &resolveErr):
		// ResolverDialer's: its message names the resolver, which the
		// net.DNSError case below could not.
		return resolveErr.Error()
	case errors.As(err, &dialErr):
		// ResolverDialer's: it names every address that failed.
		return dialErr.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connect " + addr + ": connection refused"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s: %s", dnsErr.Name, dnsErr.Err)
	case isTimeout(err) || ctx.Err() != nil:
		return "timeout connecting to " + addr
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		err = opErr.Err
	}
	return fmt.Sprintf("connect %s: %v", addr, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errTooMuch is budgetReader's error.
var errTooMuch = errors.New("too much data")

// budgetReader fails once more than left bytes have been read: a server
// that talks forever before TLS ends the probe instead of using it up.
type budgetReader struct {
	r    io.Reader
	left int
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errTooMuch
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	return n, err
}

// session is the plaintext part of a probe.
type session struct {
	ctx  context.Context
	conn net.Conn
	r    *bufio.Reader // reads conn, within maxLine and maxPlaintext
}

func (s *session) probeError(e Endpoint, err error) *ProbeError {
	var se *stepError
	if errors.As(err, &se) {
		return &ProbeError{Endpoint: e, Reason: se.reason, Err: se.err}
	}
	return &ProbeError{Endpoint: e, Reason: err.Error(), Err: err}
}

// ioFailure turns a read, write or handshake error into a step error whose
// reason says what the probe was doing: "timeout waiting for the greeting".
func (s *session) ioFailure(err error, doing string) error {
	if ctxErr := s.ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.Canceled) {
			return &stepError{"canceled " + doing, ctxErr}
		}
		return &stepError{"timeout " + doing, errors.Join(ctxErr, err)}
	}
	switch {
	case isTimeout(err):
		return &stepError{"timeout " + doing, errors.Join(context.DeadlineExceeded, err)}
	case errors.Is(err, errTooMuch):
		return &stepError{fmt.Sprintf("server sent more than %d KiB before TLS, %s", maxPlaintext>>10, doing), err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		// EPIPE: a write after the server closed, such as a ClientHello
		// after a go-ahead and a close.
		return &stepError{"connection closed by the server " + doing, err}
	case errors.Is(err, syscall.ECONNRESET):
		return &stepError{"connection reset by the server " + doing, err}
	}
	// "TLS handshake: remote error: …", "waiting for the greeting: read: …"
	return &stepError{strings.TrimPrefix(doing, "during the ") + ": " + err.Error(), err}
}

// readLine reads one line without its CR LF.
func (s *session) readLine(waitingFor string) (string, error) {
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", failf("line longer than %d bytes from the server, waiting for %s", maxLine, waitingFor)
	}
	if err != nil {
		return "", s.ioFailure(err, "waiting for "+waitingFor)
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func (s *session) send(line, what string) error {
	if _, err := io.WriteString(s.conn, line+"\r\n"); err != nil {
		return s.ioFailure(err, "sending "+what)
	}
	return nil
}

// maxQuote bounds the bytes quote writes between its quotes.
const maxQuote = 120

// quote shows a line from the server in an error message: quoted, control
// characters and invalid UTF-8 escaped, cut short after whole runes so that
// neither a rune nor an escape is split, and never longer than maxQuote
// bytes (plus the ellipsis) however many escapes the line needs.
func quote(line string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(line); {
		// One rune, or one byte of invalid UTF-8, which strconv escapes.
		_, size := utf8.DecodeRuneInString(line[i:])
		q := strconv.Quote(line[i : i+size])
		q = q[1 : len(q)-1]
		if b.Len()-1+len(q) > maxQuote {
			b.WriteString("…")
			break
		}
		b.WriteString(q)
		i += size
	}
	b.WriteByte('"')
	return b.String()
}

// goodbye ends the protocol session politely over TLS, so that servers log
// a clean QUIT/LOGOUT rather than a lost connection. Errors are ignored:
// the probe already has what it came for.
func (s *session) goodbye(tc *tls.Conn, proto protocol) {
	if s.ctx.Err() != nil {
		return
	}
	var cmd string
	var done func(string) bool
	switch proto {
	case smtpSTARTTLS:
		cmd, done = "QUIT", isFinalSMTPLine
	case imapSTARTTLS:
		cmd, done = "a2 LOGOUT", func(l string) bool { return strings.HasPrefix(l, "a2 ") }
	case pop3STLS:
		cmd, done = "QUIT", func(string) bool { return true }
	default:
		return
	}
	bye(s.ctx, tc, bufio.NewReaderSize(tc, 512), cmd, done)
}

// bye sends cmd and reads lines until done says the answer is complete,
// for at most byeWait.
func bye(ctx context.Context, c net.Conn, r *bufio.Reader, cmd string, done func(string) bool) {
	dl := time.Now().Add(byeWait)
	if cdl, ok := ctx.Deadline(); ok && cdl.Before(dl) {
		dl = cdl
	}
	_ = c.SetDeadline(dl)
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return
	}
	for range maxLines {
		line, err := r.ReadSlice('\n')
		if err != nil || done(strings.TrimRight(string(line), "\r\n")) {
			return
		}
	}
}

func isFinalSMTPLine(l string) bool { return len(l) < 4 || l[3] != '-' }

// smtpReply is a complete SMTP reply: its code and the text of its lines.
type smtpReply struct {
	code  int
	lines []string
}

// String shows the reply on one line, as the server put it: "454 4.7.0 TLS
// not available".
func (r smtpReply) String() string {
	return oneline.Clean(fmt.Sprintf("%d %s", r.code, strings.Join(r.lines, " / ")), 300)
}

func (s *session) readSMTPReply(waitingFor string) (smtpReply, error) {
	var rep smtpReply
	for range maxLines {
		line, err := s.readLine(waitingFor)
		if err != nil {
			return rep, err
		}
		if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return rep, failf("malformed SMTP reply %s, waiting for %s", quote(line), waitingFor)
		}
		code := 0
		for _, c := range line[:3] {
			if c < '0' || c > '9' {
				return rep, failf("malformed SMTP reply %s, waiting for %s", quote(line), waitingFor)
			}
			code = code*10 + int(c-'0')
		}
		if code < 200 || code > 599 || (rep.code != 0 && code != rep.code) {
			return rep, failf("malformed SMTP reply %s, waiting for %s", quote(line), waitingFor)
		}
		rep.code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		rep.lines = append(rep.lines, text)
		if isFinalSMTPLine(line) {
			return rep, nil
		}
	}
	return rep, failf("SMTP reply longer than %d lines, waiting for %s", maxLines, waitingFor)
}

// smtp: greeting, EHLO, STARTTLS (RFC 3207).
func (s *session) smtp(ehloName string) error {
	greet, err := s.readSMTPReply("the greeting")
	if err != nil {
		return err
	}
	if greet.code != 220 {
		return failf("greeting refused: %s", greet)
	}
	if err := s.send("EHLO "+ehloName, "EHLO"); err != nil {
		return err
	}
	ehlo, err := s.readSMTPReply("the reply to EHLO")
	if err != nil {
		return err
	}
	if ehlo.code != 250 {
		return failf("EHLO refused: %s", ehlo)
	}
	offered := false
	for _, ext := range ehlo.lines[1:] {
		if f := strings.Fields(ext); len(f) > 0 && strings.EqualFold(f[0], "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		bye(s.ctx, s.conn, s.r, "QUIT", isFinalSMTPLine)
		return failf("server does not offer STARTTLS")
	}
	if err := s.send("STARTTLS", "STARTTLS"); err != nil {
		return err
	}
	rep, err := s.readSMTPReply("the reply to STARTTLS")
	if err != nil {
		return err
	}
	if rep.code != 220 {
		return failf("STARTTLS refused: %s", rep)
	}
	return nil
}

// imapResponse reads lines up to the tagged response for tag (RFC 9051
// §7.1), returning its status (OK, NO, BAD) and text, and the untagged lines
// before it.
func (s *session) imapResponse(tag, waitingFor string) (status, text string, untagged []string, err error) {
	for range maxLines {
		line, err := s.readLine(waitingFor)
		if err != nil {
			return "", "", untagged, err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			status, text, _ = strings.Cut(rest, " ")
			return strings.ToUpper(status), text, untagged, nil
		}
		if strings.HasPrefix(line, "* ") {
			untagged = append(untagged, line)
		}
	}
	return "", "", untagged, failf("more than %d lines from the server, waiting for %s", maxLines, waitingFor)
}

// imap: greeting, capabilities, STARTTLS (RFC 9051 §6.2.1, RFC 2595).
func (s *session) imap() error {
	greet, err := s.readLine("the greeting")
	if err != nil {
		return err
	}
	kind, rest, _ := strings.Cut(strings.TrimPrefix(greet, "* "), " ")
	switch {
	case !strings.HasPrefix(greet, "* "):
		return failf("malformed IMAP greeting %s", quote(greet))
	case strings.EqualFold(kind, "BYE"):
		return failf("greeting refused: %s", oneline.Clean(greet, 300))
	case strings.EqualFold(kind, "PREAUTH"):
		return failf("server greeted with PREAUTH, after which STARTTLS is not possible")
	case !strings.EqualFold(kind, "OK"):
		return failf("malformed IMAP greeting %s", quote(greet))
	}
	var caps []string
	if code, ok := strings.CutPrefix(strings.ToUpper(rest), "[CAPABILITY "); ok {
		code, _, _ = strings.Cut(code, "]")
		caps = strings.Fields(code)
	} else {
		if err := s.send("a0 CAPABILITY", "CAPABILITY"); err != nil {
			return err
		}
		status, text, untagged, err := s.imapResponse("a0", "the reply to CAPABILITY")
		if err != nil {
			return err
		}
		if status != "OK" {
			return failf("CAPABILITY refused: %s", imapRefusal(status, text))
		}
		for _, l := range untagged {
			if c, ok := strings.CutPrefix(strings.ToUpper(l), "* CAPABILITY "); ok {
				caps = append(caps, strings.Fields(c)...)
			}
		}
	}
	if !contains(caps, "STARTTLS") {
		bye(s.ctx, s.conn, s.r, "a2 LOGOUT", func(l string) bool { return strings.HasPrefix(l, "a2 ") })
		return failf("server does not offer STARTTLS")
	}
	if err := s.send("a1 STARTTLS", "STARTTLS"); err != nil {
		return err
	}
	status, text, _, err := s.imapResponse("a1", "the reply to STARTTLS")
	if err != nil {
		return err
	}
	if status != "OK" {
		return failf("STARTTLS refused: %s", imapRefusal(status, text))
	}
	return nil
}

// imapRefusal shows a tagged answer other than OK: its status and text,
// both from the server, so both cleaned.
func imapRefusal(status, text string) string {
	return oneline.Clean(strings.TrimSpace(status+" "+text), 200)
}

func contains(list []string, word string) bool {
	for _, w := range list {
		if strings.EqualFold(w, word) {
			return true
		}
	}
	return false
}

// pop3: greeting, CAPA, STLS (RFC 2595 §4, RFC 2449).
func (s *session) pop3() error {
	greet, err := s.readLine("the greeting")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(greet, "+OK") {
		if strings.HasPrefix(greet, "-ERR") {
			return failf("greeting refused: %s", oneline.Clean(greet, 300))
		}
		return failf("malformed POP3 greeting %s", quote(greet))
	}
	// CAPA tells a missing STLS apart from a refused one; servers without
	// CAPA (-ERR) still get their chance at STLS.
	if err := s.send("CAPA", "CAPA"); err != nil {
		return err
	}
	line, err := s.readLine("the reply to CAPA")
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+OK") {
		var caps []string
		for i := 0; ; i++ {
			if i == maxLines {
				return failf("CAPA reply longer than %d lines", maxLines)
			}
			l, err := s.readLine("the rest of the CAPA reply")
			if err != nil {
				return err
			}
			if l == "." {
				break
			}
			if f := strings.Fields(l); len(f) > 0 {
				caps = append(caps, f[0])
			}
		}
		if !contains(caps, "STLS") {
			bye(s.ctx, s.conn, s.r, "QUIT", func(string) bool { return true })
			return failf("server does not offer STARTTLS (no STLS capability)")
		}
	}
	if err := s.send("STLS", "STLS"); err != nil {
		return err
	}
	line, err = s.readLine("the reply to STLS")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return failf("STLS refused: %s", oneline.Clean(line, 300))
	}
	return nil
}
