package services

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// chunkSep splits a fuzz script into the server's replies: the first
	// is the greeting, each next one comes when the client waits for more
	// (see scriptConn). The ASCII record separator, so that NUL and the
	// other control characters remain for the server to send.
	chunkSep = 0x1e
	// maxFuzzWrite bounds what the server writes in all, enough to go
	// past maxPlaintext.
	maxFuzzWrite = 2 * maxPlaintext
	// maxProbeErrRunes bounds a probe's error message: the endpoint, a
	// reason and what the server said, cut.
	maxProbeErrRunes = 512
	fuzzTimeout      = 200 * time.Millisecond
	fuzzWatchdog     = 30 * time.Second
)

// hangChunk, as the script's last chunk, keeps the connection open once
// the script has run out, instead of closing it: the probe then waits until
// its timeout. Rare in mutated input, so that slow runs stay rare.
const hangChunk = "HANG"

// FuzzProbeDialogue plays a fuzzed server against Probe's STARTTLS
// dialogues (smtp, imap, pop3). The script's chunks (split at chunkSep) are
// the server's replies, each sent when the client waits for more; repeat
// sends the last one that many more times (to reach the plaintext budget).
// Probe must return (a watchdog far above its timeout says when it has
// not), never read more than maxPlaintext before TLS, and fail with one
// clean line of bounded length.
func FuzzProbeDialogue(f *testing.F) {
	f.Add([]byte("220 mail.example.org ESMTP\r\n\x1e250-mail.example.org\r\n250 STARTTLS\r\n\x1e220 go ahead\r\n"), uint16(0))
	f.Add([]byte("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n\x1ea1 OK begin TLS\r\n"), uint16(0))
	f.Add([]byte("+OK ready\r\n\x1e+OK\r\nSTLS\r\n.\r\n\x1e+OK go\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, script []byte, repeat uint16) {
		chunks := bytes.Split(script, []byte{chunkSep})
		hang := len(chunks) > 1 && string(chunks[len(chunks)-1]) == hangChunk
		if hang {
			chunks = chunks[:len(chunks)-1]
		}
		if last := chunks[len(chunks)-1]; repeat > 0 && len(last) > 0 {
			chunks[len(chunks)-1] = bytes.Repeat(last, 1+min(int(repeat), maxFuzzWrite/len(last)))
		}
		var wg sync.WaitGroup
		for _, scheme := range []string{"smtp", "imap", "pop3"} {
			wg.Go(func() { probeDialogue(t, scheme, chunks, hang) })
		}
		wg.Wait()
	})
}

// probeDialogue probes a server that plays chunks and checks how Probe
// fails.
func probeDialogue(t *testing.T, scheme string, chunks [][]byte, hang bool) {
	conn := newScriptConn(chunks, hang)
	e := Endpoint{Scheme: scheme, Host: "mail.example.test", Port: "25"}
	dial := func(context.Context, string, string) (net.Conn, error) { return conn, nil }

	var err error
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		_, err = Probe(context.Background(), e, ProbeOptions{DialContext: dial, Timeout: fuzzTimeout})
	}()
	// Far above the timeout: a machine loaded with fuzz workers and other
	// tests has been seen to take seconds over a 200ms probe. Only a probe
	// that ignores its timeout takes this long.
	select {
	case <-returned:
	case <-time.After(fuzzWatchdog):
		t.Errorf("%s: a %v probe has not returned after %v", scheme, fuzzTimeout, fuzzWatchdog)
		return
	}
	if n := conn.plaintextRead(); n > maxPlaintext {
		t.Errorf("%s: read %d bytes before TLS, more than %d", scheme, n, maxPlaintext)
	}
	if err == nil {
		return // a fuzzed server completed a TLS handshake: fine, if unlikely
	}
	t.Logf("%s: %v", scheme, err)
	var pe *ProbeError
	if !errors.As(err, &pe) {
		t.Errorf("%s: err = %v (%T), want a *ProbeError", scheme, err, err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, e.String()+": ") {
		t.Errorf("%s: message %q does not start with the endpoint", scheme, msg)
	}
	if !utf8.ValidString(msg) {
		t.Errorf("%s: message %q is not valid UTF-8", scheme, msg)
	}
	if i := strings.IndexFunc(msg, func(r rune) bool {
		return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
	}); i >= 0 {
		t.Errorf("%s: message %q has a control or format character at %d", scheme, msg, i)
	}
	if n := utf8.RuneCountInString(msg); n > maxProbeErrRunes {
		t.Errorf("%s: message is %d runes long, more than %d: %q", scheme, n, maxProbeErrRunes, msg)
	}
}

