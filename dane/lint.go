package dane

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Warning codes of Lint.
const (
	// WarnComboMismatch: no record of one usage/selector/matching
	// combination matches the served chain. RFC 7671 §8 requires one per
	// combination, because a client may support only some of them.
	WarnComboMismatch = "combo-mismatch"
	// WarnCertPinShortLived: a "3 0 x" (or "1 0 x") record pins a whole
	// certificate that is replaced at every renewal.
	WarnCertPinShortLived = "cert-pin-short-lived"
	// WarnIntermediatePin: a "2 x x" (or "0 x x") record pins an issuing
	// intermediate of a CA that replaces them on its own schedule.
	WarnIntermediatePin = "intermediate-pin"
	// WarnUnusableSMTP: a PKIX usage (0 or 1) published for SMTP, where
	// clients ignore it (RFC 7672 §3.1.3).
	WarnUnusableSMTP = "unusable-smtp"
	// WarnUnusable: a record every client ignores: unknown parameters or
	// data of the wrong length.
	WarnUnusable = "unusable"
)

// shortLived is the longest certificate lifetime that counts as short for
// WarnCertPinShortLived: it covers the 90-day (and shorter) certificates of
// ACME CAs, which renew every few weeks.
const shortLived = 100 * 24 * time.Hour

// Warning is one finding of Lint.
type Warning struct {
	Code string
	// Record is the published record concerned; for WarnComboMismatch, the
	// first record of the combination.
	Record *TLSA
	// Fix is the record to publish instead or alongside, computed from the
	// served chain, when there is one.
	Fix *TLSA
	// Msg says in one line what goes wrong and what to publish instead.
	Msg string
}

func (w Warning) String() string { return w.Code + ": " + w.Msg }

// Lint checks a published TLSA RRset against the chain being served
// (leaf first) and returns what will break or is bound to: combinations
// with no matching record (RFC 7671 §8), whole-certificate pins on
// short-lived certificates, pins on a rotating CA's intermediates, and
// records that clients ignore. opts are as for Verify. A clean set yields
// no warnings.
func Lint(records []TLSA, chain []*x509.Certificate, opts VerifyOptions) []Warning {
	if len(records) == 0 || len(chain) == 0 || chain[0] == nil {
		return nil
	}
	res, err := Verify(records, chain, opts)
	if err != nil && res.LeafSPKI == "" {
		return nil // no usable leaf key: nothing to compare with
	}
	leaf := chain[0]
	// The record that serves every client: DANE-EE, the key, SHA-256.
	rec311, _ := Compute(leaf, UsageDANEEE, SelectorSPKI, MatchSHA256)
	v := &verifier{chain: chain, opts: opts, now: opts.Now}
	if v.now.IsZero() {
		v.now = time.Now()
	}

	var ws []Warning
	add := func(code string, rec TLSA, fix *TLSA, format string, a ...any) {
		ws = append(ws, Warning{Code: code, Record: &rec, Fix: fix, Msg: fmt.Sprintf(format, a...)})
	}

	type combo struct{ u, s, m uint8 }
	var order []combo
	matched := map[combo]bool{}
	first := map[combo]Check{}
	for _, c := range res.Checks {
		r := c.Record
		if c.Outcome == OutcomeUnusable {
			if opts.SMTP && (r.Usage == UsagePKIXTA || r.Usage == UsagePKIXEE) && unusableReason(r, false) == "" {
				fix := smtpFix(v, r, rec311)
				add(WarnUnusableSMTP, r, &fix, "%s: SMTP clients ignore %s records (RFC 7672 §3.1.3): publish %s instead",
					shortRecord(r), usageName(r.Usage), fixText(fix))
			} else {
				add(WarnUnusable, r, nil, "%s: %s, so every client ignores it: remove it", shortRecord(r), c.Reason)
			}
			continue
		}
		k := combo{r.Usage, r.Selector, r.MatchingType}
		if _, seen := first[k]; !seen {
			order = append(order, k)
			first[k] = c
		}
		matched[k] = matched[k] || c.Outcome == OutcomeMatch
	}
	for _, k := range order {
		if matched[k] {
			continue
		}
		c := first[k]
		params := fmt.Sprintf("%d %d %d", k.u, k.s, k.m)
		fix, ok := comboFix(chain, c.Record)
		switch {
		case ok && !containsRecord(records, fix):
			add(WarnComboMismatch, c.Record, &fix,
				"no %s record matches the served chain, so clients that use only %s records fail (RFC 7671 §8): %s; publish %s",
				params, params, c.Reason, fixText(fix))
		default:
			// The right data is published, or none can be computed, yet
			// the record fails: the chain or the names are at fault.
			add(WarnComboMismatch, c.Record, &rec311,
				"no %s record matches the served chain, so clients that use only %s records fail (RFC 7671 §8): %s; fix the chain or publish %s",
				params, params, c.Reason, fixText(rec311))
		}
	}

	life := leaf.NotAfter.Sub(leaf.NotBefore)
	for _, r := range records {
		if unusableReason(r, opts.SMTP) != "" {
			continue
		}
		if (r.Usage == UsageDANEEE || r.Usage == UsagePKIXEE) && r.Selector == SelectorCert && life <= shortLived {
			fix := TLSA{Usage: r.Usage, Selector: SelectorSPKI, MatchingType: MatchSHA256, Data: rec311.Data}
			add(WarnCertPinShortLived, r, &fix,
				"%s pins the whole certificate, which changes at every renewal (this one is valid for %d days): publish %s for its key instead, which stays valid across renewals that keep the key",
				shortRecord(r), int(life.Hours()/24), fixText(fix))
		}
		if r.Usage == UsageDANETA || r.Usage == UsagePKIXTA {
			for _, c := range chain[1:] {
				ca := rotatingCA(c)
				if ca == "" || isSelfIssued(c) || !r.MatchesCert(c) {
					continue
				}
				add(WarnIntermediatePin, r, &rec311,
					"%s pins the %s intermediate %q, but %s rotates its intermediates, so a renewal can come from another one and break the pin: publish %s for the server's key instead",
					shortRecord(r), ca, c.Subject.CommonName, ca, fixText(rec311))
				break
			}
		}
	}
	return ws
}

