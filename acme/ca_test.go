package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	legolog "github.com/go-acme/lego/v5/log"

	"github.com/daneroll/daneroll/internal/pebbletest"
)

// logBuffer is an io.Writer that handlers of several goroutines may share.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureLego sends lego's own log, at debug level, to a buffer for the
// rest of the test.
func captureLego(t *testing.T) *logBuffer {
	t.Helper()
	buf := &logBuffer{}
	prev := legolog.Default()
	legolog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { legolog.SetDefault(prev) })
	return buf
}

func TestExternalAccountBinding(t *testing.T) {
	// Bytes whose base64 differs between the URL and the standard
	// alphabet ("-_" against "+/") and needs padding: the key as the CA
	// hands it out, and as it may have been pasted.
	mac := bytes.Repeat([]byte{0xfb, 0xff}, 16)
	urlKey := base64.RawURLEncoding.EncodeToString(mac)
	stdKey := base64.StdEncoding.EncodeToString(mac)
	if urlKey == strings.TrimRight(stdKey, "=") {
		t.Fatal("the test key does not tell the alphabets apart")
	}
	wrongKey := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	const kid = "kid-daneroll-1"
	p := startPebble(t, pebbletest.Options{AlwaysValid: true, EABRequired: true, EABKeys: map[string]string{kid: urlKey}})

	legoLog := captureLego(t)
	ourLog := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(ourLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	opts := func(eab *EAB) Options {
		return Options{Directory: p.Directory, Email: "hostmaster@example.test", AcceptTOS: true, AccountDir: dir,
			HTTPClient: p.HTTPClient(), Logger: logger, EAB: eab}
	}
	fixed := func(key string) func() (string, error) { return func() (string, error) { return key, nil } }
	register := func(eab *EAB) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := NewClient(ctx, opts(eab))
		return err
	}
	var errs []error

	// Without a binding the CA refuses, and the hint names the keys.
	err := register(nil)
	errs = append(errs, err)
	var prob *Problem
	if !errors.As(err, &prob) || prob.Type != "externalAccountRequired" {
		t.Fatalf("without EAB: err = %v, want externalAccountRequired", err)
	}
	var h interface{ Hint() string }
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), "eab_kid") || !strings.Contains(h.Hint(), "eab_hmac_key_file") {
		t.Errorf("without EAB: hint %q does not name eab_kid and eab_hmac_key_file", prob.Hint())
	}

	// A key that is not base64 is refused before the CA is asked.
	err = register(&EAB{KID: kid, HMACKey: fixed("not a key!*")})
	errs = append(errs, err)
	var ke *EABKeyError
	if !errors.As(err, &ke) || !strings.Contains(err.Error(), "not base64url") || !errors.As(err, &h) || !strings.Contains(h.Hint(), "eab_hmac_key_file") {
		t.Errorf("undecodable key: err = %v", err)
	}
	if strings.Contains(err.Error(), "not a key") {
		t.Errorf("the error quotes the key: %v", err)
	}
	// So is one that cannot be read, with the reader's reason.
	err = register(&EAB{KID: kid, HMACKey: func() (string, error) { return "", os.ErrPermission }})
	errs = append(errs, err)
	if !errors.As(err, &ke) || !errors.Is(err, os.ErrPermission) {
		t.Errorf("unreadable key: err = %v", err)
	}

	// The wrong key: the CA refuses the binding, and the hint says so.
	err = register(&EAB{KID: kid, HMACKey: fixed(wrongKey)})
	errs = append(errs, err)
	if !errors.As(err, &prob) || prob.Type != "unauthorized" || !strings.Contains(prob.Hint(), "External Account Binding") {
		t.Fatalf("wrong key: err = %v (hint %q)", err, prob.Hint())
	}
	if !strings.Contains(err.Error(), kid) {
		t.Errorf("wrong key: %q does not name the key ID", err)
	}
	// An unknown key ID likewise.
	err = register(&EAB{KID: "kid-unknown", HMACKey: fixed(urlKey)})
	errs = append(errs, err)
	if !errors.As(err, &prob) || prob.Type != "unauthorized" {
		t.Errorf("unknown key ID: err = %v", err)
	}

	// The right key, pasted in standard base64 with padding and a
	// newline, registers the account; it then issues.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := NewClient(ctx, opts(&EAB{KID: kid, HMACKey: fixed(stdKey + "\n")}))
	if err != nil {
		t.Fatalf("right key: %v", err)
	}
	key, _ := GenerateKey("ec256")
	if _, err := obtain(t, c, Request{Domains: []string{"eab.example.test"}, Key: key}); err != nil {
		t.Fatalf("issuing on the bound account: %v", err)
	}
	// The stored account needs no binding: the key is not even read.
	c2, err := NewClient(ctx, opts(&EAB{KID: kid, HMACKey: func() (string, error) {
		t.Error("the MAC key was read for an account that exists")
		return "", os.ErrPermission
	}}))
	if err != nil {
		t.Fatalf("reusing the bound account: %v", err)
	}
	if c2.account.Registration.Location != c.account.Registration.Location {
		t.Error("a second client registered a new account")
	}

	// The key appears in no error and no log line, in any encoding.
	out := []string{ourLog.String(), legoLog.String()}
	for _, e := range errs {
		t.Log(e)
		out = append(out, e.Error())
		if errors.As(e, &h) {
			out = append(out, h.Hint())
		}
	}
	for _, f := range []string{"key.pem", "account.json"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		out = append(out, string(data))
	}
	for _, s := range out {
		for _, k := range []string{urlKey, strings.TrimRight(stdKey, "="), wrongKey, string(mac)} {
			if strings.Contains(s, k) {
				t.Errorf("the MAC key appears in %q", s)
			}
		}
	}
	if !strings.Contains(legoLog.String(), "EAB") {
		t.Error("lego's log was not captured: the check above proves nothing")
	}
}

