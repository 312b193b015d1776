package rollover

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/internal/dnstest"
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

// world is a complete little internet on loopback: a signed zone on three
// authoritative servers that take RFC 2136 updates, Pebble validating
// dns-01 against it, and an SMTP service with STARTTLS serving the live set.
type world struct {
	t        *testing.T
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
	if o.ttl == 0 {
		o.ttl = 1
	}
	if o.domains == nil {
		o.domains = []string{"mail.example.test"}
	}
	w := &world{t: t, dir: t.TempDir(), rep: &recorder{}}
	w.dns = dnstest.StartT(t, dnstest.Options{
		Origin:      testZone,
		Records:     []string{"mail 60 IN A 127.0.0.1"},
		Secondaries: 2,
		Signed:      true,
		TSIG:        map[string]string{"daneroll.": testSecret},
		SOATTL:      60,
		NegativeTTL: 1,
	})
	// A validating resolver in front of the cluster: verify judges the
	// service by what it returns, as a DANE client would.
	w.resolver = w.dns.StartResolverT(t)
	ctx := context.Background()
	var err error
	w.pebble, err = pebbletest.Start(ctx, pebbletest.Options{Dir: filepath.Join(w.dir, "pebble"), Binary: pebbleBin, DNSServer: w.dns.Primary()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pebble.Close() })
	st := filepath.Join(w.dir, "state")
	w.svc, err = tlsservice.Start(tlsservice.Options{Addr: "127.0.0.1:0", LiveDir: filepath.Join(st, "live", "mail"), Protocol: "smtp", Hostname: "mail.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.svc.Close() })
	_, w.port, _ = net.SplitHostPort(w.svc.Addr())
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	w.svc.ReloadOnSignal(sctx, syscall.SIGHUP)
	reload := o.reload
	if reload == nil {
		reload = []string{"kill", "-HUP", strconv.Itoa(os.Getpid())}
	}
	secret := filepath.Join(w.dir, "tsig.secret")
	if err := os.WriteFile(secret, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, a := range w.dns.Addrs() {
		ns = append(ns, strconv.Quote(a))
	}
	w.cfgFile = filepath.Join(w.dir, "daneroll.toml")
	cfg := fmt.Sprintf(`state_dir = %q
[acme]
directory = %q
email = "hostmaster@example.test"
accept_tos = true
ca_roots = [%q]

[dns]
hold_factor = 2.0
confirm_timeout = "1m"
resolver = %q

[dns.publisher.ns]
type = "rfc2136"
server = %q
tsig_name = "daneroll."
tsig_algorithm = "hmac-sha256"
tsig_secret_file = %q
nameservers = [%s]

[[certificate]]
name = "mail"
domains = [%s]
challenge = "dns-01"
publisher = "ns"
key_policy = %q
tlsa = ["_%s._tcp.mail.example.test"]
tlsa_ttl = %d
services = ["smtp"]
%s
[service.smtp]
reload = [%s]
reload_timeout = "10s"
probe = ["smtp://mail.example.test:%s?connect=127.0.0.1"]
`, st, w.pebble.Directory, w.pebble.RootsFile, w.resolver.Addr(), w.dns.Primary(), secret, strings.Join(ns, ", "),
		quoteAll(o.domains), o.policy, w.port, o.ttl, o.extra, quoteAll(reload), w.port)
	if err := os.WriteFile(w.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w.cfg, err = config.Load(w.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	w.store, err = store.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
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
	if ok, err := w.store.ReadJSON(store.JournalPath("mail"), st); !ok || err != nil {
		w.t.Fatalf("journal: %v %v", ok, err)
	}
	return st
}

func (w *world) owner() string { return "_" + w.port + "._tcp.mail.example.test." }

// published returns the TLSA records every server serves now, as the
// digests of their data (hex), asserting the servers agree.
func (w *world) published() []string {
	w.t.Helper()
	var first []string
	for i, addr := range w.dns.Addrs() {
		m := new(dns.Msg)
		m.SetQuestion(w.owner(), dns.TypeTLSA)
		r, err := dns.Exchange(m, addr)
		if err != nil {
			w.t.Fatal(err)
		}
		var got []string
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TLSA); ok {
				got = append(got, t.Certificate)
			}
		}
		if i == 0 {
			first = got
		} else if strings.Join(got, ",") != strings.Join(first, ",") {
			w.t.Errorf("server %d serves %v, primary %v", i, got, first)
		}
	}
	return first
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
