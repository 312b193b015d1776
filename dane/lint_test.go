package dane

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

// lintCodes runs Lint and checks what every warning must satisfy: one line,
// the record it names is one of those published.
func lintCodes(t *testing.T, records []TLSA, chain []*x509.Certificate, opts VerifyOptions) ([]string, []Warning) {
	t.Helper()
	ws := Lint(records, chain, opts)
	var codes []string
	for _, w := range ws {
		codes = append(codes, w.Code)
		if w.Msg == "" || strings.ContainsAny(w.Msg, "\r\n") {
			t.Errorf("%s: message is not one line: %q", w.Code, w.Msg)
		}
		if w.Record == nil || !containsRecord(records, *w.Record) {
			t.Errorf("%s: names record %v, which is not published", w.Code, w.Record)
		}
	}
	return codes, ws
}

func TestLintClean(t *testing.T) {
	p := newTestPKI(t)
	leaf := p.leaf.cert
	next := pkiKey(t) // the pre-published next key of a rollover
	nextRec, err := ComputeKey(next, 3, MatchSHA256)
	if err != nil {
		t.Fatal(err)
	}
	yearLong := pkiIssue(t, p.inter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"},
		notBefore: pkiNow().AddDate(0, -1, 0), notAfter: pkiNow().AddDate(1, 0, 0)}).cert
	smtp := p.opts()
	smtp.SMTP = true

	for _, tc := range []struct {
		name    string
		records []TLSA
		chain   []*x509.Certificate
		opts    VerifyOptions
	}{
		{"current and next key", []TLSA{tlsaFor(3, 1, 1, leaf), nextRec}, p.served(), smtp},
		{"3 1 1 and 3 1 2", []TLSA{tlsaFor(3, 1, 1, leaf), tlsaFor(3, 1, 2, leaf), nextRec}, p.served(), smtp},
		{"own CA and key", []TLSA{tlsaFor(3, 1, 1, leaf), tlsaFor(2, 1, 1, p.inter.cert)}, p.served(), smtp},
		{"PKIX usages on the web", []TLSA{tlsaFor(1, 1, 1, leaf), tlsaFor(0, 1, 1, p.root.cert)}, p.served(), p.opts()},
		{"3 0 1 on a year-long certificate", []TLSA{tlsaFor(3, 0, 1, yearLong)}, []*x509.Certificate{yearLong, p.inter.cert}, smtp},
	} {
		if codes, ws := lintCodes(t, tc.records, tc.chain, tc.opts); len(codes) != 0 {
			t.Errorf("%s: %v", tc.name, ws)
		}
	}
	if ws := Lint(nil, p.served(), smtp); ws != nil {
		t.Errorf("no records: %v", ws)
	}
}