func TestDecodeMACKey(t *testing.T) {
	mac := []byte{0xfb, 0xff, 0xfe, 0x01}
	for _, in := range []string{
		base64.RawURLEncoding.EncodeToString(mac),
		base64.URLEncoding.EncodeToString(mac),
		base64.StdEncoding.EncodeToString(mac) + "\n",
		base64.RawStdEncoding.EncodeToString(mac),
		"  " + base64.RawURLEncoding.EncodeToString(mac) + "\r\n",
	} {
		got, err := decodeMACKey(in)
		if err != nil || !bytes.Equal(got, mac) {
			t.Errorf("decodeMACKey(%q) = %x, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "\n", "a", "abc$", "++--"} {
		if _, err := decodeMACKey(in); err == nil {
			t.Errorf("decodeMACKey(%q) accepted", in)
		}
	}
}

// rootCN is the common name of Pebble's root n.
func rootCN(t *testing.T, p *pebbletest.Pebble, n int) string {
	t.Helper()
	data, err := p.Root(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("root %d: no PEM", n)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.Subject.CommonName
}

func TestPreferredChain(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true, Env: []string{"PEBBLE_ALTERNATE_ROOTS=2"}})
	roots := []string{rootCN(t, p, 0), rootCN(t, p, 1), rootCN(t, p, 2)}
	if roots[0] == roots[1] || roots[1] == roots[2] {
		t.Fatalf("roots are not distinct: %q", roots)
	}
	logs := &logBuffer{}
	client := func(preferred string) *Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := NewClient(ctx, Options{Directory: p.Directory, AcceptTOS: true, AccountDir: t.TempDir(), HTTPClient: p.HTTPClient(),
			Logger: slog.New(slog.NewTextHandler(logs, nil)), PreferredChain: preferred})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key, _ := GenerateKey("ec256")
	endsAt := func(c *Client, preferred string) string {
		t.Helper()
		crt, err := obtain(t, c, Request{Domains: []string{"chain.example.test"}, Key: key, PreferredChain: preferred})
		if err != nil {
			t.Fatal(err)
		}
		// The chain is complete: it verifies up to the root it names.
		data, err := p.Root(context.Background(), indexOf(roots, topIssuer(crt.Chain)))
		if err != nil {
			t.Fatal(err)
		}
		pool, inter := x509.NewCertPool(), x509.NewCertPool()
		pool.AppendCertsFromPEM(data)
		inter.AppendCertsFromPEM(crt.Chain)
		if _, err := crt.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: "chain.example.test"}); err != nil {
			t.Errorf("chain ending at %q does not verify: %v", topIssuer(crt.Chain), err)
		}
		return topIssuer(crt.Chain)
	}

	plain := client("")
	if got := endsAt(plain, ""); got != roots[0] {
		t.Errorf("no preference: chain ends at %q, want the default %q", got, roots[0])
	}
	if got := endsAt(plain, roots[1]); got != roots[1] {
		t.Errorf("preferring %q: chain ends at %q", roots[1], got)
	}
	// The client's default applies when the request names none, and a
	// request's own wins over it.
	withDefault := client(roots[2])
	if got := endsAt(withDefault, ""); got != roots[2] {
		t.Errorf("client default %q: chain ends at %q", roots[2], got)
	}
	if got := endsAt(withDefault, roots[1]); got != roots[1] {
		t.Errorf("request's %q over the client's: chain ends at %q", roots[1], got)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warnings for chains that matched:\n%s", logs)
	}
	// A name no chain ends at gives the default chain, and a warning.
	if got := endsAt(plain, "ISRG Root X1"); got != roots[0] {
		t.Errorf("unmatched preference: chain ends at %q, want the default %q", got, roots[0])
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, `preferred_chain="ISRG Root X1"`) || !strings.Contains(l, roots[0]) {
		t.Errorf("no warning naming the preference and the chain used:\n%s", l)
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return 0
}
