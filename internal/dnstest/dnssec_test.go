package dnstest

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// keysOf returns the KSK and ZSK the server serves, checked against the DS
// and against Cluster.DNSKEYs.
func keysOf(t *testing.T, c *Cluster, now time.Time) (ksk, zsk *dns.DNSKEY) {
	t.Helper()
	r := ask(t, "tcp", c.Primary(), c.Origin(), dns.TypeDNSKEY, true, true)
	keys := rrsOfType(r.Answer, dns.TypeDNSKEY)
	if len(keys) != 2 {
		t.Fatalf("DNSKEY answer %v", r.Answer)
	}
	for _, k := range keys {
		switch k := k.(*dns.DNSKEY); k.Flags {
		case 257:
			ksk = k
		case 256:
			zsk = k
		}
	}
	if ksk == nil || zsk == nil || ksk.Algorithm != dns.ECDSAP256SHA256 || zsk.Algorithm != dns.ECDSAP256SHA256 {
		t.Fatalf("want an ECDSAP256SHA256 KSK and ZSK, got %v", keys)
	}
	ds := c.DS()
	if ds == nil || ds.DigestType != dns.SHA256 || ds.KeyTag != ksk.KeyTag() {
		t.Fatalf("DS %v does not name the KSK %d", ds, ksk.KeyTag())
	}
	if want := ksk.ToDS(dns.SHA256); !strings.EqualFold(want.Digest, ds.Digest) {
		t.Fatalf("DS digest %s, the served KSK's is %s", ds.Digest, want.Digest)
	}
	got := c.DNSKEYs()
	if len(got) != 2 || got[0].PublicKey != ksk.PublicKey || got[1].PublicKey != zsk.PublicKey {
		t.Fatalf("DNSKEYs() %v, served %v", got, keys)
	}
	// The DNSKEY RRset is signed by the KSK.
	verifySigned(t, r.Answer, c.Origin(), dns.TypeDNSKEY, ksk, now)
	return ksk, zsk
}

// verifySigned checks that section holds the RRset (owner, t) and an RRSIG
// over it that verifies with key and is valid at now.
func verifySigned(t *testing.T, section []dns.RR, owner string, rrtype uint16, key *dns.DNSKEY, now time.Time) []dns.RR {
	t.Helper()
	var set []dns.RR
	var sigs []*dns.RRSIG
	for _, rr := range section {
		if !strings.EqualFold(rr.Header().Name, owner) {
			continue
		}
		if rr.Header().Rrtype == rrtype {
			set = append(set, rr)
		}
		if s, ok := rr.(*dns.RRSIG); ok && s.TypeCovered == rrtype {
			sigs = append(sigs, s)
		}
	}
	if len(set) == 0 || len(sigs) != 1 {
		t.Fatalf("%s %s: %d records, %d RRSIGs in %v", owner, dns.TypeToString[rrtype], len(set), len(sigs), section)
	}
	if err := sigs[0].Verify(key, set); err != nil {
		t.Fatalf("%s %s: RRSIG does not verify: %v", owner, dns.TypeToString[rrtype], err)
	}
	if !sigs[0].ValidityPeriod(now) {
		t.Fatalf("%s %s: RRSIG not valid at %v", owner, dns.TypeToString[rrtype], now)
	}
	if sigs[0].Hdr.Ttl != set[0].Header().Ttl {
		t.Fatalf("%s %s: RRSIG TTL %d, RRset TTL %d", owner, dns.TypeToString[rrtype], sigs[0].Hdr.Ttl, set[0].Header().Ttl)
	}
	return set
}

// nsecCovers reports whether nsec proves name does not exist: name sorts
// strictly between the NSEC's owner and its next name (which may wrap to
// the apex).
func nsecCovers(nsec *dns.NSEC, name, apex string) bool {
	after := canonicalCompare(nsec.Hdr.Name, name) < 0
	before := canonicalCompare(name, nsec.NextDomain) < 0 || nsec.NextDomain == apex
	return after && before
}

func nsecs(section []dns.RR) []*dns.NSEC {
	var out []*dns.NSEC
	for _, rr := range section {
		if n, ok := rr.(*dns.NSEC); ok {
			out = append(out, n)
		}
	}
	return out
}

