package rollover

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/store"
)

func selfSigned(t *testing.T, key crypto.Signer, name string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(60 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// An imported lineage serves the same key from the same files: the records
// daneroll wants are exactly the current key's, the older keys are known
// (their records are stale) and a second import is refused.
func TestImportKeepsTheServedKey(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := acme.GenerateKey("ec256")
	old1, _ := acme.GenerateKey("ec256")
	old2, _ := acme.GenerateKey("rsa2048")
	cert := selfSigned(t, key, "mail.example.org")
	since := time.Now().Add(-40 * 24 * time.Hour)
	l := Lineage{Name: "mail", Key: key, Cert: cert, Chain: cert, Directory: "https://ca.example/dir", Since: since,
		Older: []crypto.PublicKey{old1.Public(), old2.Public(), key.Public()}}
	if err := Import(st, l, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("x.toml", `
[dns.publisher.m]
type = "manual"
[[certificate]]
name = "mail"
domains = ["mail.example.org"]
publisher = "m"
key_policy = "reuse"
tlsa = ["_25._tcp.mail.example.org"]
`)
	if err != nil {
		t.Fatal(err)
	}
	e := New(Options{Config: cfg, Store: st})
	recs, err := e.WantedRecords(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := keyID(key.Public())
	if len(recs[0].Lines) != 1 || !strings.Contains(recs[0].Lines[0], "3 1 1 "+id) {
		t.Errorf("wanted records %v, want the served key's alone", recs[0].Lines)
	}
	s, err := e.load(cfg.Certificates[0])
	if err != nil {
		t.Fatal(err)
	}
	if s.Current != id || s.servedKey() != id || s.Issuers[s.LiveSet] != l.Directory || !s.CurrentSince.Equal(since.UTC()) {
		t.Errorf("state %+v", s)
	}
	if len(s.Keys) != 3 {
		t.Fatalf("keys %d, want the served key and the two older ones", len(s.Keys))
	}
	for _, k := range s.Keys {
		if k.ID != id && !k.Imported {
			t.Errorf("older key %s not marked imported", short(k.ID))
		}
	}
	// The older keys' records are not daneroll's to delete without a check.
	if ks := e.keySets(s, s.protectedKeys()); len(ks.Owned) != 1 {
		t.Errorf("owned keys %d, want only the served one", len(ks.Owned))
	}
	if _, err := e.Status(context.Background(), nil); err != nil {
		t.Errorf("status after import: %v", err)
	}
	if err := Import(st, l, time.Now()); !errors.Is(err, ErrAlreadyImported) {
		t.Errorf("second import: %v", err)
	}
}
