package store

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
)

// ReadPublicKey returns the public half of a key slot, with the same checks
// as ReadKey but without deriving the public key from the private one where
// the file already carries it (an EC key's point, an RSA key's modulus):
// deciding what is due reads every certificate's keys on every run, and an
// EC scalar multiplication per key is most of that run's time.
func (s *Store) ReadPublicKey(name, slot string) (crypto.PublicKey, error) {
	data, err := s.readKeyFile(name, slot)
	if err != nil {
		return nil, err
	}
	pub, err := PublicKeyOf(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.KeyPath(name, slot), err)
	}
	return pub, nil
}

var (
	oidEC  = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
)

// pkcs8 is a PKCS #8 PrivateKeyInfo (RFC 5208).
type pkcs8 struct {
	Version    int
	Algo       pkix.AlgorithmIdentifier
	PrivateKey []byte
}

// sec1 is an ECPrivateKey (RFC 5915).
type sec1 struct {
	Version       int
	PrivateKey    []byte
	NamedCurveOID asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey     asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// pkcs1 is the start of an RSAPrivateKey (RFC 8017): the public part.
type pkcs1 struct {
	Version int
	N       *big.Int
	E       int
	Rest    []asn1.RawValue `asn1:"optional"`
}

// PublicKeyOf returns the public key of the first private key in PEM data
// (the forms ParseKey reads), taken from the file where it is there, else
// derived by parsing the private key.
func PublicKeyOf(data []byte) (crypto.PublicKey, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no private key in PEM data")
		}
		var pub crypto.PublicKey
		switch b.Type {
		case "PRIVATE KEY":
			pub = pkcs8Public(b.Bytes)
		case "RSA PRIVATE KEY":
			pub = rsaPublic(b.Bytes)
		case "EC PRIVATE KEY":
			pub = ecPublic(b.Bytes, nil)
		default:
			continue
		}
		if pub != nil {
			return pub, nil
		}
		// Not there to take: derive it, with every check ParseKey makes.
		key, err := ParseKey(pem.EncodeToMemory(b))
		if err != nil {
			return nil, err
		}
		return key.Public(), nil
	}
}

func pkcs8Public(der []byte) crypto.PublicKey {
	var p pkcs8
	if rest, err := asn1.Unmarshal(der, &p); err != nil || len(rest) > 0 {
		return nil
	}
	switch {
	case p.Algo.Algorithm.Equal(oidRSA):
		return rsaPublic(p.PrivateKey)
	case p.Algo.Algorithm.Equal(oidEC):
		var curve asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(p.Algo.Parameters.FullBytes, &curve); err != nil {
			return nil
		}
		return ecPublic(p.PrivateKey, curve)
	}
	return nil
}

func rsaPublic(der []byte) crypto.PublicKey {
	var k pkcs1
	if rest, err := asn1.Unmarshal(der, &k); err != nil || len(rest) > 0 || k.N == nil || k.N.Sign() <= 0 || k.E < 3 {
		return nil
	}
	return &rsa.PublicKey{N: k.N, E: k.E}
}

// ecPublic reads the point an ECPrivateKey carries and checks it through
// x509's SPKI parser (which refuses points off the curve). curve is the
// PKCS #8 algorithm's curve, when the key itself names none.
func ecPublic(der []byte, curve asn1.ObjectIdentifier) crypto.PublicKey {
	var k sec1
	if rest, err := asn1.Unmarshal(der, &k); err != nil || len(rest) > 0 || k.PublicKey.BitLength == 0 {
		return nil
	}
	if len(k.NamedCurveOID) > 0 {
		curve = k.NamedCurveOID
	}
	if len(curve) == 0 {
		return nil
	}
	params, err := asn1.Marshal(curve)
	if err != nil {
		return nil
	}
	spki, err := asn1.Marshal(struct {
		Algo      pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}{pkix.AlgorithmIdentifier{Algorithm: oidEC, Parameters: asn1.RawValue{FullBytes: params}}, k.PublicKey})
	if err != nil {
		return nil
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil
	}
	return pub
}

// Stamp identifies one version of a file: its inode, size and times. A
// file rewritten or replaced gets another stamp (its change time at least
// moves, and nobody can set that back), so a stamp that matches one taken
// earlier means the content is what it was — what lets a run with nothing
// to do skip reading and parsing every key and certificate.
type Stamp struct {
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

func stampOf(fi interface{ Sys() any }) (Stamp, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Stamp{}, false
	}
	return Stamp{Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}, true
}

// KeyStamp stamps a key slot's file after the checks ReadKey makes (a
// regular file, not a symlink, owned by the effective user, private),
// without reading it. A missing key matches os.ErrNotExist.
func (s *Store) KeyStamp(name, slot string) (Stamp, error) {
	if err := validName(name); err != nil {
		return Stamp{}, err
	}
	if err := s.checkDirs(filepath.Join("keys", name)); err != nil {
		return Stamp{}, err
	}
	return stampTrusted(s.KeyPath(name, slot), 0o077)
}

// LiveStamp returns the live set's ID and the stamp of its certificate
// file, after the checks LiveLeaf makes, without reading it: ("", Stamp{},
// nil) when none is live.
func (s *Store) LiveStamp(name string) (string, Stamp, error) {
	id, err := s.LiveID(name)
	if err != nil || id == "" {
		return "", Stamp{}, err
	}
	rel := filepath.Join("archive", name, id)
	if err := s.checkDirs(rel); err != nil {
		return "", Stamp{}, err
	}
	st, err := stampTrusted(s.path(rel, FileCert), 0o022)
	if err != nil {
		return "", Stamp{}, fmt.Errorf("set %s/%s: %w", name, id, err)
	}
	return id, st, nil
}

func stampTrusted(path string, forbidden fs.FileMode) (Stamp, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return Stamp{}, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return Stamp{}, &UntrustedError{Path: path, Reason: "is a symlink; daneroll does not follow links inside its state directory",
			Advice: "replace it with the file itself or remove it"}
	}
	if !fi.Mode().IsRegular() {
		return Stamp{}, &UntrustedError{Path: path, Reason: "is not a regular file", Advice: "move it away"}
	}
	what := "writable by group or others"
	if forbidden == 0o077 {
		what = "readable or writable by group or others"
	}
	if err := trustOwner(path, fi, forbidden, what); err != nil {
		return Stamp{}, err
	}
	st, ok := stampOf(fi)
	if !ok {
		return Stamp{}, errors.New("no file identity on this system")
	}
	return st, nil
}
