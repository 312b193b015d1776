package dane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pkiNow is the time of the matching tests; certificates are valid around it.
func pkiNow() time.Time { return time.Date(2031, 3, 14, 12, 0, 0, 0, time.UTC) }

type pkiCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// pkiSpec describes a certificate to issue. Zero dates mean 30 days before
// and 60 days after pkiNow.
type pkiSpec struct {
	cn, org             string
	ca                  bool
	names               []string
	notBefore, notAfter time.Time
	key                 *ecdsa.PrivateKey // nil: a new key
}

func pkiKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pkiIssue issues a certificate signed by parent, or self-signed when parent
// is nil.
func pkiIssue(t *testing.T, parent *pkiCert, s pkiSpec) *pkiCert {
	t.Helper()
	if s.key == nil {
		s.key = pkiKey(t)
	}
	if s.notBefore.IsZero() {
		s.notBefore = pkiNow().Add(-30 * 24 * time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = pkiNow().Add(60 * 24 * time.Hour)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.cn},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
		DNSNames:              s.names,
	}
	if s.org != "" {
		tmpl.Subject.Organization = []string{s.org}
	}
	if s.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, parentCert := s.key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, s.key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pkiCert{cert: c, key: s.key}
}

// testPKI is a root, an intermediate and a leaf for mail.example.test.
type testPKI struct {
	root, inter, leaf *pkiCert
	roots             *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{}
	p.root = pkiIssue(t, nil, pkiSpec{cn: "Test Root", ca: true, notAfter: pkiNow().AddDate(10, 0, 0)})
	p.inter = pkiIssue(t, p.root, pkiSpec{cn: "Test Intermediate", ca: true, notAfter: pkiNow().AddDate(2, 0, 0)})
	p.leaf = pkiIssue(t, p.inter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test", "mx.example.test"}})
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.root.cert)
	return p
}

// served is the chain a server sends: the leaf and the intermediate.
func (p *testPKI) served() []*x509.Certificate { return []*x509.Certificate{p.leaf.cert, p.inter.cert} }

func (p *testPKI) opts() VerifyOptions {
	return VerifyOptions{Names: []string{"mail.example.test"}, Roots: p.roots, Now: pkiNow()}
}

// rec builds a record with digests computed here, independently of Compute.
func tlsaFor(usage, selector, matching uint8, c *x509.Certificate) TLSA {
	b := c.Raw
	if selector == SelectorSPKI {
		b = c.RawSubjectPublicKeyInfo
	}
	switch matching {
	case MatchSHA256:
		s := sha256.Sum256(b)
		b = s[:]
	case MatchSHA512:
		s := sha512.Sum512(b)
		b = s[:]
	}
	return TLSA{Usage: usage, Selector: selector, MatchingType: matching, Data: b}
}

func TestMatchesCertAndCompute(t *testing.T) {
	p := newTestPKI(t)
	for s := range uint8(2) {
		for m := range uint8(3) {
			want := tlsaFor(3, s, m, p.leaf.cert)
			if !want.MatchesCert(p.leaf.cert) {
				t.Errorf("%d %d: no match", s, m)
			}
			if want.MatchesCert(p.inter.cert) {
				t.Errorf("%d %d: matches another certificate", s, m)
			}
			got, err := Compute(p.leaf.cert, 3, s, m)
			if err != nil || !got.Equal(want) {
				t.Errorf("Compute %d %d = %v, %v", s, m, got, err)
			}
		}
	}
	if (TLSA{3, 2, 1, nil}).MatchesCert(p.leaf.cert) || (TLSA{3, 1, 3, nil}).MatchesCert(p.leaf.cert) || tlsaFor(3, 1, 1, p.leaf.cert).MatchesCert(nil) {
		t.Error("unknown parameters or no certificate matched")
	}
	for _, tc := range []struct{ u, s, m uint8 }{{4, 1, 1}, {3, 2, 1}, {3, 1, 3}} {
		if _, err := Compute(p.leaf.cert, tc.u, tc.s, tc.m); err == nil {
			t.Errorf("Compute %d %d %d accepted", tc.u, tc.s, tc.m)
		}
	}
	if _, err := Compute(nil, 3, 1, 1); err == nil {
		t.Error("Compute(nil) accepted")
	}
}