func TestDNSSEC(t *testing.T) {
	clock := newClock()
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, Secondaries: 1,
		SOATTL: 3600, NegativeTTL: 120, Now: clock.Now})
	now := clock.Now()
	_, zsk := keysOf(t, c, now)

	for _, addr := range c.Addrs() {
		r := ask(t, "udp", addr, "_25._tcp.mail.example.test", dns.TypeTLSA, true, true)
		verifySigned(t, r.Answer, "_25._tcp.mail.example.test.", dns.TypeTLSA, zsk, now)
		// Without DO: no DNSSEC records.
		r = ask(t, "udp", addr, "_25._tcp.mail.example.test", dns.TypeTLSA, true, false)
		if len(r.Answer) != 1 || len(rrsOfType(r.Answer, dns.TypeRRSIG)) != 0 {
			t.Fatalf("no DO: answer %v", r.Answer)
		}
		r = ask(t, "udp", addr, "nothere.example.test", dns.TypeA, true, false)
		if len(r.Ns) != 1 {
			t.Fatalf("no DO: authority %v, want only the SOA", r.Ns)
		}
	}

	// NXDOMAIN: the SOA, an NSEC covering the name and one covering the
	// wildcard at the closest encloser, all signed.
	r := ask(t, "udp", c.Primary(), "nothere.mail.example.test", dns.TypeA, true, true)
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	soa := verifySigned(t, r.Ns, "example.test.", dns.TypeSOA, zsk, now)
	if soa[0].Header().Ttl != 120 {
		t.Fatalf("negative SOA TTL %d, want 120", soa[0].Header().Ttl)
	}
	var coversName, coversWildcard bool
	for _, n := range nsecs(r.Ns) {
		verifySigned(t, r.Ns, n.Hdr.Name, dns.TypeNSEC, zsk, now)
		coversName = coversName || nsecCovers(n, "nothere.mail.example.test.", "example.test.")
		coversWildcard = coversWildcard || nsecCovers(n, "*.mail.example.test.", "example.test.")
		if n.Hdr.Ttl != 120 {
			t.Errorf("NSEC TTL %d, want min(SOA TTL, MINIMUM) = 120", n.Hdr.Ttl)
		}
	}
	if !coversName || !coversWildcard {
		t.Fatalf("NXDOMAIN proof incomplete (name %v, wildcard %v): %v", coversName, coversWildcard, r.Ns)
	}

	// NODATA: the NSEC at the name, whose bitmap lacks the type.
	r = ask(t, "udp", c.Primary(), "mail.example.test", dns.TypeTLSA, true, true)
	verifySigned(t, r.Ns, "example.test.", dns.TypeSOA, zsk, now)
	n := nsecs(r.Ns)
	if r.Rcode != dns.RcodeSuccess || len(n) != 1 || n[0].Hdr.Name != "mail.example.test." {
		t.Fatalf("NODATA: %s %v", dns.RcodeToString[r.Rcode], r.Ns)
	}
	verifySigned(t, r.Ns, "mail.example.test.", dns.TypeNSEC, zsk, now)
	types := map[uint16]bool{}
	for _, ty := range n[0].TypeBitMap {
		types[ty] = true
	}
	if types[dns.TypeTLSA] || !types[dns.TypeA] || !types[dns.TypeMX] || !types[dns.TypeRRSIG] || !types[dns.TypeNSEC] {
		t.Fatalf("NSEC bitmap at mail: %v", n[0])
	}

	// NODATA at an empty non-terminal: the NSEC before it, whose next name
	// is below it.
	r = ask(t, "udp", c.Primary(), "_tcp.mail.example.test", dns.TypeA, true, true)
	n = nsecs(r.Ns)
	if r.Rcode != dns.RcodeSuccess || len(n) != 1 || !nsecCovers(n[0], "_tcp.mail.example.test.", "example.test.") ||
		!dns.IsSubDomain("_tcp.mail.example.test.", n[0].NextDomain) {
		t.Fatalf("empty non-terminal: %s %v", dns.RcodeToString[r.Rcode], r.Ns)
	}
	verifySigned(t, r.Ns, n[0].Hdr.Name, dns.TypeNSEC, zsk, now)

	// Referrals: the DS when there is one, else the NSEC proving there is
	// none; the NS RRset at the cut is not signed.
	r = ask(t, "udp", c.Primary(), "www.signedsub.example.test", dns.TypeA, true, true)
	verifySigned(t, r.Ns, "signedsub.example.test.", dns.TypeDS, zsk, now)
	r = ask(t, "udp", c.Primary(), "www.sub.example.test", dns.TypeA, true, true)
	n = nsecs(r.Ns)
	if len(n) != 1 || n[0].Hdr.Name != "sub.example.test." || len(rrsOfType(r.Ns, dns.TypeRRSIG)) != 1 {
		t.Fatalf("insecure referral: %v", r.Ns)
	}
	verifySigned(t, r.Ns, "sub.example.test.", dns.TypeNSEC, zsk, now)
	for _, ty := range n[0].TypeBitMap {
		if ty == dns.TypeA || ty == dns.TypeDS {
			t.Fatalf("NSEC at an insecure cut lists %s: %v", dns.TypeToString[ty], n[0])
		}
	}

	// A change is signed too, and the chain takes in the new name.
	later := clock.Advance(time.Hour)
	if err := c.Update(func(z *Zone) error {
		return z.AddString("_443._tcp.www 60 IN TLSA 3 1 1 " + strings.Repeat("ef", 32))
	}); err != nil {
		t.Fatal(err)
	}
	r = ask(t, "udp", c.Primary(), "_443._tcp.www.example.test", dns.TypeTLSA, true, true)
	sig := rrsOfType(r.Answer, dns.TypeRRSIG)
	verifySigned(t, r.Answer, "_443._tcp.www.example.test.", dns.TypeTLSA, zsk, later)
	if got := sig[0].(*dns.RRSIG).Inception; got != uint32(later.Add(-time.Hour).Unix()) {
		t.Fatalf("new RRSIG inception %d, want signed at the time of the change", got)
	}
	r = ask(t, "udp", c.Primary(), "_443._tcp.www.example.test", dns.TypeA, true, true)
	if n = nsecs(r.Ns); len(n) != 1 || n[0].Hdr.Name != "_443._tcp.www.example.test." {
		t.Fatalf("NSEC for the new name: %v", r.Ns)
	}
	verifySigned(t, r.Ns, "_443._tcp.www.example.test.", dns.TypeNSEC, zsk, later)
	// Unchanged RRsets keep their signatures; the SOA (new serial) does not.
	r = ask(t, "udp", c.Primary(), "mail.example.test", dns.TypeA, true, true)
	if got := rrsOfType(r.Answer, dns.TypeRRSIG)[0].(*dns.RRSIG).Inception; got != uint32(now.Add(-time.Hour).Unix()) {
		t.Fatalf("unchanged RRset re-signed (inception %d)", got)
	}
	r = ask(t, "udp", c.Primary(), "example.test", dns.TypeSOA, true, true)
	verifySigned(t, r.Answer, "example.test.", dns.TypeSOA, zsk, later)
	if got := rrsOfType(r.Answer, dns.TypeRRSIG)[0].(*dns.RRSIG).Inception; got != uint32(later.Add(-time.Hour).Unix()) {
		t.Fatalf("SOA not re-signed after the change")
	}

	// Signatures close to expiry are made again at the next change.
	muchLater := clock.Advance(25 * 24 * time.Hour)
	if err := c.Update(func(z *Zone) error { return nil }); err != nil {
		t.Fatal(err)
	}
	r = ask(t, "udp", c.Primary(), "mail.example.test", dns.TypeA, true, true)
	verifySigned(t, r.Answer, "mail.example.test.", dns.TypeA, zsk, muchLater)
	if got := rrsOfType(r.Answer, dns.TypeRRSIG)[0].(*dns.RRSIG).Expiration; int64(got) < muchLater.Add(7*24*time.Hour).Unix() {
		t.Fatalf("signature expiring at %d not refreshed", got)
	}
}

func TestUnsignedHasNoKeys(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	if c.DS() != nil || c.DNSKEYs() != nil {
		t.Fatalf("unsigned zone has DS %v, DNSKEYs %v", c.DS(), c.DNSKEYs())
	}
	r := ask(t, "udp", c.Primary(), "mail.example.test", dns.TypeA, true, true)
	if len(rrsOfType(r.Answer, dns.TypeRRSIG)) != 0 {
		t.Fatalf("unsigned zone serves RRSIGs: %v", r.Answer)
	}
	r = ask(t, "udp", c.Primary(), "example.test", dns.TypeDNSKEY, true, true)
	if len(r.Answer) != 0 {
		t.Fatalf("unsigned zone serves DNSKEY: %v", r.Answer)
	}
}
