package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/internal/cftest"
)

// testToken has the form of a real API token (40 characters).
const testToken = "daneroll-test-token-0123456789abcdefghij"

const (
	certA = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1"
	certB = "2bb6d1a2d54d8b5e8c3e09a5a5c3e2f4b7bb6e2a3f6c5d8e9f0a1b2c3d4e5f60"
	owner = "_25._tcp.mail.example.org."
)

var _ dane.Publisher = (*Publisher)(nil)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// sleeps records the waits asked of the injected Sleep, which returns at
// once.
type sleeps struct {
	mu sync.Mutex // guards ds
	ds []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ds)
}

type env struct {
	srv    *cftest.Server
	pub    *Publisher
	sleeps *sleeps
	logs   *syncBuffer
}

// setup starts a fake API with the zones and a publisher for it. Every
// test checks at the end that the token never reached the log.
func setup(t *testing.T, zones []string, mod func(*Config)) *env {
	t.Helper()
	srv := cftest.NewServer(testToken, zones...)
	t.Cleanup(srv.Close)
	e := &env{srv: srv, sleeps: &sleeps{}, logs: &syncBuffer{}}
	cfg := Config{
		Token:      testToken,
		BaseURL:    srv.URL,
		HTTPClient: srv.Client(),
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sleep:      e.sleeps.sleep,
	}
	if mod != nil {
		mod(&cfg)
	}
	pub, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.pub = pub
	t.Cleanup(func() {
		if strings.Contains(e.logs.String(), cfg.Token) {
			t.Errorf("the token is in the log:\n%s", e.logs.String())
		}
	})
	return e
}

func tlsa(name string, ttl uint32, usage uint8, cert string) *dns.TLSA {
	return &dns.TLSA{
		Hdr:   dns.RR_Header{Name: name, Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: ttl},
		Usage: usage, Selector: 1, MatchingType: 1, Certificate: cert,
	}
}

func txt(name string, ttl uint32, s ...string) *dns.TXT {
	return &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}, Txt: s}
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// fixtureSubset checks that the JSON body holds every key of the fixture
// with the same value.
func fixtureSubset(t *testing.T, name string, body []byte) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var want, got map[string]any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("request body is not JSON: %v\n%s", err, body)
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("request %s = %v, want %v (body %s)", k, got[k], v, body)
		}
	}
	return got
}

func TestTLSAAddListDelete(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	rr := tlsa(owner, 300, 3, strings.ToUpper(certA))
	if err := e.pub.Add(ctx(t), rr); err != nil {
		t.Fatal(err)
	}
	posts := e.srv.Calls("POST", "/zones/*/dns_records")
	if len(posts) != 1 {
		t.Fatalf("%d creates, want 1", len(posts))
	}
	body := fixtureSubset(t, "create_tlsa-request.json", posts[0].Body)
	if c, ok := body["content"]; ok && c != "" {
		t.Errorf("TLSA create sends content %v besides data", c)
	}
	recs := e.srv.Records("example.org")
	if len(recs) != 1 || recs[0].Content != "3 1 1 "+certA || recs[0].TTL != 300 {
		t.Fatalf("zone holds %+v", recs)
	}

	got, err := e.pub.Records(ctx(t), "_25._TCP.mail.example.org", dns.TypeTLSA)
	if err != nil {
		t.Fatal(err)
	}
	want := tlsa(owner, 300, 3, certA)
	if len(got) != 1 || got[0].String() != want.String() {
		t.Fatalf("Records = %v, want %v", got, want)
	}

	if err := e.pub.Delete(ctx(t), rr); err != nil {
		t.Fatal(err)
	}
	if recs := e.srv.Records("example.org"); len(recs) != 0 {
		t.Fatalf("after Delete the zone holds %+v", recs)
	}
	if got, err := e.pub.Records(ctx(t), owner, dns.TypeTLSA); err != nil || len(got) != 0 {
		t.Fatalf("Records after Delete = %v, %v", got, err)
	}
	// Deleting what is not there succeeds and deletes nothing.
	if err := e.pub.Delete(ctx(t), rr); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Calls("DELETE", "")); n != 1 {
		t.Errorf("%d DELETE calls, want 1", n)
	}
}