// verifyCase is one Verify call with a single record (or a few).
type verifyCase struct {
	name    string
	records []TLSA
	chain   []*x509.Certificate
	opts    VerifyOptions
	// match is the matched certificate expected (nil with matchBare for a
	// bare-key trust anchor); "" reason means a match is expected.
	match     *x509.Certificate
	matchBare bool
	reason    string // substring of the first record's Reason
	unusable  bool
}

func runVerifyCases(t *testing.T, cases []verifyCase) {
	t.Helper()
	for _, tc := range cases {
		res, err := Verify(tc.records, tc.chain, tc.opts)
		wantLeaf := sha256.Sum256(tc.chain[0].RawSubjectPublicKeyInfo)
		if res.LeafSPKI != hex.EncodeToString(wantLeaf[:]) {
			t.Errorf("%s: LeafSPKI = %s", tc.name, res.LeafSPKI)
		}
		if len(res.Checks) != len(tc.records) {
			t.Errorf("%s: %d checks for %d records", tc.name, len(res.Checks), len(tc.records))
			continue
		}
		c := res.Checks[0]
		if tc.match != nil || tc.matchBare {
			if err != nil || c.Outcome != OutcomeMatch || len(res.Matched) == 0 || !res.Matched[0].Equal(tc.records[0]) {
				t.Errorf("%s: want a match, got %v (%s), err %v", tc.name, c.Outcome, c.Reason, err)
				continue
			}
			if tc.matchBare && c.Cert != nil || tc.match != nil && (c.Cert == nil || !c.Cert.Equal(tc.match)) {
				t.Errorf("%s: matched %v, want %v", tc.name, certSubject(c.Cert), certSubject(tc.match))
			}
			continue
		}
		var me *MismatchError
		if !errors.As(err, &me) {
			t.Errorf("%s: err = %v, want a *MismatchError", tc.name, err)
			continue
		}
		if me.LeafSPKI != hex.EncodeToString(wantLeaf[:]) || !strings.Contains(err.Error(), me.LeafSPKI) {
			t.Errorf("%s: error does not name the leaf's key %x: %v", tc.name, wantLeaf, err)
		}
		if len(me.Records) != len(tc.records) || len(res.Matched) != 0 {
			t.Errorf("%s: error lists %d records, result matched %d", tc.name, len(me.Records), len(res.Matched))
		}
		wantOutcome := OutcomeMismatch
		if tc.unusable {
			wantOutcome = OutcomeUnusable
			if len(res.Unusable) != 1 || !res.Unusable[0].Equal(tc.records[0]) {
				t.Errorf("%s: Unusable = %v", tc.name, res.Unusable)
			}
		}
		if c.Outcome != wantOutcome || !strings.Contains(c.Reason, tc.reason) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: %v (%s), want %v with %q; err %v", tc.name, c.Outcome, c.Reason, wantOutcome, tc.reason, err)
		}
	}
}

func certSubject(c *x509.Certificate) string {
	if c == nil {
		return "<nil>"
	}
	return c.Subject.CommonName
}