// scriptConn is the client's end of a connection to a scripted server.
// Each chunk of the script arrives when the client reads with nothing left
// of the one before, as if the server answered whatever the client said or
// sent a reply in several segments; the client's writes are taken and
// dropped. Once the script has run out, reads see the server close (EOF)
// or, with hang, block until the read deadline or Close. No goroutine and
// no timing decide what the client reads: a fuzz input always plays the
// same way.
type scriptConn struct {
	mu        sync.Mutex // guards the fields below
	chunks    [][]byte   // what the server has yet to send
	hang      bool
	closed    bool
	deadline  time.Time     // read deadline; zero for none
	wake      chan struct{} // closed when the deadline changes or the conn closes
	tls       bool          // the client started TLS (sent a handshake record)
	plaintext int           // bytes the client read before it started TLS
}

func newScriptConn(chunks [][]byte, hang bool) *scriptConn {
	return &scriptConn{chunks: slices.Clone(chunks), hang: hang, wake: make(chan struct{})}
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, net.ErrClosed
		case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
			return 0, os.ErrDeadlineExceeded
		case len(p) == 0:
			return 0, nil
		}
		for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
			c.chunks = c.chunks[1:]
		}
		if len(c.chunks) > 0 {
			n := copy(p, c.chunks[0])
			c.chunks[0] = c.chunks[0][n:]
			if !c.tls {
				c.plaintext += n
			}
			return n, nil
		}
		if !c.hang {
			return 0, io.EOF
		}
		c.waitLocked()
	}
}

// waitLocked waits, with c.mu unlocked, until the deadline passes, it
// changes or the connection closes.
func (c *scriptConn) waitLocked() {
	wake := c.wake
	var expired <-chan time.Time
	if !c.deadline.IsZero() {
		timer := time.NewTimer(time.Until(c.deadline))
		defer timer.Stop()
		expired = timer.C
	}
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-wake:
	case <-expired:
	}
}

// Write takes what the client sends. A handshake record (0x16), which no
// plaintext command starts with, means the client started TLS.
func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(p) > 0 && p[0] == 0x16 {
		c.tls = true
	}
	return len(p), nil
}

func (c *scriptConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.wake)
	}
	return nil
}

func (c *scriptConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *scriptConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if !c.closed {
		close(c.wake)
		c.wake = make(chan struct{})
	}
	return nil
}

func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

func (c *scriptConn) LocalAddr() net.Addr  { return scriptAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr { return scriptAddr{} }

func (c *scriptConn) plaintextRead() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plaintext
}

type scriptAddr struct{}

func (scriptAddr) Network() string { return "script" }
func (scriptAddr) String() string  { return "script" }

// TestProbeDialogueHarness checks the fuzz harness against known cases: a
// server that talks past the plaintext budget is cut off exactly there, and
// one that hangs makes the probe time out.
func TestProbeDialogueHarness(t *testing.T) {
	probe := func(conn *scriptConn, timeout time.Duration) error {
		_, err := Probe(context.Background(), Endpoint{Scheme: "smtp", Host: "h.example", Port: "25"},
			ProbeOptions{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }, Timeout: timeout})
		return err
	}
	line := []byte("220-" + strings.Repeat("x", 4000) + "\r\n")
	conn := newScriptConn([][]byte{bytes.Repeat(line, 30)}, false)
	if err := probe(conn, 5*time.Second); err == nil || !strings.Contains(err.Error(), "server sent more than 64 KiB before TLS") {
		t.Errorf("err = %v", err)
	}
	if n := conn.plaintextRead(); n != maxPlaintext {
		t.Errorf("counted %d plaintext bytes, want %d", n, maxPlaintext)
	}

	start := time.Now()
	err := probe(newScriptConn([][]byte{[]byte("220 hi\r\n"), []byte("250-mail\r\n")}, true), 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timeout waiting for the reply to EHLO") || time.Since(start) > 5*time.Second {
		t.Errorf("err = %v after %v, want a timeout waiting for the rest of the EHLO reply", err, time.Since(start))
	}

	err = probe(newScriptConn([][]byte{[]byte("220 hi\r\n")}, false), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "connection closed by the server waiting for the reply to EHLO") {
		t.Errorf("err = %v, want the server closing after its greeting", err)
	}
}