func TestTXTAddListDelete(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	ch := txt("_acme-challenge.mail.example.org.", 60, "ADw2sEd82DUgXcQ9hNBZThJs7zVJkR5v9JeSbAb9mZY")
	if err := e.pub.Add(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	fixtureSubset(t, "create_txt-request.json", e.srv.Calls("POST", "")[0].Body)

	// Several strings, a quote, a backslash (escaped, as miekg/dns keeps
	// TXT strings in presentation form) and a string longer than 255 bytes,
	// which Cloudflare splits.
	long := strings.Repeat("x", 300)
	odd := txt("odd.example.org.", 120, `say "hi"`, `back\\slash`, long)
	if err := e.pub.Add(ctx(t), odd); err != nil {
		t.Fatal(err)
	}
	wantContent := `"say \"hi\"" "back\\slash" "` + long[:255] + `" "` + long[255:] + `"`
	for _, r := range e.srv.Records("example.org") {
		if r.Name == "odd.example.org" && r.Content != wantContent {
			t.Errorf("content %s, want %s", r.Content, wantContent)
		}
	}
	got, err := e.pub.Records(ctx(t), "odd.example.org.", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	want, err := dns.NewRR("odd.example.org. 120 IN TXT " + wantContent)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].String() != want.String() {
		t.Fatalf("Records = %v, want %v", got, want)
	}
	// The split record still counts as the one added: no second create.
	if err := e.pub.Add(ctx(t), odd); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Calls("POST", "")); n != 2 {
		t.Errorf("%d creates, want 2", n)
	}
	if err := e.pub.Delete(ctx(t), odd); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Delete(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	if recs := e.srv.Records("example.org"); len(recs) != 0 {
		t.Fatalf("after Delete the zone holds %+v", recs)
	}
}

func TestAddIsIdempotent(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	rr := tlsa(owner, 300, 3, certA)
	for range 3 {
		if err := e.pub.Add(ctx(t), rr); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.srv.Records("example.org")); n != 1 {
		t.Fatalf("%d records after three Adds", n)
	}
	if n := len(e.srv.Calls("POST", "")); n != 1 {
		t.Errorf("%d creates for three Adds of one record", n)
	}
}

func TestAddWhenPresentWithOtherTTL(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	if _, err := e.srv.AddRecord("example.org", cftest.Record{Type: "TLSA", Name: "_25._tcp.mail",
		Data: &cftest.TLSAData{Usage: 3, Selector: 1, MatchingType: 1, Certificate: certA}, TTL: 3600}); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Add(ctx(t), tlsa(owner, 300, 3, certA)); err != nil {
		t.Fatal(err)
	}
	recs := e.srv.Records("example.org")
	if len(recs) != 1 || recs[0].TTL != 3600 {
		t.Fatalf("zone holds %+v; the record must be left as it was", recs)
	}
	if n := len(e.srv.Calls("POST", "")); n != 0 {
		t.Errorf("%d creates for a record that was there", n)
	}
	if n := len(e.srv.Calls("DELETE", "")); n != 0 {
		t.Errorf("%d deletes: nothing is replaced in place", n)
	}
}

// TestAlreadyExistsIsSuccess covers a record that appears between the list
// and the create (the server answers 81058) and the older 81057.
func TestAlreadyExistsIsSuccess(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	rr := tlsa(owner, 300, 3, certA)
	if err := e.pub.Add(ctx(t), rr); err != nil {
		t.Fatal(err)
	}
	e.srv.Inject("GET", "/zones/*/dns_records", cftest.Fault{Status: 200,
		Body: `{"success":true,"errors":[],"messages":[],"result":[],"result_info":{"page":1,"per_page":100,"count":0,"total_count":0,"total_pages":0}}`})
	if err := e.pub.Add(ctx(t), rr); err != nil {
		t.Fatalf("81058 was not taken as success: %v", err)
	}
	posts := e.srv.Calls("POST", "")
	if len(posts) != 2 || posts[1].Status != 400 {
		t.Fatalf("want a second create answered 400 (81058), got %+v", posts)
	}

	e.srv.Inject("POST", "/zones/*/dns_records", cftest.Fault{Code: cftest.CodeRecordExists})
	if err := e.pub.Add(ctx(t), tlsa(owner, 300, 3, certB)); err != nil {
		t.Fatalf("81057 was not taken as success: %v", err)
	}
	if n := len(e.srv.Records("example.org")); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

func TestDeleteOnlyExactMatch(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	add := func(r cftest.Record) string {
		t.Helper()
		got, err := e.srv.AddRecord("example.org", r)
		if err != nil {
			t.Fatal(err)
		}
		return got.ID
	}
	data := func(u int, c string) *cftest.TLSAData {
		return &cftest.TLSAData{Usage: u, Selector: 1, MatchingType: 1, Certificate: c}
	}
	mine := add(cftest.Record{Type: "TLSA", Name: "_25._tcp.mail", Data: data(3, strings.ToUpper(certA)), TTL: 600})
	foreign := []string{
		add(cftest.Record{Type: "TLSA", Name: "_25._tcp.mail", Data: data(3, certB), TTL: 300}),
		add(cftest.Record{Type: "TLSA", Name: "_25._tcp.mail", Data: data(2, certA), TTL: 300}),
		add(cftest.Record{Type: "TLSA", Name: "_443._tcp.mail", Data: data(3, certA), TTL: 300}),
		add(cftest.Record{Type: "TXT", Name: "_25._tcp.mail", Content: `"3 1 1 ` + certA + `"`, TTL: 300}),
		add(cftest.Record{Type: "A", Name: "mail", Content: "192.0.2.25", TTL: 1}),
	}

	if err := e.pub.Delete(ctx(t), tlsa(owner, 300, 3, certA)); err != nil {
		t.Fatal(err)
	}
	dels := e.srv.Calls("DELETE", "")
	if len(dels) != 1 || !strings.HasSuffix(dels[0].Path, "/"+mine) {
		t.Fatalf("DELETE calls %+v, want exactly one, of %s", dels, mine)
	}
	var left []string
	for _, r := range e.srv.Records("example.org") {
		left = append(left, r.ID)
	}
	if !slices.Equal(left, foreign) {
		t.Errorf("records left %v, want %v", left, foreign)
	}
	for _, r := range e.srv.Requests() {
		if r.Method == "GET" && strings.HasSuffix(r.Path, "/dns_records") &&
			(r.Query.Get("name") != "_25._tcp.mail.example.org" || r.Query.Get("type") != "TLSA") {
			t.Errorf("list not narrowed to the name and type: %v", r.Query)
		}
	}
}

func TestPagination(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	// More than a page (100) of foreign TXT records at the name, then ours.
	for i := range 120 {
		if _, err := e.srv.AddRecord("example.org", cftest.Record{Type: "TXT", Name: "_acme-challenge",
			Content: fmt.Sprintf(`"other-%03d"`, i), TTL: 120}); err != nil {
			t.Fatal(err)
		}
	}
	ours := txt("_acme-challenge.example.org.", 60, "ours")
	if err := e.pub.Add(ctx(t), ours); err != nil {
		t.Fatal(err)
	}
	got, err := e.pub.Records(ctx(t), "_acme-challenge.example.org.", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 121 {
		t.Fatalf("Records found %d of 121", len(got))
	}
	e.srv.ResetRequests()
	// Ours is on the second page: found there, nothing created.
	if err := e.pub.Add(ctx(t), ours); err != nil {
		t.Fatal(err)
	}
	var pages []string
	for _, r := range e.srv.Calls("GET", "/zones/*/dns_records") {
		pages = append(pages, r.Query.Get("page"))
	}
	if !slices.Equal(pages, []string{"1", "2"}) || len(e.srv.Calls("POST", "")) != 0 {
		t.Errorf("pages read %v, creates %d", pages, len(e.srv.Calls("POST", "")))
	}
	if err := e.pub.Delete(ctx(t), ours); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Records("example.org")); n != 120 {
		t.Errorf("%d records left, want the 120 foreign ones", n)
	}

	// Smaller pages: every page is read.
	e.pub.perPage = 7
	e.srv.ResetRequests()
	got, err = e.pub.Records(ctx(t), "_acme-challenge.example.org.", dns.TypeTXT)
	if err != nil || len(got) != 120 {
		t.Fatalf("Records with 7 a page: %d, %v", len(got), err)
	}
	if n := len(e.srv.Calls("GET", "/zones/*/dns_records")); n != 18 {
		t.Errorf("%d pages read, want 18", n)
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	e.srv.Inject("GET", "/zones", cftest.Fault{Status: 429, RetryAfter: 3})
	e.srv.Inject("POST", "/zones/*/dns_records", cftest.Fault{Status: 429, RetryAfter: 7})
	if err := e.pub.Add(ctx(t), tlsa(owner, 300, 3, certA)); err != nil {
		t.Fatal(err)
	}
	if got, want := e.sleeps.get(), []time.Duration{3 * time.Second, 7 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("slept %v, want %v", got, want)
	}
	if n := len(e.srv.Records("example.org")); n != 1 {
		t.Errorf("%d records, want 1", n)
	}

	// An HTTP date is taken relative to the answer's own Date header.
	e.srv.Inject("GET", "/zones/*/dns_records", cftest.Fault{Status: 429,
		RetryAfterHeader: time.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat)})
	if _, err := e.pub.Records(ctx(t), owner, dns.TypeTLSA); err != nil {
		t.Fatal(err)
	}
	if d := e.sleeps.get()[2]; d < 18*time.Second || d > 21*time.Second {
		t.Errorf("slept %v for a Retry-After 20 s ahead", d)
	}
}

func TestRetryAfterTooLong(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	e.srv.Inject("GET", "/zones", cftest.Fault{Status: 429, RetryAfter: 3600})
	_, err := e.pub.Records(ctx(t), owner, dns.TypeTLSA)
	if err == nil || !strings.Contains(err.Error(), "asks to wait 1h0m0s") {
		t.Fatalf("err = %v", err)
	}
	if n := len(e.sleeps.get()); n != 0 {
		t.Errorf("slept %d times", n)
	}
}

func TestServerErrorsRetried(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	e.srv.Inject("GET", "/zones/*/dns_records", cftest.Fault{Status: 502, Times: 2})
	e.srv.Inject("POST", "/zones/*/dns_records", cftest.Fault{Status: 500})
	if err := e.pub.Add(ctx(t), tlsa(owner, 300, 3, certA)); err != nil {
		t.Fatal(err)
	}
	// Exponential backoff: 1 s, 2 s for the list, 1 s for the create.
	if got, want := e.sleeps.get(), []time.Duration{time.Second, 2 * time.Second, time.Second}; !slices.Equal(got, want) {
		t.Errorf("slept %v, want %v", got, want)
	}
	if n := len(e.srv.Records("example.org")); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

func TestServerErrorsForever(t *testing.T) {
	e := setup(t, []string{"example.org"}, func(c *Config) { c.MaxRetries = 3 })
	e.srv.Inject("GET", "/zones", cftest.Fault{Status: 502, Times: -1})
	_, err := e.pub.Records(ctx(t), owner, dns.TypeTLSA)
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"cloudflare: look up zone mail.example.org", "gave up after 4 attempts", "HTTP 502"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if n := len(e.srv.Calls("GET", "/zones")); n != 4 {
		t.Errorf("%d attempts, want 4", n)
	}
	if got, want := e.sleeps.get(), []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("slept %v, want %v", got, want)
	}
}

func TestLostAnswerMakesNoDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault cftest.Fault
		mod   func(*Config)
	}{
		{"connection dropped", cftest.Fault{DropResponseAfterApply: true}, nil},
		{"gateway timeout after apply", cftest.Fault{Status: 504, AfterApply: true}, nil},
		{"client timeout", cftest.Fault{DropResponseAfterApply: true, Delay: time.Minute}, func(c *Config) {
			hc := *c.HTTPClient
			hc.Timeout = 500 * time.Millisecond
			c.HTTPClient = &hc
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, []string{"example.org"}, tc.mod)
			e.srv.Inject("POST", "/zones/*/dns_records", tc.fault)
			rr := tlsa(owner, 300, 3, certA)
			if err := e.pub.Add(ctx(t), rr); err != nil {
				t.Fatal(err)
			}
			if n := len(e.srv.Records("example.org")); n != 1 {
				t.Fatalf("%d records after a retried create, want 1", n)
			}
			if n := len(e.srv.Calls("POST", "")); n != 1 {
				t.Errorf("%d creates: the retry must find the applied one", n)
			}

			e.srv.Inject("DELETE", "/zones/*/dns_records/*", tc.fault)
			if err := e.pub.Delete(ctx(t), rr); err != nil {
				t.Fatal(err)
			}
			if n := len(e.srv.Records("example.org")); n != 0 {
				t.Errorf("%d records after Delete", n)
			}
		})
	}
}

