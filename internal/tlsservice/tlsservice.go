// Package tlsservice is a small reloadable TLS service for tests and the
// demo. It serves the certificate of a daneroll live set (STATE/live/NAME),
// over implicit TLS or SMTP with STARTTLS, re-reads the set only when told
// to, like a real server's reload, and records every change of the leaf it
// serves, so a test can tell exactly when a new key went live.
package tlsservice

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The files of a live set that the service reads.
const (
	keyFile   = "privkey.pem"
	chainFile = "fullchain.pem"
)

const (
	// idleTimeout closes a connection on which the client says nothing:
	// a test service must not pile up stuck connections.
	idleTimeout = 30 * time.Second
	// maxLine is the longest command line accepted (RFC 5321 §4.5.3.1.4
	// allows 512 octets).
	maxLine = 1024
)

// Options configure a Server.
type Options struct {
	// Addr is the address to listen on; default "127.0.0.1:0".
	Addr string
	// LiveDir is the live set directory, such as STATE/live/NAME, usually a
	// symlink that daneroll switches atomically. Required.
	LiveDir string
	// Protocol is "tls" (implicit TLS, the default) or "smtp" (ESMTP with
	// STARTTLS).
	Protocol string
	// Hostname is the name in the SMTP greeting and EHLO reply; default
	// "localhost".
	Hostname string
	// Logger receives reloads and connection errors; default none.
	Logger *slog.Logger
	// Now stamps the timeline; default time.Now.
	Now func() time.Time
}

// Change is a moment the served leaf certificate changed.
type Change struct {
	// At is when the new leaf was loaded (Options.Now).
	At time.Time
	// SPKI is the hex SHA-256 digest of the leaf's SubjectPublicKeyInfo,
	// the data of its "3 1 1" TLSA record.
	SPKI string
	// NotAfter is the leaf's expiry.
	NotAfter time.Time
}

// Server is a running service.
type Server struct {
	opts Options
	ln   net.Listener
	tls  *tls.Config
	done chan struct{} // closed by Close
	// wg counts the accept loop, connection handlers and signal loops,
	// which Close waits for.
	wg sync.WaitGroup

	mu       sync.Mutex // guards cert, timeline, conns and closed
	cert     *tls.Certificate
	timeline []Change
	conns    map[net.Conn]struct{}
	closed   bool
}

// Start loads the live set and starts serving. A live set that does not
// exist yet is not an error: handshakes fail until a Reload finds one (a
// test may start the service before daneroll's first issuance). A set that
// exists but cannot be loaded is.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Protocol == "" {
		opts.Protocol = "tls"
	}
	if opts.Protocol != "tls" && opts.Protocol != "smtp" {
		return nil, fmt.Errorf("tlsservice: unknown protocol %q (want tls or smtp)", opts.Protocol)
	}
	if opts.LiveDir == "" {
		return nil, errors.New("tlsservice: no live directory")
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	if err := s.Reload(); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		opts.Logger.Info("tlsservice: no live set yet; handshakes fail until a reload", "dir", opts.LiveDir)
	}
	s.tls = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.getCertificate,
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("tlsservice: %w", err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the address the service listens on, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Reload re-reads the live set. Both files are read through one handle on
// the directory the live path points to at that moment, so a concurrent
// switch of the symlink cannot pair a key from one set with a certificate
// from another. On error the service keeps serving what it served.
func (s *Server) Reload() error {
	cert, err := loadSet(s.opts.LiveDir)
	if err != nil {
		return fmt.Errorf("tlsservice: reload %s: %w", s.opts.LiveDir, err)
	}
	s.mu.Lock()
	// The chain may change without the leaf (a new intermediate); serve it
	// either way, but only a new leaf is a change in the timeline.
	changed := s.cert == nil || !bytes.Equal(s.cert.Certificate[0], cert.Certificate[0])
	s.cert = cert
	var c Change
	if changed {
		c = Change{At: s.opts.Now(), SPKI: spkiHex(cert), NotAfter: cert.Leaf.NotAfter}
		s.timeline = append(s.timeline, c)
	}
	s.mu.Unlock()
	if changed {
		s.opts.Logger.Info("tlsservice: serving a new certificate", "spki_sha256", c.SPKI, "not_after", c.NotAfter)
	}
	return nil
}

func loadSet(dir string) (*tls.Certificate, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	key, err := root.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	chain, err := root.ReadFile(chainFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", keyFile, chainFile, err)
	}
	return &cert, nil
}

func spkiHex(c *tls.Certificate) string {
	sum := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// Served returns the hex SHA-256 digest of the SPKI of the leaf being served
// now, or "" when nothing is.
func (s *Server) Served() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert == nil {
		return ""
	}
	return spkiHex(s.cert)
}

// Timeline returns every change of the served leaf, oldest first.
func (s *Server) Timeline() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Change(nil), s.timeline...)
}