// comboFix computes the record with rec's parameters from the served
// chain: from the leaf for usages 1 and 3, from the top certificate sent
// for 0 and 2 (the usual trust anchor), unless that is an intermediate
// Lint would warn about.
func comboFix(chain []*x509.Certificate, rec TLSA) (TLSA, bool) {
	cert := chain[0]
	if rec.Usage == UsageDANETA || rec.Usage == UsagePKIXTA {
		if len(chain) < 2 {
			return TLSA{}, false
		}
		cert = chain[len(chain)-1]
		if rotatingCA(cert) != "" && !isSelfIssued(cert) {
			return TLSA{}, false
		}
	}
	fix, err := Compute(cert, rec.Usage, rec.Selector, rec.MatchingType)
	return fix, err == nil
}

// smtpFix translates a PKIX record for SMTP: PKIX-EE becomes DANE-EE with
// the same data; PKIX-TA becomes DANE-TA when that would match the chain,
// else "3 1 1".
func smtpFix(v *verifier, r, rec311 TLSA) TLSA {
	switch r.Usage {
	case UsagePKIXEE:
		r.Usage = UsageDANEEE
		if v.check(r).Outcome == OutcomeMatch {
			return r
		}
	case UsagePKIXTA:
		r.Usage = UsageDANETA
		if v.check(r).Outcome == OutcomeMatch {
			return r
		}
	}
	return rec311
}

func fixText(t TLSA) string {
	if len(t.Data) <= 64 {
		return t.String()
	}
	// Whole certificates and keys are too long for a message line.
	return shortRecord(t) + " (the full record: daneroll tlsa)"
}

func usageName(u uint8) string {
	switch u {
	case UsagePKIXTA:
		return "PKIX-TA(0)"
	case UsagePKIXEE:
		return "PKIX-EE(1)"
	case UsageDANETA:
		return "DANE-TA(2)"
	case UsageDANEEE:
		return "DANE-EE(3)"
	}
	return fmt.Sprintf("usage %d", u)
}

func containsRecord(set []TLSA, t TLSA) bool {
	for _, x := range set {
		if x.Equal(t) {
			return true
		}
	}
	return false
}

// rotatingCA names the CA when c is an intermediate of one known to replace
// its issuing intermediates on its own schedule, so that a pin on one breaks
// without notice: Let's Encrypt (production and staging) changes them
// yearly or sooner, and Pebble, its test server, at every start.
func rotatingCA(c *x509.Certificate) string {
	for _, org := range slices.Concat(c.Subject.Organization, c.Issuer.Organization) {
		if strings.Contains(org, "Let's Encrypt") || strings.Contains(org, "Internet Security Research Group") {
			return "Let's Encrypt"
		}
	}
	if strings.HasPrefix(c.Subject.CommonName, "Pebble Intermediate CA") {
		return "Pebble"
	}
	return ""
}

func isSelfIssued(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer)
}
