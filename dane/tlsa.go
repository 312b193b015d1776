package dane

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// TLSA parameters (RFC 6698 §2.1, with the RFC 7218 acronyms as names).
const (
	UsagePKIXTA uint8 = 0 // a CA in the PKIX-validated chain
	UsagePKIXEE uint8 = 1 // the PKIX-validated leaf
	UsageDANETA uint8 = 2 // a trust anchor the chain must lead to
	UsageDANEEE uint8 = 3 // the leaf, nothing else checked

	SelectorCert uint8 = 0 // the whole DER certificate
	SelectorSPKI uint8 = 1 // the DER SubjectPublicKeyInfo

	MatchFull   uint8 = 0 // the selected bytes themselves
	MatchSHA256 uint8 = 1
	MatchSHA512 uint8 = 2
)

// TLSA is the data of one TLSA record, without owner and TTL.
type TLSA struct {
	Usage, Selector, MatchingType uint8
	// Data is the certificate association data: the selected DER or its
	// digest, as the matching type says.
	Data []byte
}

// String returns the RDATA as in a zone file: "3 1 1 <lowercase hex>".
func (t TLSA) String() string {
	return fmt.Sprintf("%d %d %d %s", t.Usage, t.Selector, t.MatchingType, hex.EncodeToString(t.Data))
}

// Equal reports whether t and u are the same record data.
func (t TLSA) Equal(u TLSA) bool {
	return t.Usage == u.Usage && t.Selector == u.Selector && t.MatchingType == u.MatchingType &&
		bytes.Equal(t.Data, u.Data)
}

// RR returns t as a miekg/dns record at owner, which is made fully qualified
// and lower-case, as Publisher expects.
func (t TLSA) RR(owner string, ttl uint32) *dns.TLSA {
	return &dns.TLSA{
		Hdr:          dns.RR_Header{Name: strings.ToLower(dns.Fqdn(owner)), Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: ttl},
		Usage:        t.Usage,
		Selector:     t.Selector,
		MatchingType: t.MatchingType,
		Certificate:  hex.EncodeToString(t.Data),
	}
}

// FromRR returns the data of a miekg/dns TLSA record.
func FromRR(rr *dns.TLSA) (TLSA, error) {
	if rr == nil {
		return TLSA{}, errors.New("tlsa: nil record")
	}
	data, err := hex.DecodeString(rr.Certificate)
	if err != nil {
		return TLSA{}, fmt.Errorf("tlsa: %s: association data is not hex", rr.Hdr.Name)
	}
	return TLSA{Usage: rr.Usage, Selector: rr.Selector, MatchingType: rr.MatchingType, Data: data}, nil
}

// mnemonic returns the value of an RFC 7218 acronym (in any case), which
// people paste from documentation and some tools print instead of numbers.
func mnemonic(what, s string) (uint8, bool) {
	m := map[string]map[string]uint8{
		"usage":         {"pkix-ta": 0, "pkix-ee": 1, "dane-ta": 2, "dane-ee": 3, "privcert": 255},
		"selector":      {"cert": 0, "spki": 1, "privsel": 255},
		"matching type": {"full": 0, "sha2-256": 1, "sha2-512": 2, "privmatch": 255},
	}[what]
	v, ok := m[strings.ToLower(s)]
	return v, ok
}

func parseParam(what, s string) (uint8, error) {
	if v, ok := mnemonic(what, s); ok {
		return v, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a number from 0 to 255", what, s)
	}
	return uint8(n), nil
}

// ParseTLSA parses TLSA RDATA in zone-file form: "3 1 1 ABCD…". The hex is
// read in any case and may be split by white space (as long records are in
// zone files), and the data may be wrapped in parentheses. The RFC 3597
// generic form ("\# 35 030101…") is accepted too.
func ParseTLSA(s string) (TLSA, error) {
	t, err := parseRDATA(fieldsOf(s))
	if err != nil {
		return TLSA{}, fmt.Errorf("tlsa: parse %q: %w", abbrev(s), err)
	}
	return t, nil
}

