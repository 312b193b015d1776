package certbot

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// jwk is a private key in JSON Web Key form (RFC 7517, RFC 7518 §6), as
// certbot stores an account key in private_key.json.
type jwk struct {
	Kty string
	// RSA
	N, E, D, P, Q, DP, DQ, QI string
	// EC
	Crv, X, Y string
}

func (k *jwk) UnmarshalJSON(data []byte) error {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	str := func(name string) string { s, _ := m[name].(string); return s }
	*k = jwk{Kty: str("kty"), N: str("n"), E: str("e"), D: str("d"), P: str("p"), Q: str("q"),
		DP: str("dp"), DQ: str("dq"), QI: str("qi"), Crv: str("crv"), X: str("x"), Y: str("y")}
	return nil
}

// parseJWK reads a private JWK: RSA (certbot's account keys) or EC.
func parseJWK(data []byte) (crypto.Signer, error) {
	var k jwk
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("not a JSON web key: %w", err)
	}
	switch k.Kty {
	case "RSA":
		return k.rsa()
	case "EC":
		return k.ec()
	case "":
		return nil, errors.New("not a JSON web key: no kty")
	}
	return nil, fmt.Errorf("key type %q is not supported (want RSA or EC)", k.Kty)
}

// b64int decodes a base64url (unpadded, as RFC 7518 asks; padded is
// accepted) big-endian integer.
func b64int(name, s string) (*big.Int, error) {
	if s == "" {
		return nil, fmt.Errorf("%s is missing", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return new(big.Int).SetBytes(b), nil
}

func (k *jwk) rsa() (crypto.Signer, error) {
	var (
		ints = map[string]*big.Int{}
		err  error
	)
	for _, f := range []struct{ name, s string }{{"n", k.N}, {"e", k.E}, {"d", k.D}, {"p", k.P}, {"q", k.Q}} {
		if ints[f.name], err = b64int(f.name, f.s); err != nil {
			return nil, fmt.Errorf("RSA key: %w", err)
		}
	}
	if !ints["e"].IsInt64() || ints["e"].Int64() < 3 || ints["e"].Int64() > 1<<31-1 {
		return nil, errors.New("RSA key: unusable public exponent")
	}
	if bits := ints["n"].BitLen(); bits < 2048 || bits > 8192 {
		return nil, fmt.Errorf("RSA key: %d-bit modulus (want 2048 to 8192)", bits)
	}
	key := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: ints["n"], E: int(ints["e"].Int64())},
		D:         ints["d"],
		Primes:    []*big.Int{ints["p"], ints["q"]},
	}
	if err := key.Validate(); err != nil {
		return nil, fmt.Errorf("RSA key: %w", err)
	}
	key.Precompute()
	return key, nil
}

func (k *jwk) ec() (crypto.Signer, error) {
	var curve elliptic.Curve
	switch k.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("EC key: curve %q is not supported", k.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	d, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.D, "="))
	if err != nil || len(d) == 0 || len(d) > size {
		return nil, errors.New("EC key: bad d")
	}
	d = append(make([]byte, size-len(d)), d...)
	key, err := ecdsa.ParseRawPrivateKey(curve, d)
	if err != nil {
		return nil, fmt.Errorf("EC key: %w", err)
	}
	x, err := b64int("x", k.X)
	if err != nil {
		return nil, fmt.Errorf("EC key: %w", err)
	}
	y, err := b64int("y", k.Y)
	if err != nil {
		return nil, fmt.Errorf("EC key: %w", err)
	}
	// The public point written next to d must be d's: a file with
	// another one was not written by certbot.
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("EC key: %w", err)
	}
	if new(big.Int).SetBytes(pub[1:1+size]).Cmp(x) != 0 || new(big.Int).SetBytes(pub[1+size:]).Cmp(y) != 0 {
		return nil, errors.New("EC key: x and y are not the public key of d")
	}
	return key, nil
}
