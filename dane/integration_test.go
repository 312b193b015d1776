package dane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/dane/cloudflare"
	"github.com/daneroll/daneroll/dane/rfc2136"
	"github.com/daneroll/daneroll/internal/cftest"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/rig"
)

// Everything here works on one name of the rig's zone, example.test.
const (
	itOwner = "_25._tcp.mail.example.test."
	// itTTL is the TTL of the TLSA records: short, so that a resolver's
	// cache visibly holds a retired record and then lets it go.
	itTTL = 4
	// itToken has the form of a Cloudflare API token (40 characters).
	itToken = "daneroll-integration-0123456789abcdefghi"
)

// logSink collects a test's log lines, so the test can check that no
// secret reached them.
type logSink struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// testLogger returns a debug logger whose output must not contain any of
// secrets when the test ends, and is shown when the test fails.
func testLogger(t *testing.T, secrets ...string) *slog.Logger {
	t.Helper()
	sink := &logSink{}
	t.Cleanup(func() {
		out := sink.String()
		for _, s := range secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("a secret is in the log")
			}
		}
		if t.Failed() {
			t.Logf("log:\n%s", out)
		}
	})
	return slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// keyRecord makes the 3 1 1 record of a fresh P-256 key at owner.
func keyRecord(t testing.TB, owner string, ttl uint32) *dns.TLSA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return dane.RecordForSPKI(owner, ttl, spki, dane.UsageDANEEE, dane.MatchSHA256)
}

// ctxFor returns a context that ends after d or with the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls check every 100ms until it returns "" (done) or the
// deadline passes, and then fails with check's last complaint.
func eventually(t *testing.T, within time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, msg)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// rrTexts returns records as sorted one-line strings without TTLs.
func rrTexts[R dns.RR](rrs []R) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, dane.RRText(rr))
	}
	slices.Sort(out)
	return out
}

// lookupTexts returns a validating resolver's TLSA answer in the form of
// rrTexts.
func lookupTexts(l *dane.Lookup) []string {
	var out []string
	for _, r := range l.Records {
		out = append(out, dane.RRText(r.RR(l.Owner, 0)))
	}
	slices.Sort(out)
	return out
}

// rrsetWithSigs returns the records of type qtype at name in an answer and
// whether an RRSIG covering them came along.
func rrsetWithSigs(m *dns.Msg, name string, qtype uint16) (rrs []dns.RR, signed bool) {
	for _, rr := range m.Answer {
		if !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
		}
		if sig, ok := rr.(*dns.RRSIG); ok && sig.TypeCovered == qtype {
			signed = true
		}
	}
	return rrs, signed
}

func startSignedBIND(t *testing.T) *rig.BIND {
	t.Helper()
	return rig.StartBIND(t, rig.BINDOptions{Signed: true, Records: []string{
		"mail IN A 127.0.0.1",
		// Someone else's record at the TLSA name: never touched.
		`_25._tcp.mail 60 IN TXT "not daneroll's"`,
	}})
}