// fieldsOf splits zone-file text into fields, dropping a comment and the
// parentheses that let a record span lines.
func fieldsOf(s string) []string {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	s = strings.NewReplacer("(", " ", ")", " ").Replace(s)
	return strings.Fields(s)
}

func parseRDATA(f []string) (TLSA, error) {
	if len(f) > 0 && f[0] == `\#` {
		return parseGeneric(f[1:])
	}
	if len(f) < 4 {
		return TLSA{}, errors.New("want usage, selector, matching type and data")
	}
	var t TLSA
	var err error
	if t.Usage, err = parseParam("usage", f[0]); err != nil {
		return TLSA{}, err
	}
	if t.Selector, err = parseParam("selector", f[1]); err != nil {
		return TLSA{}, err
	}
	if t.MatchingType, err = parseParam("matching type", f[2]); err != nil {
		return TLSA{}, err
	}
	if t.Data, err = decodeHex(strings.Join(f[3:], "")); err != nil {
		return TLSA{}, err
	}
	return t, nil
}

// parseGeneric reads RFC 3597 §5 unknown-type RDATA: a length and hex.
func parseGeneric(f []string) (TLSA, error) {
	if len(f) < 2 {
		return TLSA{}, errors.New(`generic RDATA: want \# LENGTH HEX`)
	}
	n, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return TLSA{}, fmt.Errorf("generic RDATA: length %q is not a number", f[0])
	}
	b, err := decodeHex(strings.Join(f[1:], ""))
	if err != nil {
		return TLSA{}, err
	}
	if uint64(len(b)) != n {
		return TLSA{}, fmt.Errorf("generic RDATA: length says %d bytes, data has %d", n, len(b))
	}
	if len(b) < 4 {
		return TLSA{}, errors.New("generic RDATA: too short for a TLSA record")
	}
	return TLSA{Usage: b[0], Selector: b[1], MatchingType: b[2], Data: b[3:]}, nil
}

func decodeHex(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("no association data")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		if len(s)%2 == 1 {
			return nil, fmt.Errorf("association data has an odd number (%d) of hex digits", len(s))
		}
		return nil, errors.New("association data is not hex")
	}
	return b, nil
}

// ParseZoneLine parses one TLSA record in zone-file form:
//
//	_25._tcp.mail.example.org. 300 IN TLSA 3 1 1 ab…
//
// The TTL and the class are optional and may come in either order; ttl is 0
// when the line has none. The owner is returned fully qualified and in lower
// case; a name without the final dot is taken as absolute, since there is
// no $ORIGIN to append.
func ParseZoneLine(line string) (owner string, ttl uint32, t TLSA, err error) {
	f := fieldsOf(line)
	fail := func(format string, a ...any) (string, uint32, TLSA, error) {
		return "", 0, TLSA{}, fmt.Errorf("tlsa: parse zone line %q: %s", abbrev(line), fmt.Sprintf(format, a...))
	}
	if len(f) == 0 {
		return fail("empty line")
	}
	owner = f[0]
	if isDecimal(owner) || isClass(owner) || strings.EqualFold(owner, "TLSA") {
		return fail("no owner name")
	}
	if owner == "@" || strings.HasPrefix(owner, "$") {
		return fail("want an explicit owner name, not %s", owner)
	}
	if _, ok := dns.IsDomainName(owner); !ok {
		return fail("%q is not a domain name", owner)
	}
	// Lower-casing other bytes would change the name (DNS folds ASCII
	// only, RFC 4343) or break it (invalid UTF-8 becomes U+FFFD).
	for i := 0; i < len(owner); i++ {
		if owner[i] >= 0x80 {
			return fail("owner %q is not ASCII: write an international name in its xn-- form", owner)
		}
	}
	// Escapes (\. \065) do not occur in the names TLSA records live at,
	// and a trailing "\" would make the root dot part of a label.
	if strings.ContainsRune(owner, '\\') {
		return fail("owner %q holds a backslash escape: write the name plainly", owner)
	}
	owner = strings.ToLower(dns.Fqdn(owner))
	i := 1
	for seenTTL, seenClass := false, false; i < len(f); i++ {
		if !seenTTL && isDecimal(f[i]) {
			n, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return fail("TTL %s is out of range", f[i])
			}
			ttl, seenTTL = uint32(n), true
		} else if !seenClass && isClass(f[i]) {
			if !strings.EqualFold(f[i], "IN") {
				return fail("class %s, want IN", f[i])
			}
			seenClass = true
		} else {
			break
		}
	}
	if i >= len(f) {
		return fail("no record type")
	}
	if typ := strings.ToUpper(f[i]); typ != "TLSA" && typ != "TYPE52" {
		return fail("record type is %s, want TLSA", f[i])
	}
	t, err = parseRDATA(f[i+1:])
	if err != nil {
		return fail("%v", err)
	}
	return owner, ttl, t, nil
}

