// Package tlsservice is a small reloadable TLS service for tests and the
// demo: it serves the certificate of a daneroll live set, over implicit TLS
// or SMTP with STARTTLS, re-reads it only when told to (like a real server's
// reload), and records every change of the key it serves.
package tlsservice

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Addr to listen on, e.g. "127.0.0.1:0".
	Addr string
	// LiveDir is STATE/live/NAME: privkey.pem and fullchain.pem are read
	// through one directory handle, so a reload never pairs files of two
	// sets.
	LiveDir string
	// Protocol is "tls" (implicit) or "smtp" (STARTTLS).
	Protocol string
	// Hostname is announced in the SMTP greeting.
	Hostname string
	Logger   *slog.Logger
	Now      func() time.Time
}

// Change is a moment the served key changed.
type Change struct {
	At   time.Time
	SPKI string // hex SHA-256 of the leaf's SubjectPublicKeyInfo; "" when nothing is served
}

// Server is a running service.
type Server struct {
	opts Options
	l    net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex // guards cert, timeline and conns
	cert     *tls.Certificate
	timeline []Change
	conns    map[net.Conn]bool
}

// Start listens and loads the live set if there is one; without one it
// fails handshakes until a Reload finds one.
func Start(opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Protocol != "tls" && opts.Protocol != "smtp" {
		return nil, fmt.Errorf("tlsservice: unknown protocol %q", opts.Protocol)
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, l: l, conns: map[net.Conn]bool{}}
	if err := s.Reload(); err != nil && !errors.Is(err, os.ErrNotExist) {
		opts.Logger.Warn("no certificate yet", "err", err)
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is where the service listens.
func (s *Server) Addr() string { return s.l.Addr().String() }

// Reload re-reads the live set. On error the old certificate stays.
func (s *Server) Reload() error {
	root, err := os.OpenRoot(s.opts.LiveDir)
	if err != nil {
		return err
	}
	defer root.Close()
	key, err := root.ReadFile("privkey.pem")
	if err != nil {
		return err
	}
	chain, err := root.ReadFile("fullchain.pem")
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return fmt.Errorf("tlsservice: %w", err)
	}
	sum := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	spki := hex.EncodeToString(sum[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert = &cert
	if n := len(s.timeline); n == 0 || s.timeline[n-1].SPKI != spki {
		s.timeline = append(s.timeline, Change{At: s.opts.Now(), SPKI: spki})
	}
	return nil
}

// Served is the SPKI digest being served now ("" for none).
func (s *Server) Served() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.timeline); n > 0 {
		return s.timeline[n-1].SPKI
	}
	return ""
}

// Timeline returns every change of the served key.
func (s *Server) Timeline() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Change(nil), s.timeline...)
}

// ReloadOnSignal reloads whenever one of sigs arrives, until ctx ends —
// for reload commands such as ["kill", "-HUP", PID].
func (s *Server) ReloadOnSignal(ctx context.Context, sigs ...os.Signal) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := s.Reload(); err != nil {
					s.opts.Logger.Warn("reload failed", "err", err)
				}
			}
		}
	}()
}

// Close stops the service and waits for its connections.
func (s *Server) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			s.handle(c)
		}()
	}
}

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.cert == nil {
				return nil, errors.New("no certificate yet")
			}
			return s.cert, nil
		},
	}
}

func (s *Server) handle(c net.Conn) {
	if s.opts.Protocol == "tls" {
		tc := tls.Server(c, s.tlsConfig())
		if err := tc.Handshake(); err == nil {
			// Implicit TLS: answer one line so clients see a service.
			fmt.Fprintf(tc, "hello from %s\r\n", s.opts.Hostname)
		}
		tc.Close()
		return
	}
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "220 %s ESMTP tlsservice\r\n", s.opts.Hostname)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(verb, "EHLO"), strings.HasPrefix(verb, "HELO"):
			fmt.Fprintf(c, "250-%s\r\n250-PIPELINING\r\n250 STARTTLS\r\n", s.opts.Hostname)
		case verb == "STARTTLS":
			fmt.Fprint(c, "220 2.0.0 Ready to start TLS\r\n")
			tc := tls.Server(c, s.tlsConfig())
			if err := tc.Handshake(); err != nil {
				return
			}
			tr := bufio.NewReader(tc)
			for {
				l, err := tr.ReadString('\n')
				if err != nil {
					return
				}
				v := strings.ToUpper(strings.TrimSpace(l))
				switch {
				case v == "QUIT":
					fmt.Fprint(tc, "221 2.0.0 Bye\r\n")
					tc.Close()
					return
				case strings.HasPrefix(v, "EHLO"):
					fmt.Fprintf(tc, "250 %s\r\n", s.opts.Hostname)
				default:
					fmt.Fprint(tc, "502 5.5.2 not implemented\r\n")
				}
			}
		case verb == "QUIT":
			fmt.Fprint(c, "221 2.0.0 Bye\r\n")
			return
		default:
			fmt.Fprint(c, "502 5.5.2 not implemented\r\n")
		}
	}
}
