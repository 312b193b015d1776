package dane

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// VerifyOptions are the client's side of a DANE check.
type VerifyOptions struct {
	// Names are the reference identifiers the leaf must carry for usages
	// 0, 1 and 2: the host name connected to, and for SMTP also the
	// next-hop domain (RFC 7672 §3.2.3). Any one suffices. Usage 3 ignores
	// names and validity dates (RFC 7671 §5.1). With no names, records of
	// usages 0 to 2 never match.
	Names []string
	// Roots are the PKIX trust anchors for usages 0 and 1; nil means the
	// system pool.
	Roots *x509.CertPool
	// Now is the time for validity checks; zero means time.Now().
	Now time.Time
	// SMTP applies RFC 7672 §3.1.3: usages 0 and 1 are unusable.
	SMTP bool
}

// Outcome is what a record made of a chain.
type Outcome int

const (
	// OutcomeMismatch: the record is usable and does not authenticate the
	// chain.
	OutcomeMismatch Outcome = iota
	// OutcomeMatch: the record authenticates the chain.
	OutcomeMatch
	// OutcomeUnusable: a client must ignore the record: unknown parameters,
	// data of the wrong length, or a PKIX usage over SMTP.
	OutcomeUnusable
)

func (o Outcome) String() string {
	switch o {
	case OutcomeMatch:
		return "match"
	case OutcomeUnusable:
		return "unusable"
	}
	return "mismatch"
}

// Check is the outcome for one record.
type Check struct {
	Record  TLSA
	Outcome Outcome
	// Reason says why the record did not match or is unusable, for people.
	Reason string
	// Cert is the certificate the record matched: the leaf for usages 1
	// and 3, the CA or trust anchor for 0 and 2. It is nil when a "2 1 0"
	// record matched as a bare key that signs the chain.
	Cert *x509.Certificate
}

// Result says which records matched the chain.
type Result struct {
	// LeafSPKI is the hex SHA-256 of the served leaf's SubjectPublicKeyInfo
	// (the data of its "3 1 1" record).
	LeafSPKI string
	Matched  []TLSA
	Unusable []TLSA
	// Checks holds every record's outcome, in the order given.
	Checks []Check
}

// MismatchError is returned by Verify when no usable record matches.
type MismatchError struct {
	// LeafSPKI is the hex SHA-256 of the served leaf's SubjectPublicKeyInfo.
	LeafSPKI string
	// Records are the records checked, Checks why each failed.
	Records []TLSA
	Checks  []Check
}

func (e *MismatchError) Error() string {
	var b strings.Builder
	if len(e.Records) == 0 {
		fmt.Fprintf(&b, "no TLSA records for the served chain (leaf key 3 1 1 %s)", e.LeafSPKI)
		return b.String()
	}
	fmt.Fprintf(&b, "no usable TLSA record matches the served chain (leaf key 3 1 1 %s):", e.LeafSPKI)
	for i, c := range e.Checks {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s: %s", shortRecord(c.Record), c.Reason)
	}
	return b.String()
}

// shortRecord prints a record for a message: digests in full, so they can
// be compared by eye, whole certificates and keys abbreviated.
func shortRecord(t TLSA) string {
	if len(t.Data) <= 64 {
		return t.String()
	}
	return fmt.Sprintf("%d %d %d %s…", t.Usage, t.Selector, t.MatchingType, hex.EncodeToString(t.Data[:8]))
}

// MatchesCert reports whether the record's data is cert's under its
// selector and matching type. It compares digests only; Verify applies the
// rules of each usage.
func (t TLSA) MatchesCert(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	b, err := selected(cert, t.Selector)
	if err != nil {
		return false
	}
	d, err := digest(b, t.MatchingType)
	return err == nil && bytes.Equal(d, t.Data)
}

// Verify checks a served chain (leaf first, as the server sends it)
// against TLSA records by the rules of RFC 6698 §2.1 as updated by RFC 7671,
// and RFC 7672 when opts.SMTP is set:
//
//   - usage 3 (DANE-EE): the leaf matches; names and dates are not checked;
//   - usage 2 (DANE-TA): a certificate above the leaf in the served chain
//     matches, or, for a "2 1 0" record, its key signs a certificate of the
//     chain (RFC 7671 §5.2.2); the chain from the leaf up to it verifies by
//     signature and dates, except the trust anchor's own dates; and the
//     leaf carries one of opts.Names;
//   - usage 1 (PKIX-EE): the leaf matches and validates under PKIX;
//   - usage 0 (PKIX-TA): a CA certificate of a PKIX-validated chain matches.
//
// Verify returns a *MismatchError when no usable record matches; the Result
// is filled in either way.
func Verify(records []TLSA, chain []*x509.Certificate, opts VerifyOptions) (Result, error) {
	if len(chain) == 0 || chain[0] == nil {
		return Result{}, errors.New("dane: no certificate chain to verify")
	}
	v := &verifier{chain: chain, opts: opts, now: opts.Now}
	if v.now.IsZero() {
		v.now = time.Now()
	}
	leafSPKI, err := SPKISHA256(chain[0].PublicKey)
	if err != nil {
		return Result{}, fmt.Errorf("dane: leaf key: %w", err)
	}
	res := Result{LeafSPKI: leafSPKI}
	for _, r := range records {
		c := v.check(r)
		res.Checks = append(res.Checks, c)
		switch c.Outcome {
		case OutcomeMatch:
			res.Matched = append(res.Matched, r)
		case OutcomeUnusable:
			res.Unusable = append(res.Unusable, r)
		}
	}
	if len(res.Matched) == 0 {
		return res, &MismatchError{LeafSPKI: leafSPKI, Records: records, Checks: res.Checks}
	}
	return res, nil
}