// ReloadOnSignal reloads whenever one of sigs (default SIGHUP) arrives,
// until ctx ends or the server closes, as a daemon does: daneroll's reload
// commands are argv arrays such as ["kill", "-HUP", PID]. It returns at once;
// the signals are caught from the moment it returns. Failed reloads are
// logged and keep the old certificate.
func (s *Server) ReloadOnSignal(ctx context.Context, sigs ...os.Signal) {
	if len(sigs) == 0 {
		// signal.Notify with no signals would catch them all, SIGINT included.
		sigs = []os.Signal{syscall.SIGHUP}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	// One slot: signals that arrive during a reload fold into one more.
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case sig := <-ch:
				if err := s.Reload(); err != nil {
					s.opts.Logger.Warn("tlsservice: reload failed, serving the old certificate", "signal", sig.String(), "err", err)
				}
			}
		}
	}()
}

// Close stops listening, closes every open connection and waits for the
// service's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert == nil {
		return nil, errors.New("tlsservice: no certificate loaded")
	}
	return s.cert, nil
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			var err error
			if s.opts.Protocol == "smtp" {
				err = s.smtp(c)
			} else {
				err = s.implicitTLS(c)
			}
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.opts.Logger.Debug("tlsservice: connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// implicitTLS handshakes, then answers an HTTP request line, if one comes,
// so that curl and browsers get an answer; anything else just ends.
func (s *Server) implicitTLS(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(idleTimeout))
	tc := tls.Server(c, s.tls)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	defer tc.Close()
	line, err := bufio.NewReaderSize(tc, maxLine).ReadSlice('\n')
	if err != nil {
		return err
	}
	if f := strings.Fields(string(line)); len(f) == 3 && strings.HasPrefix(f[2], "HTTP/") {
		body := fmt.Sprintf("tlsservice %s: leaf SPKI SHA-256 %s\n", s.opts.Hostname, s.Served())
		_, err = fmt.Fprintf(tc, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	}
	return err
}

// smtp is a minimal ESMTP server: enough for a STARTTLS probe and for
// posttls-finger (EHLO, STARTTLS, EHLO again, QUIT). It accepts no mail.
func (s *Server) smtp(c net.Conn) error {
	var (
		rw     io.ReadWriter = c
		r                    = bufio.NewReaderSize(c, maxLine)
		secure bool
	)
	reply := func(lines ...string) error {
		var b strings.Builder
		for i, l := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			b.WriteString(l[:3] + sep + l[4:] + "\r\n")
		}
		_, err := io.WriteString(rw, b.String())
		return err
	}
	_ = c.SetDeadline(time.Now().Add(idleTimeout))
	if err := reply("220 " + s.opts.Hostname + " ESMTP tlsservice"); err != nil {
		return err
	}
	for {
		_ = c.SetDeadline(time.Now().Add(idleTimeout))
		raw, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			_ = reply("500 5.5.2 Error: line too long")
			return err
		}
		if err != nil {
			return err
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(string(raw), "\r\n"), " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			if arg == "" {
				err = reply("501 5.5.4 Syntax: EHLO hostname")
				break
			}
			lines := []string{"250 " + s.opts.Hostname}
			if !secure {
				lines = append(lines, "250 STARTTLS")
			}
			err = reply(append(lines, "250 ENHANCEDSTATUSCODES", "250 8BITMIME")...)
		case "HELO":
			err = reply("250 " + s.opts.Hostname)
		case "STARTTLS":
			switch {
			case secure:
				err = reply("503 5.5.1 Error: TLS already active")
			case arg != "":
				err = reply("501 5.5.4 Syntax: STARTTLS")
			default:
				if err := reply("220 2.0.0 Ready to start TLS"); err != nil {
					return err
				}
				tc := tls.Server(c, s.tls)
				if err := tc.Handshake(); err != nil {
					return fmt.Errorf("STARTTLS handshake: %w", err)
				}
				defer tc.Close()
				// A fresh reader drops whatever the client pipelined in
				// plaintext after STARTTLS (RFC 3207 §4.2, CVE-2011-0411).
				rw, r, secure = tc, bufio.NewReaderSize(tc, maxLine), true
			}
		case "NOOP", "RSET":
			err = reply("250 2.0.0 Ok")
		case "QUIT":
			_ = reply("221 2.0.0 Bye")
			return nil
		case "MAIL", "RCPT", "DATA", "BDAT":
			err = reply("554 5.7.1 Error: this test service accepts no mail")
		default:
			err = reply("502 5.5.2 Error: command not recognized")
		}
		if err != nil {
			return err
		}
	}
}
