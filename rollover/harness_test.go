package rollover

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/loopback"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/internal/tlsservice"
	"github.com/daneroll/daneroll/store"
)

var pebbleBin string

func TestMain(m *testing.M) {
	pebbletest.Main(m, testing.Short, &pebbleBin)
}

const (
	testZone   = "example.test."
	testSecret = "ZGFuZXJvbGwtdGVzdC1zZWNyZXQtZGFuZXJvbGwtdGVzdA=="
)

// world is a complete little internet on loopback (internal/loopback): a
// signed zone on three authoritative servers that take RFC 2136 updates,
// Pebble validating dns-01 against it, and an SMTP service with STARTTLS
// serving the live set, with the engine's view of it.
type world struct {
	t        *testing.T
	lb       *loopback.World
	dns      *dnstest.Cluster
	resolver *dnstest.Resolver
	pebble   *pebbletest.Pebble
	svc      *tlsservice.Server
	dir      string
	cfgFile  string
	cfg      *config.Config
	store    *store.Store
	rep      *recorder
	port     string
}

type worldOptions struct {
	policy string
	ttl    int
	extra  string // more certificate keys
	// reload is the reload argv; nil sends SIGHUP to this process, which
	// reloads the service.
	reload []string
	// domains are the certificate's names; default mail.example.test.
	domains []string
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	if pebbleBin == "" {
		t.Skip("needs Pebble: not in -short mode")
	}
	lb := loopback.StartT(t, loopback.Options{
		TSIGSecret: testSecret,
		Pebble:     &pebbletest.Options{Binary: pebbleBin},
		Services:   []loopback.ServiceOptions{{Name: "smtp", Cert: "mail"}},
		Config: &loopback.ConfigOptions{
			Certificates: []loopback.CertificateOptions{{Name: "mail", Domains: o.domains, Policy: o.policy, TTL: o.ttl, Extra: o.extra}},
			Reload:       o.reload,
		},
	})
	svc := lb.Service("smtp")
	w := &world{t: t, lb: lb, dns: lb.DNS, resolver: lb.Resolver, pebble: lb.Pebble, svc: svc.Server,
		dir: lb.Dir, cfgFile: lb.ConfigFile, cfg: lb.Config, rep: &recorder{}, port: svc.Port}
	var err error
	w.store, err = store.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// engine builds an engine as the command line does, with a clock.
func (w *world) engine(clock Clock) *Engine {
	w.t.Helper()
	return w.engineWait(clock, 10*time.Second)
}

func (w *world) engineWait(clock Clock, probeWait time.Duration) *Engine {
	w.t.Helper()
	e, err := BuildWithStore(w.cfg, w.store, Wiring{
		Logger:    slog.New(slog.NewTextHandler(testWriter{w.t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Clock:     clock,
		Reporter:  w.rep,
		Version:   "test",
		ProbeWait: probeWait,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

func (w *world) renew(e *Engine, opts RenewOptions) Outcome {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := e.Renew(ctx, nil, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	if len(out) != 1 {
		w.t.Fatalf("outcomes = %+v", out)
	}
	return out[0]
}

func (w *world) mustRenew(e *Engine, opts RenewOptions, action string) Outcome {
	w.t.Helper()
	o := w.renew(e, opts)
	if o.Err != nil || o.Action != action {
		w.t.Fatalf("renew: action %q (want %q), err %v; detail %s", o.Action, action, o.Err, o.Detail)
	}
	return o
}

func (w *world) state() *State {
	w.t.Helper()
	st := &State{}
	if ok, err := w.lb.Journal("mail", st); !ok || err != nil {
		w.t.Fatalf("journal: %v %v", ok, err)
	}
	return st
}

func (w *world) owner() string { return w.lb.Service("smtp").Owner() }

// published returns the TLSA records every server serves now, as the
// digests of their data (hex), asserting the servers agree.
func (w *world) published() []string {
	w.t.Helper()
	got, err := w.lb.Published(w.owner())
	var d *loopback.DisagreeError
	if errors.As(err, &d) {
		w.t.Error(err)
	} else if err != nil {
		w.t.Fatal(err)
	}
	return got
}

// recorder is a Reporter that keeps what it was told.
type recorder struct {
	mu    sync.Mutex // guards lines and waits
	lines []string
	waits []time.Duration
}

func (r *recorder) Progress(cert, step, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, step+": "+msg)
}

func (r *recorder) Waiting(cert, what string, until time.Time) func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, time.Until(until))
	r.lines = append(r.lines, what+": waiting until "+until.Format(time.RFC3339Nano))
	return func() {}
}

func (r *recorder) reset() ([]string, []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, w := r.lines, r.waits
	r.lines, r.waits = nil, nil
	return l, w
}

type testWriter struct{ t *testing.T }

func (tw testWriter) Write(p []byte) (int, error) {
	tw.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