func isClass(s string) bool {
	s = strings.ToUpper(s)
	_, known := dns.StringToClass[s]
	return known || strings.HasPrefix(s, "CLASS") && isDecimal(s[len("CLASS"):])
}

func isDecimal(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// ZoneLine returns one zone-file line for the record, with a fully
// qualified lower-case owner: "_25._tcp.mail.example.org. 300 IN TLSA 3 1 1
// ab…". A ttl of 0 leaves the TTL out, so the zone's default applies; that
// is also what ParseZoneLine returns for a line without one.
func ZoneLine(owner string, ttl uint32, t TLSA) string {
	owner = strings.ToLower(dns.Fqdn(owner))
	if ttl == 0 {
		return fmt.Sprintf("%s IN TLSA %s", owner, t)
	}
	return fmt.Sprintf("%s %d IN TLSA %s", owner, ttl, t)
}

// abbrev shortens s for an error message: records with full certificates
// run to thousands of characters.
func abbrev(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// digest returns the association data of b under a matching type.
func digest(b []byte, matching uint8) ([]byte, error) {
	switch matching {
	case MatchFull:
		return bytes.Clone(b), nil
	case MatchSHA256:
		s := sha256.Sum256(b)
		return s[:], nil
	case MatchSHA512:
		s := sha512.Sum512(b)
		return s[:], nil
	}
	return nil, fmt.Errorf("unknown matching type %d", matching)
}

// selected returns the bytes of cert a selector picks.
func selected(cert *x509.Certificate, selector uint8) ([]byte, error) {
	switch selector {
	case SelectorCert:
		return cert.Raw, nil
	case SelectorSPKI:
		return cert.RawSubjectPublicKeyInfo, nil
	}
	return nil, fmt.Errorf("unknown selector %d", selector)
}

// Compute returns the record for cert with the given parameters. The usage
// is only recorded: which certificate of a chain to pass (the leaf for
// usages 1 and 3, a CA for 0 and 2) is the caller's choice.
func Compute(cert *x509.Certificate, usage, selector, matching uint8) (TLSA, error) {
	if cert == nil {
		return TLSA{}, errors.New("tlsa: no certificate")
	}
	if usage > UsageDANEEE {
		return TLSA{}, fmt.Errorf("tlsa: unknown usage %d", usage)
	}
	b, err := selected(cert, selector)
	if err != nil {
		return TLSA{}, fmt.Errorf("tlsa: %w", err)
	}
	d, err := digest(b, matching)
	if err != nil {
		return TLSA{}, fmt.Errorf("tlsa: %w", err)
	}
	return TLSA{Usage: usage, Selector: selector, MatchingType: matching, Data: d}, nil
}

// ComputeKey returns the selector-1 (SPKI) record for a bare key. pub may be
// a public key or a private key (anything with a Public method).
func ComputeKey(pub crypto.PublicKey, usage, matching uint8) (TLSA, error) {
	if usage > UsageDANEEE {
		return TLSA{}, fmt.Errorf("tlsa: unknown usage %d", usage)
	}
	spki, err := marshalSPKI(pub)
	if err != nil {
		return TLSA{}, err
	}
	d, err := digest(spki, matching)
	if err != nil {
		return TLSA{}, fmt.Errorf("tlsa: %w", err)
	}
	return TLSA{Usage: usage, Selector: SelectorSPKI, MatchingType: matching, Data: d}, nil
}

// SPKISHA256 returns the lowercase hex SHA-256 of the key's DER
// SubjectPublicKeyInfo: the data of a "3 1 1" record, which is how daneroll
// names keys everywhere.
func SPKISHA256(pub crypto.PublicKey) (string, error) {
	spki, err := marshalSPKI(pub)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(spki)
	return hex.EncodeToString(s[:]), nil
}

func marshalSPKI(pub crypto.PublicKey) ([]byte, error) {
	if k, ok := pub.(interface{ Public() crypto.PublicKey }); ok {
		pub = k.Public()
	}
	if pub == nil {
		return nil, errors.New("tlsa: no key")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("tlsa: %w", err)
	}
	return der, nil
}

// ReadPEM reads certificates and keys from PEM text, as found in
// fullchain.pem, cert.pem, privkey.pem, combined files, or a public key file:
//
//   - CERTIFICATE blocks make chain, in file order (leaf first, as in
//     fullchain.pem); pub is then the leaf's key;
//   - PRIVATE KEY (PKCS#8), RSA PRIVATE KEY (PKCS#1), EC PRIVATE KEY (SEC1),
//     PUBLIC KEY (PKIX) and RSA PUBLIC KEY (PKCS#1) give pub when there is
//     no certificate. When a file holds both, the key must be the leaf's.
//
// EC PARAMETERS blocks are skipped. Encrypted keys and any other block are
// errors, as is a file with nothing usable. Input without any PEM block is
// tried as DER certificates. Key material never appears in errors.
func ReadPEM(data []byte) (chain []*x509.Certificate, pub crypto.PublicKey, err error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		certs, err := x509.ParseCertificates(data)
		if err != nil || len(certs) == 0 {
			return nil, nil, errors.New("no PEM certificate or key found")
		}
		return certs, certs[0].PublicKey, nil
	}
	var keys []crypto.PublicKey
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if _, encrypted := b.Headers["Proc-Type"]; encrypted {
			return nil, nil, fmt.Errorf("PEM block %d (%s) is encrypted: decrypt it first", n, b.Type)
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM block %d: %w", n, err)
			}
			chain = append(chain, c)
		case "EC PARAMETERS":
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, fmt.Errorf("PEM block %d is an encrypted private key: decrypt it first", n)
		default:
			k, err := parseKeyBlock(b)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
			}
			keys = append(keys, k)
		}
	}
	switch {
	case len(keys) > 1:
		return nil, nil, fmt.Errorf("%d keys in one file: want at most one", len(keys))
	case len(chain) > 0:
		pub = chain[0].PublicKey
		if len(keys) == 1 && !samePublicKey(keys[0], pub) {
			return nil, nil, errors.New("the key in the file does not belong to its first certificate")
		}
		return chain, pub, nil
	case len(keys) == 1:
		return nil, keys[0], nil
	}
	return nil, nil, errors.New("no PEM certificate or key found")
}

// parseKeyBlock returns the public key of a key PEM block.
func parseKeyBlock(b *pem.Block) (crypto.PublicKey, error) {
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "PUBLIC KEY":
		return parsePub(x509.ParsePKIXPublicKey(b.Bytes))
	case "RSA PUBLIC KEY":
		return parsePub(x509.ParsePKCS1PublicKey(b.Bytes))
	default:
		return nil, errors.New("not a certificate or a key")
	}
	if err != nil {
		// The parsers' messages name the structure, never the key bytes.
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	return s.Public(), nil
}

func parsePub[K any](k K, err error) (crypto.PublicKey, error) {
	if err != nil {
		return nil, err
	}
	return k, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	x, err1 := x509.MarshalPKIXPublicKey(a)
	y, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
