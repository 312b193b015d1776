package tlsservice

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/daneroll/daneroll/services"
)

// writeSet writes a set directory and returns its key's SPKI digest.
func writeSet(t *testing.T, dir string) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mail.example.test"},
		DNSNames: []string{"mail.example.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "privkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	os.WriteFile(filepath.Join(dir, "fullchain.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	c, _ := x509.ParseCertificate(der)
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

func TestReloadFollowsTheLiveSymlink(t *testing.T) {
	dir := t.TempDir()
	a := writeSet(t, filepath.Join(dir, "a"))
	b := writeSet(t, filepath.Join(dir, "b"))
	live := filepath.Join(dir, "live")
	if err := os.Symlink("a", live); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"smtp", "tls"} {
		s, err := Start(Options{Addr: "127.0.0.1:0", LiveDir: live, Protocol: proto, Hostname: "mail.example.test"})
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(s.Addr())
		ep, _ := services.ParseEndpoint(proto + "://mail.example.test:" + port + "?connect=127.0.0.1")
		probe := func() string {
			t.Helper()
			res, err := services.Probe(context.Background(), ep, services.ProbeOptions{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(res.Chain[0].RawSubjectPublicKeyInfo)
			return hex.EncodeToString(sum[:])
		}
		if got := probe(); got != a || s.Served() != a {
			t.Fatalf("%s: serves %s, want %s", proto, got, a)
		}
		// Switching the symlink changes nothing until the reload.
		os.Remove(live)
		os.Symlink("b", live)
		if got := probe(); got != a {
			t.Errorf("%s: served the new set before a reload", proto)
		}
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := probe(); got != b {
			t.Errorf("%s: after reload serves %s, want %s", proto, got, b)
		}
		// A broken set keeps the old certificate.
		os.Remove(live)
		os.Symlink("missing", live)
		if err := s.Reload(); err == nil {
			t.Error("reload of a missing set succeeded")
		}
		if got := probe(); got != b {
			t.Errorf("%s: a failed reload changed the served key", proto)
		}
		if tl := s.Timeline(); len(tl) != 2 || tl[0].SPKI != a || tl[1].SPKI != b || !tl[1].At.After(tl[0].At) {
			t.Errorf("timeline = %+v", tl)
		}
		s.Close()
		os.Remove(live)
		os.Symlink("a", live)
	}
}