func TestAuthErrors(t *testing.T) {
	wrong := "wrong-token-0123456789abcdefghijklmnopqr"
	for _, tc := range []struct {
		name  string
		token string
		setup func(*cftest.Server)
		op    func(*Publisher) error
		want  []string
	}{
		{"unknown token", wrong, nil,
			func(p *Publisher) error { _, err := p.Records(context.Background(), owner, dns.TypeTLSA); return err },
			[]string{"the API token is invalid, expired or revoked", "HTTP 403", "Invalid access token (9109)"}},
		{"malformed token", "secret-with-bad-form", nil,
			func(p *Publisher) error { _, err := p.Records(context.Background(), owner, dns.TypeTLSA); return err },
			[]string{"malformed", "HTTP 400", "(6003)", "(6111)"}},
		{"read-only token", "readonly-token-0123456789abcdefghijklmno",
			func(s *cftest.Server) {
				s.AddToken(cftest.Token{Value: "readonly-token-0123456789abcdefghijklmno", ReadOnly: true})
			},
			func(p *Publisher) error { return p.Add(context.Background(), tlsa(owner, 300, 3, certA)) },
			[]string{"cloudflare: create _25._tcp.mail.example.org TLSA 3 1 1", "lacks a permission", "Authentication error (10000)"}},
		{"server echoes the token", testToken,
			func(s *cftest.Server) {
				s.Inject("GET", "/zones", cftest.Fault{Status: 403, Code: 9109, Message: "Invalid access token " + testToken})
			},
			func(p *Publisher) error { _, err := p.Records(context.Background(), owner, dns.TypeTLSA); return err },
			[]string{"invalid, expired or revoked", "[redacted]"}},
		{"server echoes the token upper-cased", testToken,
			func(s *cftest.Server) {
				s.Inject("GET", "/zones", cftest.Fault{Status: 403, Code: 9109, Message: "INVALID ACCESS TOKEN " + strings.ToUpper(testToken)})
			},
			func(p *Publisher) error { _, err := p.Records(context.Background(), owner, dns.TypeTLSA); return err },
			[]string{"invalid, expired or revoked", "[redacted]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, []string{"example.org"}, func(c *Config) { c.Token = tc.token })
			if tc.setup != nil {
				tc.setup(e.srv)
			}
			err := tc.op(e.pub)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.token)) {
				t.Errorf("the token is in the error: %q", err)
			}
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Errorf("error %T is not an *APIError", err)
			}
			if n := len(e.sleeps.get()); n != 0 {
				t.Errorf("an auth failure was retried %d times", n)
			}
			if n := len(e.srv.Records("example.org")); n != 0 {
				t.Errorf("%d records were made", n)
			}
		})
	}
}