func bindPublisher(t *testing.T, b *rig.BIND, secret string, log *slog.Logger) *rfc2136.Publisher {
	t.Helper()
	p, err := rfc2136.New(rfc2136.Config{Server: b.Addr, TSIGName: b.TSIGName, TSIGAlgorithm: b.TSIGAlgorithm,
		TSIGSecret: secret, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBINDPublishConfirmRetire runs the life of two TLSA records against a
// real BIND 9 signing its zone and taking TSIG-signed updates, seen through
// a real unbound that validates with the zone's DS as trust anchor.
func TestBINDPublishConfirmRetire(t *testing.T) {
	b := startSignedBIND(t)
	u := rig.StartUnbound(t, rig.UnboundOptions{StubZone: b.Zone, StubAddr: b.Addr, TrustAnchor: b.DS()})
	log := testLogger(t, b.TSIGSecret)
	pub := bindPublisher(t, b, b.TSIGSecret, log)
	conf := &dane.Confirmer{Nameservers: []string{b.Addr}, Logger: log}
	ctx := ctxFor(t, 2*time.Minute)
	q := &dane.Querier{}
	cur, next := keyRecord(t, itOwner, itTTL), keyRecord(t, itOwner, itTTL)

	before, err := conf.Check(ctx, []dane.Want{{Owner: itOwner, Type: dns.TypeTLSA}})
	if err != nil {
		t.Fatal(err)
	}
	// The rig's zone has $TTL 2 and SOA minimum 1: a denial is cached for
	// at most 2 s (SOA minimum or NSEC TTL).
	if z := before.Zones[0]; z.Zone != b.Zone || !z.Signed || !z.Owners[itOwner].Absent || z.NegTTL < 1 || z.NegTTL > 2 {
		t.Fatalf("before publishing: %+v, want the signed zone %s without TLSA records, negative TTL 1 or 2", z, b.Zone)
	}

	// Publish; adding a record that is there already changes nothing.
	for _, rr := range []*dns.TLSA{cur, next} {
		if err := pub.Add(ctx, rr); err != nil {
			t.Fatalf("add: %v\nnamed log:\n%s", err, b.Log())
		}
	}
	serial, err := b.Serial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Add(ctx, cur); err != nil {
		t.Fatal(err)
	}

	both := []dane.Want{{Owner: itOwner, Type: dns.TypeTLSA, Present: []dns.RR{cur, next}}}
	rep, err := conf.Wait(ctx, both, 30*time.Second)
	if err != nil {
		t.Fatalf("confirm: %v\nnamed log:\n%s", err, b.Log())
	}
	z := rep.Zones[0]
	if !rep.Confirmed || !z.Signed || len(z.Servers) != 1 || z.Servers[0].Unsigned || len(z.Servers[0].Missing) != 0 {
		t.Fatalf("confirmation report: %+v", z)
	}
	if now, _ := b.Serial(ctx); z.Serial != now || now != serial {
		t.Errorf("confirmed serial %d; BIND serves %d; after the two adds it was %d (the repeated add must change nothing)", z.Serial, now, serial)
	}
	if rep.MaxTTL() != itTTL {
		t.Errorf("MaxTTL = %d, want %d", rep.MaxTTL(), itTTL)
	}
	// The hold covers the new RRset's TTL and the negative answer cached
	// for the name before it existed: 2 × max(4 s, ≤ 2 s).
	if got := dane.HoldFor(2, dane.CachedTTL(before, true), rep); got != 2*itTTL*time.Second {
		t.Errorf("hold = %v, want %v", got, 2*itTTL*time.Second)
	}
	// What BIND serves, asked directly: both records, signed, and someone
	// else's TXT record at the same name.
	m, err := b.Query(ctx, itOwner, dns.TypeTLSA)
	if err != nil {
		t.Fatal(err)
	}
	if got, signed := rrsetWithSigs(m, itOwner, dns.TypeTLSA); !slices.Equal(rrTexts(got), rrTexts([]*dns.TLSA{cur, next})) || !signed {
		t.Errorf("BIND serves %q (signed %v), want %q signed", rrTexts(got), signed, rrTexts([]*dns.TLSA{cur, next}))
	}
	if txt, err := pub.Records(ctx, itOwner, dns.TypeTXT); err != nil || len(txt) != 1 {
		t.Errorf("someone else's TXT record: %v, %v", txt, err)
	}

	// The validating resolver returns both, secure. It may first hold the
	// negative answer of the check above, for its negative TTL (1 s).
	want := rrTexts([]*dns.TLSA{cur, next})
	eventually(t, 20*time.Second, func() string {
		l, err := dane.LookupTLSA(ctx, q, u.Addr, itOwner)
		if err != nil {
			return err.Error()
		}
		if !slices.Equal(lookupTexts(l), want) || !l.Secure {
			return fmt.Sprintf("unbound answers %q (secure %v), want %q secure\nunbound log:\n%s", lookupTexts(l), l.Secure, want, u.Log())
		}
		return ""
	})

	// Retire cur. First make sure unbound has just cached the RRset of
	// both (its remaining TTL is nearly the full TTL), and note how long it
	// will keep it.
	var (
		primed time.Time
		left   time.Duration
	)
	eventually(t, 2*itTTL*time.Second, func() string {
		m, err := u.Query(ctx, itOwner, dns.TypeTLSA)
		if err != nil {
			return err.Error()
		}
		primed = time.Now()
		got, _ := rrsetWithSigs(m, itOwner, dns.TypeTLSA)
		if !slices.Equal(rrTexts(got), want) {
			return fmt.Sprintf("unbound answers %q, want %q", rrTexts(got), want)
		}
		left = time.Duration(got[0].Header().Ttl) * time.Second
		if left < (itTTL-1)*time.Second {
			return fmt.Sprintf("unbound holds the RRset for %v more, waiting for a fresh copy", left)
		}
		return ""
	})
	if err := pub.Delete(ctx, cur); err != nil {
		t.Fatalf("delete: %v\nnamed log:\n%s", err, b.Log())
	}
	retired := []dane.Want{{Owner: itOwner, Type: dns.TypeTLSA, Present: []dns.RR{next}, Absent: []dns.RR{cur}}}
	rep, err = conf.Wait(ctx, retired, 30*time.Second)
	if err != nil {
		t.Fatalf("confirm removal: %v", err)
	}
	if !rep.Confirmed || len(rep.Zones[0].Servers[0].Extra) != 0 {
		t.Fatalf("removal report: %+v", rep.Zones[0])
	}
	gone := time.Now()
	// The authoritative server no longer has it, but a resolver that
	// cached the RRset still answers with it until the TTL runs out:
	// the reason a key must not be served after its record is retired...
	if time.Since(primed) < left-time.Second {
		l, err := dane.LookupTLSA(ctx, q, u.Addr, itOwner)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lookupTexts(l), want) {
			t.Errorf("within the TTL unbound answers %q, want the cached %q", lookupTexts(l), want)
		}
	} else {
		t.Logf("slow machine: %v passed since unbound cached the RRset for %v; not checking that it still holds it", time.Since(primed), left)
	}
	// ... and stops once it has run out.
	eventually(t, 20*time.Second, func() string {
		l, err := dane.LookupTLSA(ctx, q, u.Addr, itOwner)
		if err != nil {
			return err.Error()
		}
		if got := lookupTexts(l); !slices.Equal(got, rrTexts([]*dns.TLSA{next})) || !l.Secure {
			return fmt.Sprintf("unbound answers %q (secure %v), want only %s, secure", got, l.Secure, dane.RRText(next))
		}
		return ""
	})
	if since := time.Since(primed); since < left-time.Second {
		t.Errorf("unbound dropped the retired record %v after caching it for %v", since, left)
	}
	t.Logf("unbound served the retired record until %v after the removal was confirmed (cache TTL %v)", time.Since(gone).Round(10*time.Millisecond), left)
}

// TestBINDWrongTSIGSecret: an update signed with the wrong secret is
// refused with a message that says what to check, and changes nothing.
func TestBINDWrongTSIGSecret(t *testing.T) {
	b := startSignedBIND(t)
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	wrong := base64.StdEncoding.EncodeToString(raw)
	log := testLogger(t, b.TSIGSecret, wrong)
	good := bindPublisher(t, b, b.TSIGSecret, log)
	bad := bindPublisher(t, b, wrong, log)
	ctx := ctxFor(t, time.Minute)
	kept := keyRecord(t, itOwner, itTTL)
	if err := good.Add(ctx, kept); err != nil {
		t.Fatal(err)
	}
	serial, err := b.Serial(ctx)
	if err != nil {
		t.Fatal(err)
	}

	other := keyRecord(t, itOwner, itTTL)
	for op, do := range map[string]func(context.Context, dns.RR) error{"add": bad.Add, "delete": bad.Delete} {
		rr := other
		if op == "delete" {
			rr = kept
		}
		err := do(ctx, rr)
		if err == nil {
			t.Fatalf("%s with the wrong secret succeeded", op)
		}
		msg := err.Error()
		for _, want := range []string{"TSIG key " + b.TSIGName, "BADSIG", "tsig_secret"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q does not say %q", op, msg, want)
			}
		}
		if strings.Contains(msg, wrong) || strings.Contains(msg, b.TSIGSecret) {
			t.Errorf("%s: the error shows a secret", op)
		}
	}
	if now, err := b.Serial(ctx); err != nil || now != serial {
		t.Errorf("serial %d after refused updates (err %v), want %d", now, err, serial)
	}
	got, err := good.Records(ctx, itOwner, dns.TypeTLSA)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rrTexts(got), rrTexts([]*dns.TLSA{kept})) {
		t.Errorf("after refused updates BIND has %q, want %q", rrTexts(got), dane.RRText(kept))
	}
}