func TestVerifyDANEEE(t *testing.T) {
	p := newTestPKI(t)
	leaf := p.leaf.cert
	expired := p.opts()
	expired.Now = leaf.NotAfter.Add(24 * time.Hour)
	wrongName := p.opts()
	wrongName.Names = []string{"other.example"}
	noNames := p.opts()
	noNames.Names = nil
	bad := tlsaFor(3, 1, 1, leaf)
	bad.Data = append([]byte{bad.Data[0] ^ 1}, bad.Data[1:]...)
	var cases []verifyCase
	for s := range uint8(2) {
		for m := range uint8(3) {
			cases = append(cases, verifyCase{name: "3 x x", records: []TLSA{tlsaFor(3, s, m, leaf)}, chain: p.served(), opts: p.opts(), match: leaf})
		}
	}
	cases = append(cases,
		verifyCase{name: "3 1 1 leaf only", records: []TLSA{tlsaFor(3, 1, 1, leaf)}, chain: []*x509.Certificate{leaf}, opts: p.opts(), match: leaf},
		// RFC 7671 §5.1: neither dates nor names matter.
		verifyCase{name: "expired leaf", records: []TLSA{tlsaFor(3, 1, 1, leaf)}, chain: p.served(), opts: expired, match: leaf},
		verifyCase{name: "other name", records: []TLSA{tlsaFor(3, 1, 1, leaf)}, chain: p.served(), opts: wrongName, match: leaf},
		verifyCase{name: "no names", records: []TLSA{tlsaFor(3, 0, 1, leaf)}, chain: p.served(), opts: noNames, match: leaf},
		verifyCase{name: "wrong digest", records: []TLSA{bad}, chain: p.served(), opts: p.opts(), reason: "leaf's key does not match"},
		verifyCase{name: "intermediate's digest", records: []TLSA{tlsaFor(3, 0, 1, p.inter.cert)}, chain: p.served(), opts: p.opts(), reason: "leaf's certificate does not match"},
	)
	runVerifyCases(t, cases)
}