// verifier holds one Verify call's chain and the PKIX result, which is
// computed at most once however many records need it.
type verifier struct {
	chain    []*x509.Certificate
	opts     VerifyOptions
	now      time.Time
	pkixDone bool
	pkix     [][]*x509.Certificate
	pkixErr  error
}

// unusableReason says why a client must ignore the record, or "".
func unusableReason(t TLSA, smtp bool) string {
	switch {
	case t.Usage > UsageDANEEE:
		return fmt.Sprintf("unknown usage %d", t.Usage)
	case t.Selector > SelectorSPKI:
		return fmt.Sprintf("unknown selector %d", t.Selector)
	case t.MatchingType > MatchSHA512:
		return fmt.Sprintf("unknown matching type %d", t.MatchingType)
	case t.MatchingType == MatchSHA256 && len(t.Data) != 32:
		return fmt.Sprintf("SHA-256 data must be 32 bytes, this is %d", len(t.Data))
	case t.MatchingType == MatchSHA512 && len(t.Data) != 64:
		return fmt.Sprintf("SHA-512 data must be 64 bytes, this is %d", len(t.Data))
	case smtp && t.Usage == UsagePKIXTA:
		return "PKIX-TA(0) is unusable for SMTP (RFC 7672 §3.1.3)"
	case smtp && t.Usage == UsagePKIXEE:
		return "PKIX-EE(1) is unusable for SMTP (RFC 7672 §3.1.3)"
	}
	return ""
}

func (v *verifier) check(t TLSA) Check {
	if why := unusableReason(t, v.opts.SMTP); why != "" {
		return Check{Record: t, Outcome: OutcomeUnusable, Reason: why}
	}
	leaf := v.chain[0]
	switch t.Usage {
	case UsageDANEEE:
		if t.MatchesCert(leaf) {
			return Check{Record: t, Outcome: OutcomeMatch, Cert: leaf}
		}
		return mismatch(t, "the leaf's %s does not match", selectorWord(t))
	case UsagePKIXEE:
		if !t.MatchesCert(leaf) {
			return mismatch(t, "the leaf's %s does not match", selectorWord(t))
		}
		if _, err := v.pkixChains(); err != nil {
			return mismatch(t, "the leaf matches but PKIX validation fails: %v", err)
		}
		return Check{Record: t, Outcome: OutcomeMatch, Cert: leaf}
	case UsagePKIXTA:
		chains, err := v.pkixChains()
		if err != nil {
			return mismatch(t, "PKIX validation fails: %v", err)
		}
		for _, ch := range chains {
			for _, c := range ch[1:] {
				if t.MatchesCert(c) {
					return Check{Record: t, Outcome: OutcomeMatch, Cert: c}
				}
			}
		}
		return mismatch(t, "no CA certificate of the PKIX-validated chain matches")
	}
	return v.checkDANETA(t)
}

func mismatch(t TLSA, format string, a ...any) Check {
	return Check{Record: t, Outcome: OutcomeMismatch, Reason: fmt.Sprintf(format, a...)}
}

func selectorWord(t TLSA) string {
	if t.Selector == SelectorCert {
		return "certificate"
	}
	return "key"
}

func (v *verifier) checkDANETA(t TLSA) Check {
	// The trust anchor: a certificate the server sends above the leaf,
	// or a bare key in a "2 1 0" record.
	isTA := func(c *x509.Certificate) bool { return t.MatchesCert(c) }
	var taKey crypto.PublicKey
	if t.Selector == SelectorSPKI && t.MatchingType == MatchFull {
		if k, err := x509.ParsePKIXPublicKey(t.Data); err == nil {
			taKey = k
		}
	}
	anyTA := taKey != nil
	for _, c := range v.chain[1:] {
		anyTA = anyTA || isTA(c)
	}
	if !anyTA {
		if t.Selector == SelectorSPKI && t.MatchingType == MatchFull {
			return mismatch(t, "no certificate above the leaf in the served chain matches, and the data is not a public key")
		}
		return mismatch(t, "no certificate above the leaf in the served chain matches (the server must send the trust anchor's certificate)")
	}
	ta, err := v.pathToTA(isTA, taKey)
	if err != nil {
		return mismatch(t, "%v", err)
	}
	if len(v.opts.Names) == 0 {
		return mismatch(t, "no reference name to check the leaf's names against")
	}
	if !nameMatches(v.chain[0], v.opts.Names) {
		return mismatch(t, "the leaf's names %s do not include %s", leafNames(v.chain[0]), strings.Join(v.opts.Names, " or "))
	}
	return Check{Record: t, Outcome: OutcomeMatch, Cert: ta}
}