// TestBINDTXTChallenge serves an ACME dns-01 challenge through BIND.
func TestBINDTXTChallenge(t *testing.T) {
	b := startSignedBIND(t)
	log := testLogger(t, b.TSIGSecret)
	conf := &dane.Confirmer{Nameservers: []string{b.Addr}, Logger: log}
	ch := &dane.TXTChallenge{Publisher: bindPublisher(t, b, b.TSIGSecret, log), Confirmer: conf, Timeout: 30 * time.Second}
	ctx := ctxFor(t, time.Minute)
	name := "_acme-challenge.mail.example.test."
	// A key authorization digest: 43 characters of base64url.
	value := "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	if err := ch.PresentTXT(ctx, name, value); err != nil {
		t.Fatalf("present: %v\nnamed log:\n%s", err, b.Log())
	}
	// PresentTXT returned: BIND serves the record, signed.
	m, err := b.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	rrs, signed := rrsetWithSigs(m, name, dns.TypeTXT)
	if len(rrs) != 1 || !signed || strings.Join(rrs[0].(*dns.TXT).Txt, "") != value {
		t.Fatalf("BIND serves %v (signed %v), want the challenge value signed", rrs, signed)
	}
	if err := ch.CleanUpTXT(ctx, name, value); err != nil {
		t.Fatal(err)
	}
	// CleanUpTXT does not wait for the removal; confirm it here.
	rep, err := conf.Wait(ctx, []dane.Want{{Owner: name, Type: dns.TypeTXT, Absent: rrs}}, 30*time.Second)
	if err != nil {
		t.Fatalf("after clean-up: %v", err)
	}
	if !rep.Zones[0].Owners[name].Absent {
		t.Errorf("after clean-up BIND still has a TXT RRset at %s: %+v", name, rep.Zones[0])
	}
}