func TestZoneWalkUp(t *testing.T) {
	e := setup(t, []string{"example.org", "mail.example.org"}, nil)
	if err := e.pub.Add(ctx(t), tlsa(owner, 300, 3, certA)); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Records("mail.example.org")); n != 1 {
		t.Errorf("sub-zone mail.example.org holds %d records, want 1", n)
	}
	if n := len(e.srv.Records("example.org")); n != 0 {
		t.Errorf("parent zone example.org holds %d records, want 0", n)
	}
	var asked []string
	for _, r := range e.srv.Calls("GET", "/zones") {
		asked = append(asked, r.Query.Get("name"))
	}
	if !slices.Equal(asked, []string{"mail.example.org"}) {
		t.Errorf("zones asked for %v", asked)
	}

	if err := e.pub.Add(ctx(t), tlsa("_443._tcp.www.example.org.", 300, 3, certA)); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Records("example.org")); n != 1 {
		t.Errorf("example.org holds %d records, want 1", n)
	}
	// The zone of a name is looked up once.
	before := len(e.srv.Calls("GET", "/zones"))
	if _, err := e.pub.Records(ctx(t), owner, dns.TypeTLSA); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pub.Records(ctx(t), "_443._tcp.www.example.org.", dns.TypeTLSA); err != nil {
		t.Fatal(err)
	}
	if after := len(e.srv.Calls("GET", "/zones")); after != before {
		t.Errorf("%d more zone look-ups for names already resolved", after-before)
	}
}

