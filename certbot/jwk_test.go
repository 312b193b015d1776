package certbot

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"
)

func TestJWK(t *testing.T) {
	// RSA: certbot's own format is exercised by the real tree; here the
	// refusals.
	for _, tc := range []struct{ in, want string }{
		{`{}`, "not a JSON web key: no kty"},
		{`{"kty":"oct","k":"AAAA"}`, `key type "oct" is not supported (want RSA or EC)`},
		{`{"kty":"RSA","n":"AQAB","e":"AQAB"}`, "RSA key: d is missing"},
		{`{"kty":"EC","crv":"P-192","d":"AA"}`, `EC key: curve "P-192" is not supported`},
		{`[`, "not a JSON web key: unexpected end of JSON input"},
	} {
		if _, err := parseJWK([]byte(tc.in)); err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %s", tc.in, err, tc.want)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := parseJWK(rsaJWK(small)); err == nil || !strings.Contains(err.Error(), "1024-bit modulus") {
		t.Errorf("1024-bit key: %v", err)
	}
	good, _ := rsa.GenerateKey(rand.Reader, 2048)
	k, err := parseJWK(rsaJWK(good))
	if err != nil || !good.Equal(k) {
		t.Errorf("RSA round trip: %v", err)
	}
	bad := *good
	bad.D = new(big.Int).Add(good.D, big.NewInt(1))
	if _, err := parseJWK(rsaJWK(&bad)); err == nil {
		t.Error("an RSA key with a wrong d was accepted")
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	k, err = parseJWK(ecJWK(t, ec, false))
	if err != nil || !ec.Equal(k) {
		t.Errorf("EC round trip: %v", err)
	}
	if _, err := parseJWK(ecJWK(t, ec, true)); err == nil || !strings.Contains(err.Error(), "not the public key of d") {
		t.Errorf("EC with another public point: %v", err)
	}
}

func b64(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }

// rsaJWK writes a key as certbot's private_key.json does.
func rsaJWK(k *rsa.PrivateKey) []byte {
	k.Precompute()
	data, _ := json.Marshal(map[string]string{"kty": "RSA", "n": b64(k.N), "e": b64(big.NewInt(int64(k.E))), "d": b64(k.D),
		"p": b64(k.Primes[0]), "q": b64(k.Primes[1]), "dp": b64(k.Precomputed.Dp), "dq": b64(k.Precomputed.Dq), "qi": b64(k.Precomputed.Qinv)})
	return data
}

// ecJWK writes an EC key as a JWK; wrongPoint puts another key's point.
func ecJWK(t *testing.T, k *ecdsa.PrivateKey, wrongPoint bool) []byte {
	t.Helper()
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if wrongPoint {
		other, _ := ecdsa.GenerateKey(k.Curve, rand.Reader)
		pub, _ = other.PublicKey.Bytes()
	}
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	size := (k.Curve.Params().BitSize + 7) / 8
	enc := base64.RawURLEncoding.EncodeToString
	data, _ := json.Marshal(map[string]string{"kty": "EC", "crv": k.Curve.Params().Name, "x": enc(pub[1 : 1+size]), "y": enc(pub[1+size:]), "d": enc(d)})
	return data
}

func itoa(n int) string { return strconv.Itoa(n) }
