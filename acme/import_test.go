package acme

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/store"
)

// countingTransport counts the requests to one URL.
type countingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex // guards url and n
	url  string
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if r.Method == http.MethodPost && r.URL.String() == c.url {
		c.n++
	}
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *countingTransport) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestImportAccount registers an account the way another client (certbot)
// does, with an RSA key, imports it into a fresh directory and checks
// that a client built on that directory uses it: no new-account request
// reaches the CA, even with accept_tos off, and orders go through.
func TestImportAccount(t *testing.T) {
	p := startPebble(t, pebbletest.Options{AlwaysValid: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var dir struct {
		NewAccount string `json:"newAccount"`
	}
	resp, err := p.HTTPClient().Get(p.Directory)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&dir)
	resp.Body.Close()
	if err != nil || dir.NewAccount == "" {
		t.Fatalf("directory: %v %+v", err, dir)
	}
	ct := &countingTransport{next: p.HTTPClient().Transport, url: dir.NewAccount}
	hc := &http.Client{Transport: ct, Timeout: time.Minute}

	// The other client's account: an RSA key, as certbot makes.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	pemKey, _ := store.EncodeKey(key)
	if err := os.WriteFile(filepath.Join(otherDir, accountKeyFile), pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := NewClient(ctx, Options{Directory: p.Directory, Email: "a@example.test", AcceptTOS: true, AccountDir: otherDir, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	location := other.account.Registration.Location
	if ct.count() != 1 || location == "" {
		t.Fatalf("registration: %d new-account requests, location %q", ct.count(), location)
	}

	imported := t.TempDir()
	if err := ImportAccount(imported, "a@example.test", key, location); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(imported, accountKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	c, err := NewClient(ctx, Options{Directory: p.Directory, Email: "a@example.test", AcceptTOS: false, AccountDir: imported, HTTPClient: hc})
	if err != nil {
		t.Fatalf("client on the imported account: %v", err)
	}
	if got := c.account.Registration.Location; got != location {
		t.Errorf("account %s, want %s", got, location)
	}
	crtKey, _ := GenerateKey("ec256")
	if _, err := obtain(t, c, Request{Domains: []string{"mail.example.test"}, Key: crtKey}); err != nil {
		t.Fatalf("order on the imported account: %v", err)
	}
	if n := ct.count(); n != 1 {
		t.Errorf("%d new-account requests, want only the other client's", n)
	}

	// Importing the same account again changes nothing; another one is
	// refused, by key or by URL.
	before, _ := os.ReadFile(filepath.Join(imported, accountJSONFile))
	if err := ImportAccount(imported, "a@example.test", key, location); err != nil {
		t.Errorf("importing again: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(imported, accountJSONFile)); string(after) != string(before) {
		t.Error("importing again rewrote account.json")
	}
	otherKey, _ := GenerateKey("ec256")
	if err := ImportAccount(imported, "a@example.test", otherKey, location); err == nil || !strings.Contains(err.Error(), "another account's key") {
		t.Errorf("another key: %v", err)
	}
	if err := ImportAccount(imported, "a@example.test", key, location+"x"); err == nil || !strings.Contains(err.Error(), "holds account "+location) {
		t.Errorf("another URL: %v", err)
	}
	if err := ImportAccount(t.TempDir(), "", key, "http://ca.example/acct/1"); err == nil {
		t.Error("an http account URL was accepted")
	}
}