func TestLintComboMismatch(t *testing.T) {
	p := newTestPKI(t)
	leaf := p.leaf.cert
	old := pkiIssue(t, p.inter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"}}).cert
	current := tlsaFor(3, 1, 1, leaf)
	opts := p.opts()
	opts.SMTP = true

	// A 3 1 2 record only for the old key: clients that do SHA-512 only
	// fail, although 3 1 1 matches.
	codes, ws := lintCodes(t, []TLSA{current, tlsaFor(3, 1, 2, old)}, p.served(), opts)
	if !slices.Equal(codes, []string{WarnComboMismatch}) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	w := ws[0]
	want := tlsaFor(3, 1, 2, leaf)
	if !w.Record.Equal(tlsaFor(3, 1, 2, old)) || w.Fix == nil || !w.Fix.Equal(want) {
		t.Errorf("record %v, fix %v; want fix %v", w.Record, w.Fix, want)
	}
	if !strings.Contains(w.Msg, "3 1 2") || !strings.Contains(w.Msg, want.String()) || !strings.Contains(w.Msg, "RFC 7671 §8") {
		t.Errorf("message: %s", w.Msg)
	}

	// Two stale combinations, one warning each, in order; a stale record
	// next to a matching one of the same combination is fine (rollover).
	// (The 3 0 1 record also pins a 90-day certificate.)
	codes, ws = lintCodes(t, []TLSA{tlsaFor(3, 0, 1, old), current, tlsaFor(3, 1, 1, old), tlsaFor(2, 1, 1, p.root.cert)}, p.served(), opts)
	if !slices.Equal(codes, []string{WarnComboMismatch, WarnComboMismatch, WarnCertPinShortLived}) ||
		!ws[0].Record.Equal(tlsaFor(3, 0, 1, old)) || !ws[1].Record.Equal(tlsaFor(2, 1, 1, p.root.cert)) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	if !ws[1].Fix.Equal(tlsaFor(2, 1, 1, p.inter.cert)) || !strings.Contains(ws[1].Msg, "must send the trust anchor") {
		t.Errorf("2 1 1 for an unsent root: fix %v, %s", ws[1].Fix, ws[1].Msg)
	}

	// The right digest, the wrong name: publishing it again would not help.
	wrongName := opts
	wrongName.Names = []string{"www.example.test"}
	codes, ws = lintCodes(t, []TLSA{current, tlsaFor(2, 1, 1, p.inter.cert)}, p.served(), wrongName)
	if !slices.Equal(codes, []string{WarnComboMismatch}) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	if !ws[0].Fix.Equal(current) || !strings.Contains(ws[0].Msg, "do not include www.example.test") || !strings.Contains(ws[0].Msg, "fix the chain") {
		t.Errorf("fix %v, %s", ws[0].Fix, ws[0].Msg)
	}
}

func TestLintCertPinShortLived(t *testing.T) {
	p := newTestPKI(t) // the leaf lives 90 days, as Let's Encrypt's do
	leaf := p.leaf.cert
	codes, ws := lintCodes(t, []TLSA{tlsaFor(3, 0, 1, leaf)}, p.served(), p.opts())
	if !slices.Equal(codes, []string{WarnCertPinShortLived}) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	if want := tlsaFor(3, 1, 1, leaf); !ws[0].Fix.Equal(want) || !strings.Contains(ws[0].Msg, want.String()) || !strings.Contains(ws[0].Msg, "90 days") {
		t.Errorf("fix %v: %s", ws[0].Fix, ws[0].Msg)
	}
	// 6-day certificates (the "shortlived" profile), and 3 0 2 and PKIX-EE.
	short := pkiIssue(t, p.inter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"},
		notBefore: pkiNow().Add(-time.Hour), notAfter: pkiNow().Add(6*24*time.Hour - time.Hour)}).cert
	codes, ws = lintCodes(t, []TLSA{tlsaFor(3, 0, 2, short), tlsaFor(1, 0, 1, short), tlsaFor(3, 1, 1, short)},
		[]*x509.Certificate{short, p.inter.cert}, p.opts())
	if !slices.Equal(codes, []string{WarnCertPinShortLived, WarnCertPinShortLived}) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	if !ws[1].Fix.Equal(tlsaFor(1, 1, 1, short)) {
		t.Errorf("PKIX-EE fix %v", ws[1].Fix)
	}
}

