package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

const (
	keyA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	keyB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// TestCacheGaps checks the prober's model of resolver caches: an answer
// without the key's record counts until its TTL (or negative TTL) after a
// server last gave it, and not a moment longer.
func TestCacheGaps(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	c := dnstest.StartT(t, dnstest.Options{Origin: zone, Secondaries: 1, SOATTL: 60, NegativeTTL: 1, Now: clock.Now})
	w := &world{dns: c, port: "25", start: t0}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	update := func(d time.Duration, add, remove string) {
		t.Helper()
		clock.set(at(d))
		err := c.Update(func(z *dnstest.Zone) error {
			if remove != "" {
				for _, rr := range z.Lookup(w.owner(), dns.TypeTLSA) {
					if strings.EqualFold(rr.(*dns.TLSA).Certificate, remove) {
						z.Remove(rr)
					}
				}
			}
			if add != "" {
				return z.AddString("_25._tcp.mail 2 IN TLSA 3 1 1 " + add)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	expect := func(d time.Duration, key string, gaps int) {
		t.Helper()
		got := cacheGaps(w, at(d), key)
		if len(got) != gaps {
			t.Errorf("at +%s for key %.4s: %d gaps %q, want %d", d, key, len(got), got, gaps)
		}
	}

	// No record yet: both servers deny the name.
	expect(500*time.Millisecond, keyA, 2)
	update(time.Second, keyA, "")
	// Denials given until +1s may be cached for the negative TTL, 1s.
	expect(1500*time.Millisecond, keyA, 2)
	expect(2100*time.Millisecond, keyA, 0)
	expect(2100*time.Millisecond, keyB, 2) // the served RRset lacks B
	// Switch the RRset from A to B: answers with only A stay cacheable for
	// their TTL of 2s.
	update(3*time.Second, keyB, keyA)
	expect(4*time.Second, keyB, 2)
	expect(5100*time.Millisecond, keyB, 0)
	expect(5100*time.Millisecond, keyA, 2)
}

// TestValidateTLSA checks the final check's DNSSEC validation: a chain
// from the zone's DS validates; another zone's DS, a name without records
// and an unsigned zone do not.
func TestValidateTLSA(t *testing.T) {
	signed := dnstest.StartT(t, dnstest.Options{Origin: zone, Signed: true,
		Records: []string{"_25._tcp.mail 2 IN TLSA 3 1 1 " + keyA}})
	other := dnstest.StartT(t, dnstest.Options{Origin: zone, Signed: true})
	unsigned := dnstest.StartT(t, dnstest.Options{Origin: zone,
		Records: []string{"_25._tcp.mail 2 IN TLSA 3 1 1 " + keyA}})
	ctx := context.Background()
	owner := "_25._tcp." + mailHost + "."
	now := time.Now()

	v, err := validateTLSA(ctx, signed.Primary(), owner, signed.DS(), now)
	if err != nil {
		t.Fatalf("signed zone: %v", err)
	}
	if len(v.records) != 1 || v.records[0].String() != "3 1 1 "+keyA {
		t.Errorf("records %v, want the one 3 1 1 %s", v.records, keyA)
	}
	if v.ksk != signed.DS().KeyTag {
		t.Errorf("KSK tag %d, want the DS's %d", v.ksk, signed.DS().KeyTag)
	}
	if _, err := validateTLSA(ctx, signed.Primary(), owner, other.DS(), now); err == nil || !strings.Contains(err.Error(), "no DNSKEY matches the DS") {
		t.Errorf("another zone's DS: %v, want no DNSKEY matching", err)
	}
	if _, err := validateTLSA(ctx, signed.Primary(), "_26._tcp."+mailHost+".", signed.DS(), now); err == nil {
		t.Errorf("a name without TLSA records validated")
	}
	if _, err := validateTLSA(ctx, unsigned.Primary(), owner, signed.DS(), now); err == nil {
		t.Errorf("an unsigned zone validated")
	}
	// Signatures are dated: far in the future they have expired.
	if _, err := validateTLSA(ctx, signed.Primary(), owner, signed.DS(), now.AddDate(10, 0, 0)); err == nil || !strings.Contains(err.Error(), "validity period") {
		t.Errorf("ten years on: %v, want an expired signature", err)
	}
}

// TestResolvedTLSA checks the final check's question to the resolver: the
// records with the AD bit count; the same records without it (no trust
// anchor), or a name without records, do not.
func TestResolvedTLSA(t *testing.T) {
	signed := dnstest.StartT(t, dnstest.Options{Origin: zone, Signed: true,
		Records: []string{"_25._tcp.mail 2 IN TLSA 3 1 1 " + keyA}})
	owner := "_25._tcp." + mailHost + "."
	ctx := context.Background()

	got, err := resolvedTLSA(ctx, signed.StartResolverT(t).Addr(), owner)
	if err != nil {
		t.Fatalf("signed zone: %v", err)
	}
	if len(got) != 1 || got[0].String() != "3 1 1 "+keyA {
		t.Errorf("records %v, want the one 3 1 1 %s", got, keyA)
	}
	opts := signed.ResolverOptions()
	opts.Anchor = nil
	if _, err := resolvedTLSA(ctx, dnstest.StartResolverT(t, opts).Addr(), owner); err == nil || !strings.Contains(err.Error(), "AD bit") {
		t.Errorf("without a trust anchor: %v, want no AD bit", err)
	}
	if _, err := resolvedTLSA(ctx, signed.StartResolverT(t).Addr(), "_26._tcp."+mailHost+"."); err == nil {
		t.Errorf("a name without TLSA records passed")
	}
}