func TestZoneNotFound(t *testing.T) {
	e := setup(t, []string{"example.org", "example.net"}, func(c *Config) {
		c.Token = "scoped-token-0123456789abcdefghijklmnopq"
	})
	e.srv.AddToken(cftest.Token{Value: "scoped-token-0123456789abcdefghijklmnopq", Zones: []string{"example.org"}})
	for _, name := range []string{"_25._tcp.mail.example.com.", "_25._tcp.mail.example.net."} {
		err := e.pub.Add(ctx(t), tlsa(name, 300, 3, certA))
		want := "cloudflare: no Cloudflare zone contains " + strings.TrimSuffix(name, ".") + ": is the token scoped to it?"
		if err == nil || err.Error() != want {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	if n := len(e.srv.Records("example.net")); n != 0 {
		t.Errorf("out-of-scope zone got %d records", n)
	}
}

func TestTTL(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	e.srv.AddZone("example.com", cftest.Enterprise())
	// Automatic (1) reads as the 300 seconds it stands for.
	if _, err := e.srv.AddRecord("example.org", cftest.Record{Type: "TXT", Name: "auto", Content: `"x"`, TTL: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := e.pub.Records(ctx(t), "auto.example.org.", dns.TypeTXT)
	if err != nil || len(got) != 1 || got[0].Header().Ttl != 300 {
		t.Fatalf("automatic TTL read as %v (%v)", got, err)
	}

	before := len(e.srv.Requests())
	for _, ttl := range []uint32{0, 1, 29, 86401} {
		err := e.pub.Add(ctx(t), tlsa(owner, ttl, 3, certA))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("TTL %d is", ttl)) {
			t.Errorf("TTL %d: err = %v", ttl, err)
		}
	}
	if n := len(e.srv.Requests()); n != before {
		t.Errorf("%d requests; TTLs Cloudflare cannot store must be refused before any", n-before)
	}

	// 45 s: only Enterprise zones take it, and the API says so.
	err = e.pub.Add(ctx(t), tlsa(owner, 45, 3, certA))
	for _, s := range []string{"Cloudflare refused the record", "HTTP 400", "DNS Validation Error (1004)", "TTL must be between 60 and 86400 seconds, or 1 for Automatic. (9021)"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v lacks %q", err, s)
		}
	}
	if err := e.pub.Add(ctx(t), tlsa("_25._tcp.mail.example.com.", 45, 3, certA)); err != nil {
		t.Errorf("Enterprise zone: %v", err)
	}
	if recs := e.srv.Records("example.com"); len(recs) != 1 || recs[0].TTL != 45 {
		t.Errorf("Enterprise zone holds %+v", recs)
	}
	for _, ttl := range []uint32{60, 86400} {
		if err := e.pub.Add(ctx(t), tlsa(owner, ttl, 3, fmt.Sprintf("%064x", ttl))); err != nil {
			t.Errorf("TTL %d: %v", ttl, err)
		}
	}
}

func TestUnsupported(t *testing.T) {
	e := setup(t, []string{"example.org"}, nil)
	a := &dns.A{Hdr: dns.RR_Header{Name: "mail.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}}
	if err := e.pub.Add(ctx(t), a); err == nil || !strings.Contains(err.Error(), "A records are not supported") {
		t.Errorf("Add A: %v", err)
	}
	if _, err := e.pub.Records(ctx(t), "mail.example.org.", dns.TypeA); err == nil {
		t.Error("Records A: no error")
	}
	if err := e.pub.Add(ctx(t), tlsa(owner, 300, 3, "not hex")); err == nil {
		t.Error("TLSA with non-hex data: no error")
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Errorf("%d requests for records that cannot be published", n)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no token accepted")
	}
	_, err := New(Config{Token: "abc\x00def"})
	if err == nil || strings.Contains(err.Error(), "abc") {
		t.Errorf("token with control characters: %v", err)
	}
	if _, err := New(Config{Token: testToken, BaseURL: "ftp://x"}); err == nil {
		t.Error("bad base URL accepted")
	}
	p, err := New(Config{Token: testToken + "\n"})
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "cloudflare" || p.token != testToken || p.maxRetries != defaultMaxRetries {
		t.Errorf("defaults: %q %d", p.String(), p.maxRetries)
	}
	p, _ = New(Config{Token: testToken, BaseURL: "http://127.0.0.1:1/client/v4/", MaxRetries: -1})
	if p.String() != "cloudflare http://127.0.0.1:1/client/v4" || p.maxRetries != 0 {
		t.Errorf("String() = %q, retries %d", p.String(), p.maxRetries)
	}
}

// TestContextCancelStopsRetrying checks that a cancelled context ends the
// waits between attempts with the context's error.
func TestContextCancelStopsRetrying(t *testing.T) {
	e := setup(t, []string{"example.org"}, func(c *Config) { c.Sleep = nil })
	e.srv.Inject("GET", "/zones", cftest.Fault{Status: 503, RetryAfter: 60, Times: -1})
	c, cancel := context.WithCancel(context.Background())
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for len(e.srv.Calls("GET", "/zones")) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := e.pub.Records(c, owner, dns.TypeTLSA)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v", d)
	}
}
