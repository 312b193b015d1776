package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/pebbletest"
)

var pebbleBin string

func TestMain(m *testing.M) {
	pebbletest.Main(m, testing.Short, &pebbleBin)
}

func startPebble(t *testing.T, opts pebbletest.Options) *pebbletest.Pebble {
	t.Helper()
	if pebbleBin == "" {
		t.Skip("Pebble tests skipped in -short mode")
	}
	opts.Dir = t.TempDir()
	opts.Binary = pebbleBin
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := pebbletest.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newClient(t *testing.T, directory string, hc *http.Client, accept bool) (*Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return NewClient(ctx, Options{
		Directory:  directory,
		Email:      "hostmaster@example.test",
		AcceptTOS:  accept,
		AccountDir: t.TempDir(),
		HTTPClient: hc,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func obtain(t *testing.T, c *Client, req Request) (*Certificate, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if req.Solver.Challenge == "" {
		req.Solver = Solver{Challenge: "http-01", HTTP01Listen: "127.0.0.1:0"}
	}
	return c.Obtain(ctx, req)
}

func TestObtainWithGivenKeyAndReuse(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true})
	c, err := newClient(t, p.Directory, p.HTTPClient(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, err := GenerateKey("ec256")
	if err != nil {
		t.Fatal(err)
	}
	first, err := obtain(t, c, Request{Domains: []string{"mail.example.test", "www.example.test"}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	second, err := obtain(t, c, Request{Domains: []string{"mail.example.test", "www.example.test"}, Key: key, Replaces: first.Leaf})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Leaf.RawSubjectPublicKeyInfo, second.Leaf.RawSubjectPublicKeyInfo) {
		t.Error("renewal with the same key changed the SPKI")
	}
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}
	if got := second.Leaf.DNSNames; len(got) != 2 {
		t.Errorf("names = %v", got)
	}
	if len(first.Chain) == 0 || bytes.Contains(first.Cert, first.Chain) {
		t.Error("leaf and chain not separated")
	}
	// The chain verifies up to Pebble's issuing root.
	rootPEM, err := p.IssuerRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	inter.AppendCertsFromPEM(first.Chain)
	if _, err := first.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "mail.example.test"}); err != nil {
		t.Errorf("chain does not verify: %v", err)
	}
	// A second client on the same account directory reuses the account.
	for _, kt := range []string{"ec384", "rsa2048"} {
		k, err := GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		if got := KeyTypeOf(k); got != kt {
			t.Errorf("KeyTypeOf(%s key) = %q", kt, got)
		}
		crt, err := obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: k})
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if !samePublicKey(crt.Leaf.PublicKey, k.Public()) {
			t.Errorf("%s: certificate does not carry the key", kt)
		}
	}
}

func TestAccountStoredAndReused(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true})
	dir := t.TempDir()
	opts := Options{Directory: p.Directory, Email: "a@example.test", AcceptTOS: true, AccountDir: dir, HTTPClient: p.HTTPClient()}
	c1, err := NewClient(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, accountKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("account key: %v, %v", fi, err)
	}
	// Accepting the ToS only matters for a new account: the stored one is
	// used as it is.
	opts.AcceptTOS = false
	c2, err := NewClient(context.Background(), opts)
	if err != nil {
		t.Fatalf("reloading the account: %v", err)
	}
	if c1.account.Registration.Location != c2.account.Registration.Location {
		t.Error("a second client registered a new account")
	}
}

func TestTermsOfServiceRequired(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true})
	_, err := newClient(t, p.Directory, p.HTTPClient(), false)
	var tos *TOSError
	if !errors.As(err, &tos) {
		t.Fatalf("err = %v, want *TOSError", err)
	}
	if tos.URL == "" || !strings.Contains(tos.Error(), tos.URL) || !strings.Contains(tos.Hint(), "accept_tos = true") {
		t.Errorf("TOSError = %q / %q", tos.Error(), tos.Hint())
	}
}

func TestProfileRequested(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true, Profiles: map[string]time.Duration{
		"default": 90 * 24 * time.Hour, "shortlived": 6 * 24 * time.Hour,
	}})
	c, err := newClient(t, p.Directory, p.HTTPClient(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey("ec256")
	for profile, life := range map[string]time.Duration{"shortlived": 6 * 24 * time.Hour, "default": 90 * 24 * time.Hour} {
		crt, err := obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: key, Profile: profile})
		if err != nil {
			t.Fatal(err)
		}
		got := crt.Leaf.NotAfter.Sub(crt.Leaf.NotBefore).Round(time.Hour)
		if got != life {
			t.Errorf("profile %s: lifetime %v, want %v", profile, got, life)
		}
	}
	_, err = obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: key, Profile: "nonesuch"})
	var prob *Problem
	if !errors.As(err, &prob) || prob.Type != "invalidProfile" || prob.Hint() == "" {
		t.Errorf("unknown profile: err = %v", err)
	}
}