func TestVerifyDANETA(t *testing.T) {
	p := newTestPKI(t)
	leaf, inter, root := p.leaf.cert, p.inter.cert, p.root.cert
	full := []*x509.Certificate{leaf, inter, root}

	// An impostor intermediate: same name as the real one, another key. The
	// leaf's signature does not verify with it.
	impostor := pkiIssue(t, p.root, pkiSpec{cn: "Test Intermediate", ca: true}).cert
	// A leaf with a damaged signature.
	tampered, err := x509.ParseCertificate(leaf.Raw)
	if err != nil {
		t.Fatal(err)
	}
	tampered.Signature = append([]byte(nil), tampered.Signature...)
	tampered.Signature[len(tampered.Signature)-3] ^= 0x40
	// A leaf signed by an expired intermediate, and an expired leaf.
	oldInter := pkiIssue(t, p.root, pkiSpec{cn: "Old Intermediate", ca: true, notBefore: pkiNow().AddDate(-3, 0, 0), notAfter: pkiNow().AddDate(0, 0, -1)})
	leafOfOld := pkiIssue(t, oldInter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"}})
	expiredLeaf := pkiIssue(t, p.inter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"}, notBefore: pkiNow().AddDate(0, -4, 0), notAfter: pkiNow().AddDate(0, 0, -2)})
	// An intermediate that is not a CA.
	notCA := pkiIssue(t, p.root, pkiSpec{cn: "Not A CA"})
	leafOfNotCA := pkiIssue(t, notCA, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"}})

	wrongName := p.opts()
	wrongName.Names = []string{"www.example.test"}
	noNames := p.opts()
	noNames.Names = nil
	mxName := p.opts()
	mxName.Names = []string{"example.test", "MX.example.test."}
	smtp := p.opts()
	smtp.SMTP = true
	smtp.Roots = x509.NewCertPool() // DANE-TA needs no PKIX roots

	cases := []verifyCase{
		{name: "2 0 1 intermediate", records: []TLSA{tlsaFor(2, 0, 1, inter)}, chain: p.served(), opts: p.opts(), match: inter},
		{name: "2 1 1 intermediate", records: []TLSA{tlsaFor(2, 1, 1, inter)}, chain: p.served(), opts: p.opts(), match: inter},
		{name: "2 1 2 intermediate, SMTP, no roots", records: []TLSA{tlsaFor(2, 1, 2, inter)}, chain: p.served(), opts: smtp, match: inter},
		{name: "2 0 0 root sent", records: []TLSA{tlsaFor(2, 0, 0, root)}, chain: full, opts: p.opts(), match: root},
		{name: "2 1 1 root sent out of order", records: []TLSA{tlsaFor(2, 1, 1, root)}, chain: []*x509.Certificate{leaf, root, inter}, opts: p.opts(), match: root},
		{name: "second reference name", records: []TLSA{tlsaFor(2, 1, 1, inter)}, chain: p.served(), opts: mxName, match: inter},
		// RFC 7671 §5.2.2: a bare key the server's chain leads to.
		{name: "2 1 0 root key not sent", records: []TLSA{tlsaFor(2, 1, 0, root)}, chain: p.served(), opts: p.opts(), matchBare: true},
		{name: "2 1 0 issuer key, leaf alone", records: []TLSA{tlsaFor(2, 1, 0, inter)}, chain: []*x509.Certificate{leaf}, opts: p.opts(), matchBare: true},
		// The trust anchor's own dates do not matter; those below it do.
		{name: "expired TA", records: []TLSA{tlsaFor(2, 1, 1, oldInter.cert)}, chain: []*x509.Certificate{leafOfOld.cert, oldInter.cert}, opts: p.opts(), match: oldInter.cert},
		{name: "expired intermediate below the TA", records: []TLSA{tlsaFor(2, 1, 1, root)}, chain: []*x509.Certificate{leafOfOld.cert, oldInter.cert, root}, opts: p.opts(), reason: `"Old Intermediate" is not valid`},
		{name: "expired leaf", records: []TLSA{tlsaFor(2, 1, 1, inter)}, chain: []*x509.Certificate{expiredLeaf.cert, inter}, opts: p.opts(), reason: "the leaf \"mail.example.test\" is not valid"},

		{name: "2 1 1 root not sent", records: []TLSA{tlsaFor(2, 1, 1, root)}, chain: p.served(), opts: p.opts(), reason: "must send the trust anchor"},
		{name: "2 1 0 garbage", records: []TLSA{{2, 1, 0, []byte{1, 2, 3}}}, chain: p.served(), opts: p.opts(), reason: "not a public key"},
		{name: "2 1 0 unrelated key", records: []TLSA{tlsaFor(2, 1, 0, notCA.cert)}, chain: p.served(), opts: p.opts(), reason: "without reaching the trust anchor"},
		{name: "2 x x on the leaf", records: []TLSA{tlsaFor(2, 1, 1, leaf)}, chain: p.served(), opts: p.opts(), reason: "no certificate above the leaf"},
		{name: "2 x x on the leaf, sent twice", records: []TLSA{tlsaFor(2, 1, 1, leaf)}, chain: []*x509.Certificate{leaf, leaf, inter}, opts: p.opts(), reason: "without reaching the trust anchor"},
		{name: "wrong digest", records: []TLSA{tlsaFor(2, 1, 1, impostor)}, chain: p.served(), opts: p.opts(), reason: "no certificate above the leaf"},
		{name: "broken signature (impostor)", records: []TLSA{tlsaFor(2, 1, 1, impostor)}, chain: []*x509.Certificate{leaf, impostor}, opts: p.opts(), reason: "signature on the leaf \"mail.example.test\" does not verify"},
		{name: "broken signature (tampered)", records: []TLSA{tlsaFor(2, 0, 1, inter)}, chain: []*x509.Certificate{tampered, inter}, opts: p.opts(), reason: "does not verify"},
		{name: "issuer not a CA", records: []TLSA{tlsaFor(2, 1, 1, notCA.cert)}, chain: []*x509.Certificate{leafOfNotCA.cert, notCA.cert}, opts: p.opts(), reason: "does not verify"},
		{name: "chain stops short", records: []TLSA{tlsaFor(2, 1, 1, root)}, chain: []*x509.Certificate{leaf, root}, opts: p.opts(), reason: "without reaching the trust anchor"},
		{name: "name mismatch", records: []TLSA{tlsaFor(2, 1, 1, inter)}, chain: p.served(), opts: wrongName, reason: "do not include www.example.test"},
		{name: "no names", records: []TLSA{tlsaFor(2, 1, 1, inter)}, chain: p.served(), opts: noNames, reason: "no reference name"},
	}
	runVerifyCases(t, cases)
}

func TestVerifyPKIX(t *testing.T) {
	p := newTestPKI(t)
	leaf, inter, root := p.leaf.cert, p.inter.cert, p.root.cert
	untrusted := p.opts()
	untrusted.Roots = x509.NewCertPool()
	wrongName := p.opts()
	wrongName.Names = []string{"www.example.test"}
	later := p.opts()
	later.Now = leaf.NotAfter.Add(time.Hour)
	smtp := p.opts()
	smtp.SMTP = true
	cases := []verifyCase{
		{name: "1 1 1", records: []TLSA{tlsaFor(1, 1, 1, leaf)}, chain: p.served(), opts: p.opts(), match: leaf},
		{name: "1 0 2", records: []TLSA{tlsaFor(1, 0, 2, leaf)}, chain: p.served(), opts: p.opts(), match: leaf},
		{name: "1 1 1 untrusted root", records: []TLSA{tlsaFor(1, 1, 1, leaf)}, chain: p.served(), opts: untrusted, reason: "PKIX validation fails"},
		{name: "1 1 1 wrong name", records: []TLSA{tlsaFor(1, 1, 1, leaf)}, chain: p.served(), opts: wrongName, reason: "PKIX validation fails"},
		{name: "1 1 1 expired", records: []TLSA{tlsaFor(1, 1, 1, leaf)}, chain: p.served(), opts: later, reason: "PKIX validation fails"},
		{name: "1 1 1 other key", records: []TLSA{tlsaFor(1, 1, 1, inter)}, chain: p.served(), opts: p.opts(), reason: "leaf's key does not match"},
		{name: "1 1 1 SMTP", records: []TLSA{tlsaFor(1, 1, 1, leaf)}, chain: p.served(), opts: smtp, reason: "PKIX-EE(1) is unusable for SMTP", unusable: true},

		{name: "0 1 1 root from the trust store", records: []TLSA{tlsaFor(0, 1, 1, root)}, chain: p.served(), opts: p.opts(), match: root},
		{name: "0 0 1 intermediate", records: []TLSA{tlsaFor(0, 0, 1, inter)}, chain: p.served(), opts: p.opts(), match: inter},
		{name: "0 1 1 untrusted root", records: []TLSA{tlsaFor(0, 1, 1, root)}, chain: p.served(), opts: untrusted, reason: "PKIX validation fails"},
		{name: "0 x x on the leaf", records: []TLSA{tlsaFor(0, 1, 1, leaf)}, chain: p.served(), opts: p.opts(), reason: "no CA certificate"},
		{name: "0 1 1 SMTP", records: []TLSA{tlsaFor(0, 1, 1, root)}, chain: p.served(), opts: smtp, reason: "PKIX-TA(0) is unusable for SMTP", unusable: true},
	}
	runVerifyCases(t, cases)
}

func TestVerifyUnusableAndSets(t *testing.T) {
	p := newTestPKI(t)
	leaf := p.leaf.cert
	good := tlsaFor(3, 1, 1, leaf)
	short := TLSA{3, 1, 1, good.Data[:20]}
	long := TLSA{3, 1, 2, good.Data}
	cases := []verifyCase{
		{name: "usage 4", records: []TLSA{{4, 1, 1, good.Data}}, chain: p.served(), opts: p.opts(), reason: "unknown usage 4", unusable: true},
		{name: "selector 2", records: []TLSA{{3, 2, 1, good.Data}}, chain: p.served(), opts: p.opts(), reason: "unknown selector 2", unusable: true},
		{name: "matching 3", records: []TLSA{{3, 1, 3, good.Data}}, chain: p.served(), opts: p.opts(), reason: "unknown matching type 3", unusable: true},
		{name: "short SHA-256", records: []TLSA{short}, chain: p.served(), opts: p.opts(), reason: "must be 32 bytes", unusable: true},
		{name: "SHA-512 of SHA-256 size", records: []TLSA{long}, chain: p.served(), opts: p.opts(), reason: "must be 64 bytes", unusable: true},
	}
	runVerifyCases(t, cases)

	// One match among others suffices; the result sorts them all.
	other := pkiIssue(t, p.inter, pkiSpec{cn: "next", names: []string{"mail.example.test"}}).cert
	smtp := p.opts()
	smtp.SMTP = true
	records := []TLSA{tlsaFor(3, 1, 1, other), short, tlsaFor(1, 1, 1, leaf), good, tlsaFor(2, 1, 1, p.inter.cert)}
	res, err := Verify(records, p.served(), smtp)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matched) != 2 || !res.Matched[0].Equal(good) || !res.Matched[1].Equal(records[4]) {
		t.Errorf("Matched = %v", res.Matched)
	}
	if len(res.Unusable) != 2 || !res.Unusable[0].Equal(short) || !res.Unusable[1].Equal(records[2]) {
		t.Errorf("Unusable = %v", res.Unusable)
	}
	wantOutcomes := []Outcome{OutcomeMismatch, OutcomeUnusable, OutcomeUnusable, OutcomeMatch, OutcomeMatch}
	for i, c := range res.Checks {
		if c.Outcome != wantOutcomes[i] || !c.Record.Equal(records[i]) {
			t.Errorf("check %d: %v %v, want %v", i, c.Record, c.Outcome, wantOutcomes[i])
		}
	}

	// Only unusable records: no match, and the error says why.
	_, err = Verify([]TLSA{tlsaFor(1, 1, 1, leaf), tlsaFor(0, 1, 1, p.root.cert)}, p.served(), smtp)
	var me *MismatchError
	if !errors.As(err, &me) || len(me.Checks) != 2 || !strings.Contains(err.Error(), "unusable for SMTP") {
		t.Errorf("all unusable: %v", err)
	}
	// No records at all.
	_, err = Verify(nil, p.served(), p.opts())
	if !errors.As(err, &me) || len(me.Records) != 0 || !strings.Contains(err.Error(), "no TLSA records") {
		t.Errorf("no records: %v", err)
	}
	// No chain is not a mismatch but a caller's error.
	if _, err := Verify([]TLSA{good}, nil, p.opts()); err == nil || errors.As(err, &me) {
		t.Errorf("no chain: %v", err)
	}
	// Whole certificates are abbreviated in the message.
	_, err = Verify([]TLSA{tlsaFor(3, 0, 0, other)}, p.served(), p.opts())
	if err == nil || strings.Contains(err.Error(), hex.EncodeToString(other.Raw)) || !strings.Contains(err.Error(), hex.EncodeToString(other.Raw[:8])+"…") {
		t.Errorf("full-certificate record in message: %v", err)
	}
}

// TestVerifyOpenSSLChain matches the openssl-made chain of the vectors with
// the records of vectors.txt, for every usage.
func TestVerifyOpenSSLChain(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(vectorDir, "fullchain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := ReadPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(vectorDir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root.crt")
	}
	opts := VerifyOptions{Names: []string{"mx.example.test"}, Roots: roots, Now: chain[0].NotBefore.Add(time.Hour)}
	n := 0
	for _, v := range readVectors(t) {
		if v.file != "fullchain.pem" && v.file != "root.crt" {
			continue
		}
		b, _ := hex.DecodeString(v.data)
		r := TLSA{v.usage, v.selector, v.match, b}
		if v.file == "root.crt" {
			r.Usage = UsagePKIXTA // the root is not sent, so only PKIX reaches it
		}
		res, err := Verify([]TLSA{r}, chain, opts)
		if err != nil || len(res.Matched) != 1 {
			t.Errorf("vectors.txt:%d (%v): %v", v.line, r, err)
		}
		n++
	}
	if n < 30 {
		t.Errorf("only %d records checked", n)
	}
	// And the same records fail for another host name, except DANE-EE.
	opts.Names = []string{"www.example.test"}
	for u := range uint8(4) {
		r, err := Compute(chain[len(chain)-1], u, 1, 1)
		if u == UsagePKIXEE || u == UsageDANEEE {
			r, err = Compute(chain[0], u, 1, 1)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = Verify([]TLSA{r}, chain, opts)
		if (err == nil) != (u == UsageDANEEE) {
			t.Errorf("usage %d with a wrong name: %v", u, err)
		}
	}
}
