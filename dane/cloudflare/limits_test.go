package cloudflare

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

func TestNewRefusesPlainHTTP(t *testing.T) {
	for _, base := range []string{
		"http://api.cloudflare.com/client/v4",
		"http://192.0.2.1:8080/client/v4",
		"http://[2001:db8::1]/client/v4",
		"http://localhost.example.org/client/v4",
	} {
		_, err := New(Config{Token: testToken, BaseURL: base})
		if err == nil {
			t.Errorf("%s: accepted", base)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "in clear") || !strings.Contains(msg, "use https") || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q should say, on one line, why and to use https", base, msg)
		}
	}
	for _, base := range []string{
		"https://api.example.org/client/v4",
		"http://127.0.0.1:8080/client/v4",
		"http://127.1.2.3/client/v4",
		"http://localhost:8080/client/v4",
		"http://LOCALHOST/client/v4",
		"http://[::1]:8080/client/v4",
	} {
		if _, err := New(Config{Token: testToken, BaseURL: base}); err != nil {
			t.Errorf("%s: %v", base, err)
		}
	}
}

// countingTransport counts the body bytes the client reads.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex // guards n
	n    int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, t: c}
	}
	return resp, err
}

func (c *countingTransport) read() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type countingBody struct {
	io.ReadCloser
	t *countingTransport
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.t.mu.Lock()
	b.t.n += int64(n)
	b.t.mu.Unlock()
	return n, err
}

func TestOversizedAnswerRefused(t *testing.T) {
	// A success answer that does not end (within four times the limit,
	// so that the test ends even when nothing stops the client).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if _, err := io.WriteString(w, `{"success":true,"errors":[],"messages":[],"result":[`); err != nil {
			return
		}
		zone := []byte(`{"id":"0123456789abcdef0123456789abcdef","name":"example.org","status":"active"},`)
		for written := 0; written < 4*maxAnswerBody; written += len(zone) {
			if _, err := w.Write(zone); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	counter := &countingTransport{base: srv.Client().Transport}
	var s sleeps
	p, err := New(Config{Token: testToken, BaseURL: srv.URL + "/client/v4",
		HTTPClient: &http.Client{Transport: counter}, Sleep: s.sleep})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Records(context.Background(), owner, dns.TypeTLSA)
	if err == nil || !strings.Contains(err.Error(), "larger than 8 MiB") {
		t.Fatalf("err = %v, want one saying the answer was too large", err)
	}
	// The limit plus what one read may bring beyond it.
	if n := counter.read(); n < maxAnswerBody || n > maxAnswerBody+64<<10 {
		t.Errorf("the client read %d bytes of the answer, want about %d", n, maxAnswerBody)
	}
	if n := len(s.get()); n != 0 {
		t.Errorf("retried %d times: the same answer would come again", n)
	}
}

func TestAnswerAtTheLimit(t *testing.T) {
	body := strings.NewReader(strings.Repeat("x", 100))
	b := &limitedBody{rc: io.NopCloser(body), limit: 100, left: 100}
	if got, err := io.ReadAll(b); err != nil || len(got) != 100 {
		t.Errorf("a body of exactly the limit: %d bytes, %v", len(got), err)
	}
	b = &limitedBody{rc: io.NopCloser(strings.NewReader(strings.Repeat("x", 101))), limit: 100, left: 100}
	if _, err := io.ReadAll(b); err == nil {
		t.Error("a body one byte over the limit was accepted")
	}
}

func TestRedactAnyCase(t *testing.T) {
	p := &Publisher{token: "Secret-Token-0123456789"}
	for _, in := range []string{
		"token Secret-Token-0123456789 refused",
		"token SECRET-TOKEN-0123456789 refused",
		"token secret-token-0123456789 refused",
		"token sEcReT-tOkEn-0123456789 refused",
	} {
		if got, want := p.redactString(in), "token [redacted] refused"; got != want {
			t.Errorf("redactString(%q) = %q, want %q", in, got, want)
		}
	}
	// Every occurrence, next to multi-byte text whose lower case has
	// another length (İ), which must not shift what is cut.
	in := "İ secret-token-0123456789SECRET-TOKEN-0123456789 İ Secret-Token-012345678"
	if got, want := p.redactString(in), "İ [redacted][redacted] İ Secret-Token-012345678"; got != want {
		t.Errorf("redactString(%q) = %q, want %q", in, got, want)
	}
	if got := (&Publisher{}).redactString("no token"); got != "no token" {
		t.Errorf("without a token: %q", got)
	}
}