// pathToTA walks from the leaf up through the served certificates, by
// issuer name and signature, until it reaches the trust anchor. It returns
// the anchor's certificate (nil for a bare key) or why no path verifies.
// The anchor's own dates are not checked: DNS asserts it, not its validity
// period. Every certificate below it must be valid now.
func (v *verifier) pathToTA(isTA func(*x509.Certificate) bool, taKey crypto.PublicKey) (*x509.Certificate, error) {
	used := make([]bool, len(v.chain))
	used[0] = true
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	var walk func(c *x509.Certificate, depth int) (*x509.Certificate, bool)
	walk = func(c *x509.Certificate, depth int) (*x509.Certificate, bool) {
		if depth > 0 && isTA(c) {
			return c, true
		}
		if v.now.Before(c.NotBefore) || v.now.After(c.NotAfter) {
			fail(fmt.Errorf("%s is not valid at %s (valid %s to %s)", certName(c, depth),
				v.now.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339)))
			return nil, false
		}
		if taKey != nil {
			if err := checkSignedByKey(c, taKey); err == nil {
				return nil, true
			}
		}
		for j, p := range v.chain {
			if used[j] || !bytes.Equal(c.RawIssuer, p.RawSubject) {
				continue
			}
			if err := c.CheckSignatureFrom(p); err != nil {
				fail(fmt.Errorf("the signature on %s does not verify with the key of %s: %v", certName(c, depth), certName(p, -1), err))
				continue
			}
			used[j] = true
			if ta, ok := walk(p, depth+1); ok {
				return ta, true
			}
			used[j] = false
		}
		fail(fmt.Errorf("the chain ends at %s, issued by %q, without reaching the trust anchor", certName(c, depth), c.Issuer.String()))
		return nil, false
	}
	if ta, ok := walk(v.chain[0], 0); ok {
		return ta, nil
	}
	return nil, firstErr
}

// checkSignedByKey verifies c's signature with a bare key.
func checkSignedByKey(c *x509.Certificate, key crypto.PublicKey) error {
	// CheckSignatureFrom wants a parent certificate; a version-less
	// stand-in carrying only the key is treated as a v1 CA, whose
	// constraints RFC 7671 §5.2.2 leaves to the DNS.
	parent := &x509.Certificate{PublicKey: key}
	switch key.(type) {
	case *rsa.PublicKey:
		parent.PublicKeyAlgorithm = x509.RSA
	case *ecdsa.PublicKey:
		parent.PublicKeyAlgorithm = x509.ECDSA
	case ed25519.PublicKey:
		parent.PublicKeyAlgorithm = x509.Ed25519
	default:
		return fmt.Errorf("unsupported key type %T", key)
	}
	return c.CheckSignatureFrom(parent)
}

// pkixChains validates the chain under PKIX for any of the names.
func (v *verifier) pkixChains() ([][]*x509.Certificate, error) {
	if v.pkixDone {
		return v.pkix, v.pkixErr
	}
	v.pkixDone = true
	if len(v.opts.Names) == 0 {
		v.pkixErr = errors.New("no reference name to validate against")
		return nil, v.pkixErr
	}
	inter := x509.NewCertPool()
	for _, c := range v.chain[1:] {
		inter.AddCert(c)
	}
	for _, name := range v.opts.Names {
		chains, err := v.chain[0].Verify(x509.VerifyOptions{
			DNSName:       strings.TrimSuffix(name, "."),
			Roots:         v.opts.Roots,
			Intermediates: inter,
			CurrentTime:   v.now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err == nil {
			v.pkix, v.pkixErr = chains, nil
			return chains, nil
		}
		if v.pkixErr == nil {
			v.pkixErr = err
		}
	}
	return nil, v.pkixErr
}

func nameMatches(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if n = strings.TrimSuffix(n, "."); n != "" && leaf.VerifyHostname(n) == nil {
			return true
		}
	}
	return false
}

func leafNames(c *x509.Certificate) string {
	if len(c.DNSNames) == 0 {
		return "(none)"
	}
	return strings.Join(c.DNSNames, ", ")
}

// certName names a certificate in messages: its position when known, and
// its subject.
func certName(c *x509.Certificate, depth int) string {
	subject := c.Subject.CommonName
	if subject == "" {
		subject = c.Subject.String()
	}
	if depth == 0 {
		return fmt.Sprintf("the leaf %q", subject)
	}
	return fmt.Sprintf("%q", subject)
}