func TestRejectedIdentifierIsClear(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true, Blocklist: []string{"blocked.example.test"}})
	c, err := newClient(t, p.Directory, p.HTTPClient(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey("ec256")
	_, err = obtain(t, c, Request{Domains: []string{"blocked.example.test"}, Key: key})
	var prob *Problem
	if !errors.As(err, &prob) || prob.Type != "rejectedIdentifier" {
		t.Fatalf("err = %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "blocked.example.test") {
		t.Errorf("message %q is not one line naming the domain", msg)
	}
}

// acmeProxy sits between lego and Pebble: it records the payloads of new
// orders and can answer them with a rate-limit problem instead.
type acmeProxy struct {
	mu         sync.Mutex // guards orders and rateLimit
	orders     []map[string]any
	rateLimit  bool
	httpServer *httptest.Server
}

func newProxy(t *testing.T, p *pebbletest.Pebble) *acmeProxy {
	target, _ := url.Parse(p.Directory)
	target.Path = ""
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = p.HTTPClient().Transport
	px := &acmeProxy{}
	var base string
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/dir") {
			return nil
		}
		// Point the directory's URLs at the proxy.
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		body = bytes.ReplaceAll(body, []byte("https://"+target.Host), []byte(base))
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	px.httpServer = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/order-plz" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var jws struct{ Payload string }
			_ = json.Unmarshal(body, &jws)
			raw, _ := base64.RawURLEncoding.DecodeString(jws.Payload)
			var payload map[string]any
			_ = json.Unmarshal(raw, &payload)
			px.mu.Lock()
			px.orders = append(px.orders, payload)
			limited := px.rateLimit
			px.mu.Unlock()
			if limited {
				w.Header().Set("Content-Type", "application/problem+json")
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders (5) for this account in the last 3h0m0s","status":429}`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	base = px.httpServer.URL
	t.Cleanup(px.httpServer.Close)
	return px
}

func (px *acmeProxy) lastOrder() map[string]any {
	px.mu.Lock()
	defer px.mu.Unlock()
	if len(px.orders) == 0 {
		return nil
	}
	return px.orders[len(px.orders)-1]
}

func TestARIWindowAndReplaces(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true})
	px := newProxy(t, p)
	c, err := newClient(t, px.httpServer.URL+"/dir", px.httpServer.Client(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey("ec256")
	first, err := obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := px.lastOrder()["replaces"]; ok {
		t.Error("a first order sent replaces")
	}
	ctx := context.Background()
	info, err := c.RenewalInfo(ctx, first.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Window.Start.After(first.Leaf.NotBefore) || !info.Window.End.Before(first.Leaf.NotAfter) {
		t.Errorf("default window %v not inside the lifetime", info.Window)
	}
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	end := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := p.SetRenewalWindow(ctx, first.Cert, start, end); err != nil {
		t.Fatal(err)
	}
	info, err = c.RenewalInfo(ctx, first.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Window.Start.Equal(start) || !info.Window.End.Equal(end) {
		t.Fatalf("window = %v, want %v–%v", info.Window, start, end)
	}
	if _, err := obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: key, Replaces: first.Leaf}); err != nil {
		t.Fatal(err)
	}
	got, _ := px.lastOrder()["replaces"].(string)
	if got == "" || !strings.Contains(got, ".") {
		t.Errorf("renewal order replaces = %q, want the ARI cert ID", got)
	}
	// Replacing the same certificate again is refused by the CA
	// (alreadyReplaced); Obtain orders afresh instead of failing.
	if _, err := obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: key, Replaces: first.Leaf}); err != nil {
		t.Fatalf("second replacement: %v", err)
	}
	if _, ok := px.lastOrder()["replaces"]; ok {
		t.Error("the retry after alreadyReplaced still sent replaces")
	}
}

