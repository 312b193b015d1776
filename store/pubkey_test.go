package store

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// The public key read from a key file is the key's, in every form the
// store reads.
func TestPublicKeyOf(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	forms := map[string]struct {
		pem []byte
		key crypto.Signer
	}{
		"pkcs8 ec":    {mustPKCS8(t, ec), ec},
		"pkcs8 rsa":   {mustPKCS8(t, rk), rk},
		"pkcs8 ed":    {mustPKCS8(t, ed), ed},
		"sec1":        {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ec},
		"pkcs1":       {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), rk},
		"params+sec1": {append([]byte("-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), ec},
	}
	for name, f := range forms {
		pub, err := PublicKeyOf(f.pem)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(f.key.Public()) {
			t.Errorf("%s: another key", name)
		}
	}
	if _, err := PublicKeyOf([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil {
		t.Error("garbage gave a key")
	}
}

func mustPKCS8(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	data, err := EncodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func BenchmarkPublicKeyOf(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	data, _ := EncodeKey(k)
	b.Run("public", func(b *testing.B) {
		for b.Loop() {
			if _, err := PublicKeyOf(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseKey(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