// pollHook is a Confirmer.Sleep that returns at once and runs a hook
// before each return, so a test decides when a lagging server catches up.
type pollHook struct {
	mu    sync.Mutex // guards polls
	polls int
	hook  func(poll int)
}

func (p *pollHook) sleep(ctx context.Context, _ time.Duration) error {
	p.mu.Lock()
	p.polls++
	n, hook := p.polls, p.hook
	p.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return ctx.Err()
}

func (p *pollHook) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polls
}

// retryWaits records the Cloudflare publisher's waits between attempts,
// which return at once.
type retryWaits struct {
	mu sync.Mutex // guards ds
	ds []time.Duration
}

func (r *retryWaits) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.ds = append(r.ds, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *retryWaits) get() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ds)
}

// servedEverywhere checks that every server of c serves exactly want at
// owner, signed.
func servedEverywhere(t *testing.T, c *dnstest.Cluster, owner string, want []string) {
	t.Helper()
	q := &dane.Querier{}
	for i, addr := range c.Addrs() {
		m, err := q.Query(t.Context(), addr, owner, dns.TypeTLSA, false)
		if err != nil {
			t.Fatal(err)
		}
		got, signed := rrsetWithSigs(m, owner, dns.TypeTLSA)
		if !slices.Equal(rrTexts(got), want) || !signed {
			t.Errorf("server %d (%s) serves %q (signed %v), want %q signed", i, addr, rrTexts(got), signed, want)
		}
	}
}

