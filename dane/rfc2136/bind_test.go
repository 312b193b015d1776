package rfc2136

import (
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/rig"
	"github.com/miekg/dns"
)

// TestBIND runs the publisher against a real BIND 9 with a signed zone.
func TestBIND(t *testing.T) {
	b := rig.StartBIND(t, rig.BINDOptions{Signed: true, TSIGAlgorithm: "hmac-sha512",
		Records: []string{`_25._tcp.mail 300 IN TXT "someone else's"`}})
	p := newPublisher(t, b.Addr, func(cfg *Config) {
		cfg.TSIGName, cfg.TSIGAlgorithm, cfg.TSIGSecret = b.TSIGName, b.TSIGAlgorithm, b.TSIGSecret
	})
	owner := "_25._tcp.mail." + b.Zone
	ours := rr(t, owner+" 300 IN TLSA 3 1 1 "+strings.Repeat("ab", 32))
	next := rr(t, owner+" 300 IN TLSA 3 1 1 "+strings.Repeat("cd", 32))

	for _, r := range []dns.RR{ours, ours, next} { // the repeat is a no-op
		if err := p.Add(t.Context(), r); err != nil {
			t.Fatalf("add: %v\nnamed log:\n%s", err, b.Log())
		}
	}
	got := records(t, p, owner, dns.TypeTLSA)
	if len(got) != 2 || !has(got, ours) || !has(got, next) {
		t.Fatalf("after adds: %v", got)
	}
	for range 2 {
		if err := p.Delete(t.Context(), ours); err != nil {
			t.Fatalf("delete: %v\nnamed log:\n%s", err, b.Log())
		}
	}
	if got := records(t, p, owner, dns.TypeTLSA); len(got) != 1 || !has(got, next) {
		t.Fatalf("after delete: %v", got)
	}
	if got := records(t, p, owner, dns.TypeTXT); len(got) != 1 {
		t.Fatalf("someone else's TXT: %v", got)
	}

	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad secret", func(cfg *Config) { cfg.TSIGSecret = otherSecret }, "(NOTAUTH, BADSIG): check tsig_name/tsig_algorithm/tsig_secret"},
		{"unknown key", func(cfg *Config) { cfg.TSIGName = "stranger." }, "(NOTAUTH, BADKEY): check tsig_name/tsig_algorithm/tsig_secret"},
		{"other algorithm", func(cfg *Config) { cfg.TSIGAlgorithm = dns.HmacSHA256 }, "(NOTAUTH, BADKEY)"},
		{"clock", func(cfg *Config) { cfg.Now = func() time.Time { return time.Now().Add(-time.Hour) } }, "(NOTAUTH, BADTIME)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPublisher(t, b.Addr, func(cfg *Config) {
				cfg.TSIGName, cfg.TSIGAlgorithm, cfg.TSIGSecret = b.TSIGName, b.TSIGAlgorithm, b.TSIGSecret
				tc.mod(cfg)
			})
			err := p.Add(t.Context(), ours)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), b.TSIGSecret) {
				t.Fatalf("error shows the secret")
			}
		})
	}

	// A name outside the zone BIND serves.
	if err := p.Add(t.Context(), rr(t, "_25._tcp.mail.example.invalid. 300 IN TLSA 3 1 1 00")); err == nil ||
		!strings.Contains(err.Error(), "no zone on "+b.Addr) {
		t.Fatalf("outside the zone: %v", err)
	}
}