func TestLintIntermediatePin(t *testing.T) {
	isrg := pkiIssue(t, nil, pkiSpec{cn: "ISRG Root X1", org: "Internet Security Research Group", ca: true, notAfter: pkiNow().AddDate(5, 0, 0)})
	r11 := pkiIssue(t, isrg, pkiSpec{cn: "R11", org: "Let's Encrypt", ca: true})
	leLeaf := pkiIssue(t, r11, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"}})
	chain := []*x509.Certificate{leLeaf.cert, r11.cert}
	roots := x509.NewCertPool()
	roots.AddCert(isrg.cert)
	opts := VerifyOptions{Names: []string{"mail.example.test"}, Roots: roots, Now: pkiNow(), SMTP: true}

	codes, ws := lintCodes(t, []TLSA{tlsaFor(3, 1, 1, leLeaf.cert), tlsaFor(2, 1, 1, r11.cert)}, chain, opts)
	if !slices.Equal(codes, []string{WarnIntermediatePin}) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	w := ws[0]
	if !w.Record.Equal(tlsaFor(2, 1, 1, r11.cert)) || !w.Fix.Equal(tlsaFor(3, 1, 1, leLeaf.cert)) ||
		!strings.Contains(w.Msg, `"R11"`) || !strings.Contains(w.Msg, "Let's Encrypt") {
		t.Errorf("%v %v: %s", w.Record, w.Fix, w.Msg)
	}
	// Pinning the root instead (sent by the server) is fine.
	codes, ws = lintCodes(t, []TLSA{tlsaFor(2, 1, 1, isrg.cert)}, append(chain, isrg.cert), opts)
	if len(codes) != 0 {
		t.Errorf("root pin: %v", ws)
	}
	// A root pin the server's chain does not reach: the advice must not be
	// to pin the intermediate instead.
	codes, ws = lintCodes(t, []TLSA{tlsaFor(3, 1, 1, leLeaf.cert), tlsaFor(2, 1, 1, isrg.cert)}, chain, opts)
	if !slices.Equal(codes, []string{WarnComboMismatch}) || !ws[0].Fix.Equal(tlsaFor(3, 1, 1, leLeaf.cert)) {
		t.Errorf("root not sent: %v %v", codes, ws)
	}
	// PKIX-TA on the intermediate, over HTTPS, is the same trap.
	opts.SMTP = false
	codes, ws = lintCodes(t, []TLSA{tlsaFor(0, 0, 1, r11.cert)}, chain, opts)
	if !slices.Equal(codes, []string{WarnIntermediatePin}) {
		t.Errorf("PKIX-TA pin: %v %v", codes, ws)
	}
	// Pebble starts with a new intermediate every time.
	pRoot := pkiIssue(t, nil, pkiSpec{cn: "Pebble Root CA 1a2b3c", ca: true})
	pInter := pkiIssue(t, pRoot, pkiSpec{cn: "Pebble Intermediate CA 4d5e6f", ca: true})
	pLeaf := pkiIssue(t, pInter, pkiSpec{cn: "mail.example.test", names: []string{"mail.example.test"}})
	codes, ws = lintCodes(t, []TLSA{tlsaFor(2, 1, 1, pInter.cert)}, []*x509.Certificate{pLeaf.cert, pInter.cert}, opts)
	if !slices.Equal(codes, []string{WarnIntermediatePin}) || !strings.Contains(ws[0].Msg, "Pebble") {
		t.Errorf("Pebble: %v %v", codes, ws)
	}
	// A private CA's intermediate (TestLintClean's "own CA") is not.
}

func TestLintUnusable(t *testing.T) {
	p := newTestPKI(t)
	leaf := p.leaf.cert
	smtp := p.opts()
	smtp.SMTP = true
	good := tlsaFor(3, 1, 1, leaf)

	codes, ws := lintCodes(t, []TLSA{good, tlsaFor(1, 1, 1, leaf), tlsaFor(0, 1, 1, p.inter.cert), tlsaFor(0, 1, 1, p.root.cert)}, p.served(), smtp)
	if !slices.Equal(codes, []string{WarnUnusableSMTP, WarnUnusableSMTP, WarnUnusableSMTP}) {
		t.Fatalf("codes = %v: %v", codes, ws)
	}
	// PKIX-EE becomes DANE-EE with the same data; PKIX-TA becomes DANE-TA
	// when the server sends that CA, else the leaf's key.
	for i, want := range []TLSA{tlsaFor(3, 1, 1, leaf), tlsaFor(2, 1, 1, p.inter.cert), good} {
		if !ws[i].Fix.Equal(want) || !strings.Contains(ws[i].Msg, want.String()) || !strings.Contains(ws[i].Msg, "RFC 7672") {
			t.Errorf("%d: fix %v, want %v: %s", i, ws[i].Fix, want, ws[i].Msg)
		}
	}
	// Only SMTP ignores PKIX usages.
	if codes, ws := lintCodes(t, []TLSA{good, tlsaFor(1, 1, 1, leaf)}, p.served(), p.opts()); len(codes) != 0 {
		t.Errorf("not SMTP: %v", ws)
	}
	// PKIX-only records for SMTP: unusable, and nothing else to report.
	codes, ws = lintCodes(t, []TLSA{tlsaFor(1, 1, 1, leaf)}, p.served(), smtp)
	if !slices.Equal(codes, []string{WarnUnusableSMTP}) {
		t.Errorf("PKIX only: %v %v", codes, ws)
	}

	codes, ws = lintCodes(t, []TLSA{good, {3, 1, 1, good.Data[:31]}, {7, 1, 1, good.Data}}, p.served(), smtp)
	if !slices.Equal(codes, []string{WarnUnusable, WarnUnusable}) ||
		!strings.Contains(ws[0].Msg, "32 bytes") || !strings.Contains(ws[1].Msg, "unknown usage 7") {
		t.Errorf("codes = %v: %v", codes, ws)
	}
}