func TestRateLimitIsTyped(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true})
	px := newProxy(t, p)
	c, err := newClient(t, px.httpServer.URL+"/dir", px.httpServer.Client(), true)
	if err != nil {
		t.Fatal(err)
	}
	px.mu.Lock()
	px.rateLimit = true
	px.mu.Unlock()
	key, _ := GenerateKey("ec256")
	_, err = obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: key})
	if !IsRateLimit(err) {
		t.Fatalf("err = %v, want a rate limit", err)
	}
	var prob *Problem
	errors.As(err, &prob)
	if prob.RetryAfter != time.Hour {
		t.Errorf("RetryAfter = %v", prob.RetryAfter)
	}
	if msg := err.Error(); !strings.Contains(msg, "rate limited by the CA: too many new orders") || !strings.Contains(msg, "retry after 1h0m0s") {
		t.Errorf("message = %q", msg)
	}
}

// aServer answers every A question with 127.0.0.1 over TCP and UDP, as
// Pebble's validation authority needs to reach the http-01 solver.
func aServer(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 60 IN A 127.0.0.1")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: l, Handler: h}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return l.Addr().String()
}

func TestHTTP01ValidatedForReal(t *testing.T) {
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startPebble(t, pebbletest.Options{DNSServer: aServer(t), HTTPPort: port})
	c, err := newClient(t, p.Directory, p.HTTPClient(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey("ec256")
	crt, err := obtain(t, c, Request{Domains: []string{"web.example.test"}, Key: key,
		Solver: Solver{Challenge: "http-01", HTTP01Listen: "127.0.0.1:" + strconv.Itoa(port)}})
	if err != nil {
		t.Fatal(err)
	}
	if crt.Leaf.DNSNames[0] != "web.example.test" {
		t.Errorf("names = %v", crt.Leaf.DNSNames)
	}
	// With nobody answering on the port, validation fails with a clear,
	// typed problem.
	other, _ := pebbletest.FreePort()
	_, err = obtain(t, c, Request{Domains: []string{"web2.example.test"}, Key: key,
		Solver: Solver{Challenge: "http-01", HTTP01Listen: "127.0.0.1:" + strconv.Itoa(other)}})
	var prob *Problem
	if !errors.As(err, &prob) || prob.Type != "connection" {
		t.Fatalf("err = %v, want a connection problem", err)
	}
}

func TestWebrootWritesToken(t *testing.T) {
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	// A web server serving the webroot, as nginx would.
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(root))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p := startPebble(t, pebbletest.Options{DNSServer: aServer(t), HTTPPort: port})
	c, err := newClient(t, p.Directory, p.HTTPClient(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey("ec256")
	if _, err := obtain(t, c, Request{Domains: []string{"web.example.test"}, Key: key,
		Solver: Solver{Challenge: "http-01", HTTP01Webroot: root}}); err != nil {
		t.Fatal(err)
	}
	// The token file is removed after validation.
	entries, _ := os.ReadDir(filepath.Join(root, ".well-known", "acme-challenge"))
	if len(entries) != 0 {
		t.Errorf("token files left behind: %v", entries)
	}
}

func TestPickRenewal(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w := Window{Start: start, End: start.Add(48 * time.Hour)}
	half := func(n int64) int64 { return n / 2 }
	if got := PickRenewal(w, time.Time{}, half); !got.Equal(start.Add(24 * time.Hour)) {
		t.Errorf("pick = %v", got)
	}
	kept := start.Add(3 * time.Hour)
	if got := PickRenewal(w, kept, half); !got.Equal(kept) {
		t.Errorf("a time inside the window was re-rolled: %v", got)
	}
	moved := Window{Start: start.Add(-72 * time.Hour), End: start.Add(-48 * time.Hour)}
	if got := PickRenewal(moved, kept, half); got.Before(moved.Start) || got.After(moved.End) {
		t.Errorf("a time outside a moved window was kept: %v", got)
	}
	for range 100 {
		if got := PickRenewal(w, time.Time{}, nil); got.Before(w.Start) || got.After(w.End) {
			t.Fatalf("random pick %v outside %v", got, w)
		}
	}
}

func TestTLSALPN01ValidatedForReal(t *testing.T) {
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startPebble(t, pebbletest.Options{DNSServer: aServer(t), TLSPort: port})
	c, err := newClient(t, p.Directory, p.HTTPClient(), true)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey("ec384")
	crt, err := obtain(t, c, Request{Domains: []string{"alpn.example.test"}, Key: key,
		Solver: Solver{Challenge: "tls-alpn-01", TLSALPN01Listen: "127.0.0.1:" + strconv.Itoa(port)}})
	if err != nil {
		t.Fatal(err)
	}
	if crt.Leaf.DNSNames[0] != "alpn.example.test" || !samePublicKey(crt.Leaf.PublicKey, key.Public()) {
		t.Errorf("certificate %v", crt.Leaf.DNSNames)
	}
}
