package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newSet makes a set whose self-signed certificate carries key.
func newSet(t testing.TB, key crypto.Signer, serial int64) *Set {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "mail.example.test"},
		DNSNames:     []string{"mail.example.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Set{
		Key:   kp,
		Cert:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Chain: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWriteFileAtomicAndModes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(p); string(data) != "two" {
		t.Errorf("content = %q", data)
	}
	if m := mode(t, p); m != 0o644 {
		t.Errorf("mode = %o", m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	// A write that cannot complete leaves the old file untouched: here the
	// rename fails because the target has become a directory's name.
	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 { // root writes anyway
		if err := WriteFile(p, []byte("three"), 0o644); err == nil {
			t.Error("write into a read-only directory succeeded")
		}
		if data, _ := os.ReadFile(p); string(data) != "two" {
			t.Errorf("a failed write changed the file to %q", data)
		}
	}
	os.Chmod(dir, 0o700)
}

func TestKeysArePrivate(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypto.Signer{newKey(t), mustRSA(t)} {
		if err := s.WriteKey("mail", Next, k); err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadKey("mail", Next)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := x509.MarshalPKIXPublicKey(k.Public())
		b, _ := x509.MarshalPKIXPublicKey(got.Public())
		if !bytes.Equal(a, b) {
			t.Error("key changed on the way through the store")
		}
	}
	if m := mode(t, s.KeyPath("mail", Next)); m != 0o600 {
		t.Errorf("key mode = %o", m)
	}
	for _, d := range []string{s.Dir(), filepath.Join(s.Dir(), "keys"), filepath.Join(s.Dir(), "keys", "mail")} {
		if m := mode(t, d); m != 0o700 {
			t.Errorf("%s mode = %o", d, m)
		}
	}
	if _, err := s.ReadKey("mail", Current); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing key: %v", err)
	}
}

func mustRSA(t *testing.T) crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseKeyForms(t *testing.T) {
	ec := newKey(t).(*ecdsa.PrivateKey)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	rk := mustRSA(t).(*rsa.PrivateKey)
	forms := map[string][]byte{
		"sec1":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		"pkcs1": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		// certbot's privkey.pem may carry EC parameters before the key.
		"params+sec1": append([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...),
	}
	for name, data := range forms {
		if _, err := ParseKey(data); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseKey([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")); err == nil {
		t.Error("a certificate parsed as a key")
	}
}

func TestLockContention(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lock()
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("second lock: %v", err)
	}
	if le.PID != os.Getpid() {
		t.Errorf("holder pid = %d, want %d", le.PID, os.Getpid())
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := s.Lock()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

func TestInstallSwitchRollback(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if set, err := s.Live("mail"); set != nil || err != nil {
		t.Fatalf("Live before install = %v, %v", set, err)
	}
	a, b := newSet(t, newKey(t), 1), newSet(t, newKey(t), 2)
	ida, err := s.Install("mail", a)
	if err != nil {
		t.Fatal(err)
	}
	idb, err := s.Install("mail", b)
	if err != nil {
		t.Fatal(err)
	}
	if ida != "0001" || idb != "0002" {
		t.Errorf("ids = %s, %s", ida, idb)
	}
	if err := s.Switch("mail", idb); err != nil {
		t.Fatal(err)
	}
	live, err := s.Live("mail")
	if err != nil || live.ID != idb || !bytes.Equal(live.Cert, b.Cert) {
		t.Fatalf("live = %+v, %v", live, err)
	}
	if err := s.Switch("mail", ida); err != nil {
		t.Fatal(err)
	}
	if id, _ := s.LiveID("mail"); id != ida {
		t.Errorf("after rollback live = %s", id)
	}
	full, err := os.ReadFile(filepath.Join(s.LiveDir("mail"), FileFullChain))
	if err != nil || !bytes.Equal(full, a.FullChain()) {
		t.Errorf("fullchain.pem through the live path = %q, %v", full, err)
	}
	for f, want := range map[string]os.FileMode{FilePrivKey: 0o600, FileCombined: 0o600, FileCert: 0o644} {
		if m := mode(t, filepath.Join(s.LiveDir("mail"), f)); m != want {
			t.Errorf("%s mode = %o, want %o", f, m, want)
		}
	}
	if m := mode(t, filepath.Join(s.Dir(), "archive", "mail", ida)); m != 0o700 {
		t.Errorf("set directory mode = %o", m)
	}
	if err := s.Switch("mail", "0009"); err == nil {
		t.Error("switch to a missing set succeeded")
	}
	if id, _ := s.LiveID("mail"); id != ida {
		t.Errorf("a failed switch changed the live set to %s", id)
	}
	// A set whose certificate is for another key is refused.
	mixed := newSet(t, newKey(t), 4)
	mixed.Key = a.Key
	if _, err := s.Install("mail", mixed); err == nil || !strings.Contains(err.Error(), "not for the key") {
		t.Errorf("installed a key with another key's certificate: %v", err)
	}
	// A set whose key is not a key is refused before anything is written.
	bad := newSet(t, newKey(t), 3)
	bad.Key = []byte("junk")
	if _, err := s.Install("mail", bad); err == nil {
		t.Error("installed a set without a key")
	}
	if ids, _ := s.Sets("mail"); len(ids) != 2 {
		t.Errorf("sets = %v", ids)
	}
}

// pairOK reports whether the PEM key and the first certificate in chain
// belong together.
func pairOK(key, chain []byte) bool {
	k, err := ParseKey(key)
	if err != nil {
		return false
	}
	b, _ := pem.Decode(chain)
	if b == nil {
		return false
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return false
	}
	kb, _ := x509.MarshalPKIXPublicKey(k.Public())
	return bytes.Equal(kb, c.RawSubjectPublicKeyInfo)
}

// TestReaderNeverSeesMixedSet switches between sets with different keys as
// fast as it can while readers read the live files the two ways a careful
// service does: through one directory handle, and from combined.pem.
func TestReaderNeverSeesMixedSet(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 4 {
		id, err := s.Install("mail", newSet(t, newKey(t), int64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.Switch("mail", ids[0]); err != nil {
		t.Fatal(err)
	}
	var (
		stop        atomic.Bool
		reads, bad  atomic.Int64
		wg          sync.WaitGroup
		live        = s.LiveDir("mail")
		readDirOnce = func() bool {
			root, err := os.OpenRoot(live)
			if err != nil {
				return false
			}
			defer root.Close()
			key, err1 := root.ReadFile(FilePrivKey)
			full, err2 := root.ReadFile(FileFullChain)
			return err1 == nil && err2 == nil && pairOK(key, full)
		}
		readCombined = func() bool {
			data, err := os.ReadFile(filepath.Join(live, FileCombined))
			if err != nil {
				return false
			}
			return pairOK(data, data[bytes.Index(data, []byte("-----BEGIN CERTIFICATE")):])
		}
	)
	for _, read := range []func() bool{readDirOnce, readCombined} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				reads.Add(1)
				if !read() {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 400 {
		if err := s.Switch("mail", ids[i%len(ids)]); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if reads.Load() < 10 {
		t.Fatalf("readers only managed %d reads", reads.Load())
	}
	if bad.Load() != 0 {
		t.Errorf("%d of %d reads saw a key and a certificate from different sets (or no file)", bad.Load(), reads.Load())
	}
}

func TestSetIDsSortNumerically(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"9999", "10000", "0002"} {
		if err := os.MkdirAll(filepath.Join(s.Dir(), "archive", "mail", id), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ids, _ := s.Sets("mail")
	if strings.Join(ids, ",") != "0002,9999,10000" {
		t.Errorf("ids = %v", ids)
	}
	id, err := s.Install("mail", newSet(t, newKey(t), 1))
	if err != nil || id != "10001" {
		t.Errorf("next id = %q, %v", id, err)
	}
	if err := s.RemoveKey("other", Next); err != nil {
		t.Errorf("removing a key of a certificate without keys: %v", err)
	}
}

func TestJSON(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ A int }
	if ok, err := s.ReadJSON(JournalPath("mail"), &v); ok || err != nil {
		t.Fatalf("ReadJSON of a missing file = %v, %v", ok, err)
	}
	v.A = 7
	if err := s.WriteJSON(JournalPath("mail"), v); err != nil {
		t.Fatal(err)
	}
	v.A = 0
	if ok, err := s.ReadJSON(JournalPath("mail"), &v); !ok || err != nil || v.A != 7 {
		t.Fatalf("ReadJSON = %v, %v, %+v", ok, err, v)
	}
	if m := mode(t, filepath.Join(s.Dir(), JournalPath("mail"))); m != 0o600 {
		t.Errorf("journal mode = %o", m)
	}
}
