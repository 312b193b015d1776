package services

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/rig"
	"github.com/daneroll/daneroll/internal/tlsservice"
)

// liveState is a state directory with certificate sets under archive/ and
// the live symlink that daneroll switches.
type liveState struct {
	t    *testing.T
	root string
}

func (s *liveState) live() string { return filepath.Join(s.root, "live", "mail") }

// addSet writes archive/mail/id with a new key and self-signed certificate
// and returns the SPKI digest of its key.
func (s *liveState) addSet(id string) string {
	t := s.t
	t.Helper()
	cert := newCert(t, "mail.example.test")
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.root, "archive", "mail", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"privkey.pem":   {Type: "PRIVATE KEY", Bytes: kder},
		"fullchain.pem": {Type: "CERTIFICATE", Bytes: cert.Certificate[0]},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return spkiOf(cert)
}

// switchTo makes archive/mail/id live in one rename, as daneroll does.
func (s *liveState) switchTo(id string) {
	t := s.t
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(s.live()), 0o700); err != nil {
		t.Fatal(err)
	}
	tmp := s.live() + ".new"
	if err := os.Symlink(filepath.Join("..", "archive", "mail", id), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.live()); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestReloadBySignalThenProbe is the deploy step in miniature, in process:
// switch the live set, run a reload command that signals the service, and
// probe until the new key is served.
func TestReloadBySignalThenProbe(t *testing.T) {
	st := &liveState{t: t, root: t.TempDir()}
	a := st.addSet("0001")
	b := st.addSet("0002")
	st.switchTo("0001")
	svc, err := tlsservice.Start(tlsservice.Options{LiveDir: st.live(), Protocol: "smtp", Hostname: "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc.ReloadOnSignal(ctx, syscall.SIGHUP)

	_, port, _ := net.SplitHostPort(svc.Addr())
	e, err := ParseEndpoint("smtp://mail.example.test:" + port + "?connect=127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	opts := ProbeOptions{Timeout: 20 * time.Second}
	res, err := Probe(ctx, e, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.LeafSPKI() != a {
		t.Fatalf("serves %s, want %s", res.LeafSPKI(), a)
	}

	st.switchTo("0002")
	if err := Reload(ctx, []string{"kill", "-HUP", strconv.Itoa(os.Getpid())}, ReloadOptions{Timeout: 10 * time.Second, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	_, err = ProbeUntil(ctx, e, opts, time.Minute, func(r *ProbeResult) bool { return r.LeafSPKI() == b })
	if err != nil {
		t.Fatal(err)
	}
	if tl := svc.Timeline(); len(tl) != 2 || tl[1].SPKI != b {
		t.Errorf("service timeline %+v, want a then b", tl)
	}
}

// TestPostfix probes a real postfix over STARTTLS, reloads it with its own
// reload command after the live set switched, and waits for the new key.
func TestPostfix(t *testing.T) {
	st := &liveState{t: t, root: t.TempDir()}
	a := st.addSet("0001")
	b := st.addSet("0002")
	st.switchTo("0001")
	pf := rig.StartPostfix(t, rig.PostfixOptions{
		ChainFiles: []string{filepath.Join(st.live(), "privkey.pem"), filepath.Join(st.live(), "fullchain.pem")},
	})
	e, err := ParseEndpoint("smtp://" + pf.Hostname + ":" + strconv.Itoa(pf.Port) + "?connect=127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := ProbeOptions{Timeout: 30 * time.Second}
	res, err := Probe(ctx, e, opts)
	if err != nil {
		t.Fatalf("%v\npostfix log:\n%s", err, pf.Log())
	}
	if res.LeafSPKI() != a || res.Version < 0x0303 {
		t.Fatalf("postfix serves %s (TLS %x), want %s", res.LeafSPKI(), res.Version, a)
	}

	st.switchTo("0002")
	if err := Reload(ctx, pf.ReloadArgv(), ReloadOptions{Timeout: time.Minute, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ProbeUntil(ctx, e, opts, 2*time.Minute, func(r *ProbeResult) bool { return r.LeafSPKI() == b }); err != nil {
		t.Fatalf("%v\npostfix log:\n%s", err, pf.Log())
	}

	// The probes ended their sessions with QUIT, not by dropping the
	// connection after STARTTLS. postfix logs asynchronously.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(pf.Log(), "starttls=1 quit=1") {
		if time.Now().After(deadline) {
			t.Fatalf("postfix never logged a probe that ended with QUIT:\n%s", pf.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(pf.Log(), "lost connection after") {
		t.Errorf("a probe dropped its connection:\n%s", pf.Log())
	}
}