// cloudflareTLSA lists the TLSA records the fake holds at owner, as
// record texts; a duplicate shows up twice.
func cloudflareTLSA(t *testing.T, srv *cftest.Server, owner string) []string {
	t.Helper()
	var out []string
	for _, r := range srv.Records("example.test") {
		if r.Type != "TLSA" || r.Name != strings.TrimSuffix(owner, ".") {
			continue
		}
		rr, err := r.RR()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, dane.RRText(rr))
	}
	slices.Sort(out)
	return out
}

// faulted counts the requests an injected fault answered.
func faulted(srv *cftest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Fault {
			n++
		}
	}
	return n
}

// TestCloudflarePublishConfirmRetire runs the same life through the
// Cloudflare publisher against the fake API, whose zone is served by a
// signed three-server cluster standing in for Cloudflare's name servers.
// A server lags at each step, so confirmation has to wait for it, and the
// API fails on the way (429 with Retry-After, 5xx, a create applied whose
// answer is lost, a delete applied whose answer is an error).
func TestCloudflarePublishConfirmRetire(t *testing.T) {
	srv := cftest.NewServer(itToken, "example.test")
	t.Cleanup(srv.Close)
	c := dnstest.StartT(t, dnstest.Options{Origin: "example.test.", Records: []string{"mail 300 IN A 127.0.0.1"},
		Secondaries: 2, Signed: true, SOATTL: 300, NegativeTTL: 60})
	mirror, err := srv.MirrorTo(c)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's TLSA record at the name, which stays.
	foreign := "_25._tcp.mail.example.test. TLSA 2 0 1 " + strings.Repeat("e1", 32)
	if _, err := srv.AddRecord("example.test", cftest.Record{Type: "TLSA", Name: "_25._tcp.mail", TTL: 300,
		Data: &cftest.TLSAData{Usage: 2, Selector: 0, MatchingType: 1, Certificate: strings.Repeat("e1", 32)}}); err != nil {
		t.Fatal(err)
	}
	log := testLogger(t, itToken)
	waits := &retryWaits{}
	pub, err := cloudflare.New(cloudflare.Config{Token: itToken, BaseURL: srv.URL, HTTPClient: srv.Client(), Logger: log, Sleep: waits.sleep})
	if err != nil {
		t.Fatal(err)
	}
	polls := &pollHook{}
	conf := &dane.Confirmer{Nameservers: c.Addrs(), Sleep: polls.sleep, Logger: log}
	ctx := ctxFor(t, time.Minute)
	// Cloudflare's minimum TTL is 60 s.
	cur, next := keyRecord(t, itOwner, 300), keyRecord(t, itOwner, 300)

	// Publish, with server 2 cut off from the primary and the API failing.
	c.Freeze(2)
	srv.Inject("GET", "/zones", cftest.Fault{Status: 429, RetryAfter: 7})
	srv.Inject("GET", "/zones/*/dns_records", cftest.Fault{Status: 503})
	srv.Inject("POST", "/zones/*/dns_records", cftest.Fault{Status: 429, RetryAfter: 3})
	srv.Inject("POST", "/zones/*/dns_records", cftest.Fault{DropResponseAfterApply: true})
	srv.Inject("POST", "/zones/*/dns_records", cftest.Fault{Status: 502, AfterApply: true})
	for _, rr := range []*dns.TLSA{cur, next} {
		if err := pub.Add(ctx, rr); err != nil {
			t.Fatalf("add %s: %v", dane.RRText(rr), err)
		}
	}
	if w := waits.get(); !slices.Contains(w, 7*time.Second) || !slices.Contains(w, 3*time.Second) {
		t.Errorf("retry waits %v: Retry-After 7 s and 3 s not honoured", w)
	}
	published := []string{dane.RRText(cur), dane.RRText(next), foreign}
	slices.Sort(published)
	if got := cloudflareTLSA(t, srv, itOwner); !slices.Equal(got, published) {
		t.Fatalf("the API holds %q, want exactly %q", got, published)
	}
	// Three creates reached the API: cur (429, not applied), cur again
	// (applied, answer lost), next (applied, then 502). After each applied
	// one the publisher listed the name, found the record and sent no more.
	if n := len(srv.Calls("POST", "/zones/*/dns_records")); n != 3 {
		t.Errorf("%d creates, want 3", n)
	}
	if n := faulted(srv); n != 5 {
		t.Errorf("%d requests met a fault, want all 5 injected", n)
	}

	both := []dane.Want{{Owner: itOwner, Type: dns.TypeTLSA, Present: []dns.RR{cur, next}}}
	thawed := false
	polls.hook = func(n int) {
		if n == 2 {
			c.Thaw(2)
			thawed = true
		}
	}
	rep, err := conf.Wait(ctx, both, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !thawed || polls.count() != 2 {
		t.Errorf("confirmed after %d polls (thawed %v): it must wait for the frozen server", polls.count(), thawed)
	}
	if !rep.Confirmed || !rep.Zones[0].Signed || rep.Zones[0].Serial != c.Serial(0) {
		t.Errorf("report %+v", rep.Zones[0])
	}
	servedEverywhere(t, c, itOwner, published)

	// Retire cur, with server 1 cut off and the API failing again.
	c.Freeze(1)
	srv.Inject("GET", "/zones/*/dns_records", cftest.Fault{Status: 429, RetryAfter: 2})
	srv.Inject("DELETE", "/zones/*/dns_records/*", cftest.Fault{Status: 500, AfterApply: true})
	if err := pub.Delete(ctx, cur); err != nil {
		t.Fatalf("delete: %v", err)
	}
	kept := []string{dane.RRText(next), foreign}
	slices.Sort(kept)
	if got := cloudflareTLSA(t, srv, itOwner); !slices.Equal(got, kept) {
		t.Fatalf("after the delete the API holds %q, want exactly %q", got, kept)
	}
	// The delete was applied and answered 500; the retry found it gone.
	if n, f := len(srv.Calls("DELETE", "/zones/*/dns_records/*")), faulted(srv); n != 2 || f != 7 {
		t.Errorf("%d deletes, %d faults in all; want 2 deletes and the 7 faults injected", n, f)
	}
	retired := []dane.Want{{Owner: itOwner, Type: dns.TypeTLSA, Present: []dns.RR{next}, Absent: []dns.RR{cur}}}
	first, err := conf.Check(ctx, retired)
	if err != nil {
		t.Fatal(err)
	}
	if lag := first.Lagging(); first.Confirmed || len(lag) != 1 || !strings.Contains(lag[0], c.Addrs()[1]) || !strings.Contains(lag[0], "still serves "+dane.RRText(cur)) {
		t.Errorf("with server 1 frozen: confirmed %v, lagging %q", first.Confirmed, lag)
	}
	before := polls.count()
	polls.hook = func(n int) {
		if n == before+1 {
			c.Thaw(1)
		}
	}
	if _, err := conf.Wait(ctx, retired, time.Hour); err != nil {
		t.Fatal(err)
	}
	if polls.count() != before+1 {
		t.Errorf("removal confirmed after %d polls, want 1", polls.count()-before)
	}
	servedEverywhere(t, c, itOwner, kept)
	if err := mirror.Err(); err != nil {
		t.Error(err)
	}
}
