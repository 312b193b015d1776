package rollover

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/store"
)

// fakeCA issues self-signed certificates at once and counts the orders in
// flight.
type fakeCA struct {
	mu          sync.Mutex // guards inFlight, maxInFlight, orders
	inFlight    int
	maxInFlight int
	orders      int
	hold        time.Duration // how long an order takes
}

func (f *fakeCA) Obtain(ctx context.Context, req acme.Request) (*acme.Certificate, error) {
	f.mu.Lock()
	f.inFlight++
	f.orders++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	time.Sleep(f.hold)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: req.Domains[0]},
		DNSNames: req.Domains, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(90 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, req.Key.Public(), req.Key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &acme.Certificate{Cert: p, Chain: p, Leaf: leaf}, nil
}

func (f *fakeCA) RenewalInfo(context.Context, *x509.Certificate) (*acme.RenewalInfo, error) {
	return nil, acme.ErrNoARI
}

// barrierClock is the wall clock, except that Sleep (the holds) waits until
// want sleepers are asleep together (or a few seconds pass), then lets
// them all go with the clock advanced by what they asked for: it shows
// whether holds overlap without waiting for them.
type barrierClock struct {
	want int

	mu        sync.Mutex // guards offset, asleep, maxAsleep, release
	offset    time.Duration
	asleep    int
	maxAsleep int
	release   chan struct{}
}

func (c *barrierClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *barrierClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	if c.release == nil {
		c.release = make(chan struct{})
	}
	release := c.release
	c.asleep++
	c.maxAsleep = max(c.maxAsleep, c.asleep)
	if c.asleep == c.want {
		close(c.release)
		c.release = nil
	}
	c.mu.Unlock()
	select {
	case <-release:
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	c.asleep--
	c.offset = max(c.offset, d+time.Second)
	c.mu.Unlock()
	return nil
}

// poolWorld is n certificates with TLSA records in an in-process signed
// zone, a fake CA, and no services (allow_unverified_deploy): enough to
// watch the pool.
func poolWorld(t *testing.T, n, concurrency int, clock Clock, ca *fakeCA) *Engine {
	t.Helper()
	cluster := dnstest.StartT(t, dnstest.Options{Origin: testZone, Signed: true, TSIG: map[string]string{"daneroll.": testSecret},
		SOATTL: 60, NegativeTTL: 1})
	dir := t.TempDir()
	secret := filepath.Join(dir, "tsig.secret")
	if err := os.WriteFile(secret, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\nconcurrency = %d\n[dns]\nconfirm_timeout = \"30s\"\n", filepath.Join(dir, "state"), concurrency)
	fmt.Fprintf(&b, "[dns.publisher.ns]\ntype = \"rfc2136\"\nserver = %q\ntsig_name = \"daneroll.\"\ntsig_secret_file = %q\nnameservers = [%q]\n",
		cluster.Primary(), secret, cluster.Primary())
	for i := range n {
		fmt.Fprintf(&b, "[[certificate]]\nname = \"c%d\"\ndomains = [\"c%d.example.test\"]\nchallenge = \"http-01\"\nhttp01_webroot = %q\npublisher = \"ns\"\n"+
			"key_policy = \"reuse\"\ntlsa = [\"_25._tcp.c%d.example.test\"]\ntlsa_ttl = 2\nallow_unverified_deploy = true\n", i, i, dir, i)
	}
	cfg, err := config.Parse(filepath.Join(dir, "daneroll.toml"), b.String())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	dnsMap, err := BuildDNS(cfg, slog.New(slog.DiscardHandler), clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Config: cfg, Store: st, Clock: clock, DNS: dnsMap,
		ACME:       func(context.Context) (ACMEClient, error) { return ca, nil },
		Reload:     func(context.Context, []string, time.Duration) error { return nil },
		LookupTLSA: func(context.Context, string) (*dane.Lookup, error) { return nil, errors.New("no probes here") },
	})
}

// Certificates work a few at a time, but a certificate in its hold gives
// its place up: with one place and four certificates, the four holds still
// run together, and never two orders at once.
func TestHoldsOverlapWhateverTheConcurrency(t *testing.T) {
	clock := &barrierClock{want: 4}
	ca := &fakeCA{hold: 20 * time.Millisecond}
	e := poolWorld(t, 4, 1, clock, ca)
	out, err := e.Renew(context.Background(), nil, RenewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Err != nil || o.Action != "issued" {
			t.Errorf("%s: %s %v", o.Name, o.Action, o.Err)
		}
	}
	if clock.maxAsleep != 4 {
		t.Errorf("at most %d holds at once, want all 4", clock.maxAsleep)
	}
	if ca.maxInFlight != 1 || ca.orders != 4 {
		t.Errorf("%d orders, at most %d at once; want 4, one at a time (concurrency = 1)", ca.orders, ca.maxInFlight)
	}
}

// With room for them, orders of different certificates run at once.
func TestOrdersRunTogether(t *testing.T) {
	clock := &barrierClock{want: 4}
	ca := &fakeCA{hold: 300 * time.Millisecond}
	e := poolWorld(t, 4, 4, clock, ca)
	if _, err := e.Renew(context.Background(), nil, RenewOptions{}); err != nil {
		t.Fatal(err)
	}
	if ca.maxInFlight < 2 {
		t.Errorf("at most %d order at once with concurrency 4", ca.maxInFlight)
	}
}
