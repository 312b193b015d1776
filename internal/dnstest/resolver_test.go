package dnstest

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const tlsaOwner = "_25._tcp.mail.example.test."

// resolve asks the resolver with RD set, as a stub does, and EDNS with do.
func resolve(t *testing.T, network, addr, name string, qtype uint16, do bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, do)
	return exchange(t, network, addr, m)
}

// upstreamAsked counts the questions for (name, qtype) the cluster got.
func upstreamAsked(c *Cluster, name string, qtype uint16) int {
	n := 0
	for _, q := range c.Queries() {
		if strings.EqualFold(q.Name, name) && q.Type == qtype {
			n++
		}
	}
	return n
}

// edeOf returns the extended DNS error of an answer, nil when it has none.
func edeOf(m *dns.Msg) *dns.EDNS0_EDE {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// wantAnswer fails unless m has rcode, the AD bit as ad, and n records of
// qtype in its answer section.
func wantAnswer(t *testing.T, m *dns.Msg, rcode int, ad bool, qtype uint16, n int) {
	t.Helper()
	if m.Rcode != rcode || m.AuthenticatedData != ad || len(rrsOfType(m.Answer, qtype)) != n {
		t.Fatalf("%s %s: rcode %s AD %v answer %v (EDE %v), want %s AD %v and %d %s records",
			m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], dns.RcodeToString[m.Rcode], m.AuthenticatedData,
			m.Answer, edeOf(m), dns.RcodeToString[rcode], ad, n, dns.TypeToString[qtype])
	}
	if !m.RecursionAvailable || m.Authoritative {
		t.Fatalf("RA %v AA %v, want a recursive, non-authoritative answer", m.RecursionAvailable, m.Authoritative)
	}
}

func TestResolverValidates(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, Secondaries: 1})
	r := c.StartResolverT(t)
	_, zsk := keysOf(t, c, time.Now())

	m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	verifySigned(t, m.Answer, tlsaOwner, dns.TypeTLSA, zsk, time.Now())
	if opt := m.IsEdns0(); opt == nil || !opt.Do() || opt.UDPSize() != 1232 {
		t.Fatalf("OPT %v, want EDNS0 with DO echoed", opt)
	}

	// RRSIGs only for a client that set DO; AD for one that set DO or AD
	// (RFC 6840 §5.7).
	m = resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, false)
	wantAnswer(t, m, dns.RcodeSuccess, false, dns.TypeTLSA, 1)
	if len(rrsOfType(m.Answer, dns.TypeRRSIG)) != 0 || m.IsEdns0().Do() {
		t.Fatalf("without DO: %v", m)
	}
	q := new(dns.Msg)
	q.SetQuestion(tlsaOwner, dns.TypeTLSA)
	q.AuthenticatedData = true
	m = exchange(t, "udp", r.Addr(), q)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	if len(m.Answer) != 1 || m.IsEdns0() != nil {
		t.Fatalf("AD without EDNS: %v", m)
	}

	// The zone's keys, a CNAME as served, and denials with their proof.
	wantAnswer(t, resolve(t, "udp", r.Addr(), "example.test.", dns.TypeDNSKEY, true), dns.RcodeSuccess, true, dns.TypeDNSKEY, 2)
	m = resolve(t, "udp", r.Addr(), "www.example.test.", dns.TypeA, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeCNAME, 1)
	if len(rrsOfType(m.Answer, dns.TypeA)) != 0 {
		t.Fatalf("the CNAME was followed: %v", m.Answer)
	}
	m = resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeNameError, true, dns.TypeTLSA, 0)
	if len(rrsOfType(m.Ns, dns.TypeSOA)) != 1 || len(rrsOfType(m.Ns, dns.TypeNSEC)) == 0 || len(rrsOfType(m.Ns, dns.TypeRRSIG)) == 0 {
		t.Fatalf("NXDOMAIN authority %v, want the SOA and NSEC records with RRSIGs", m.Ns)
	}
	m = resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeTLSA, false)
	wantAnswer(t, m, dns.RcodeNameError, false, dns.TypeTLSA, 0)
	if len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("NXDOMAIN without DO: authority %v, want only the SOA", m.Ns)
	}
	wantAnswer(t, resolve(t, "udp", r.Addr(), "mail.example.test.", dns.TypeTLSA, true), dns.RcodeSuccess, true, dns.TypeTLSA, 0)
	// An empty non-terminal.
	wantAnswer(t, resolve(t, "udp", r.Addr(), "_tcp.mail.example.test.", dns.TypeTXT, true), dns.RcodeSuccess, true, dns.TypeTXT, 0)

	// A delegation is not followed.
	m = resolve(t, "udp", r.Addr(), "host.sub.example.test.", dns.TypeA, true)
	if m.Rcode != dns.RcodeServerFailure || edeOf(m) == nil || !strings.Contains(edeOf(m).ExtraText, "referral") {
		t.Fatalf("below a delegation: %s %v, want SERVFAIL saying it is a referral", dns.RcodeToString[m.Rcode], edeOf(m))
	}
}

func TestResolverWithoutAnchor(t *testing.T) {
	signed := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true})
	opts := signed.ResolverOptions()
	opts.Anchor = nil
	r := StartResolverT(t, opts)
	m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeSuccess, false, dns.TypeTLSA, 1)
	if len(rrsOfType(m.Answer, dns.TypeRRSIG)) != 1 {
		t.Fatalf("the RRSIG is not passed on: %v", m.Answer)
	}
	wantAnswer(t, resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeA, true), dns.RcodeNameError, false, dns.TypeA, 0)

	unsigned := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	if unsigned.ResolverOptions().Anchor != nil {
		t.Fatal("an unsigned cluster gives a trust anchor")
	}
	r = unsigned.StartResolverT(t)
	wantAnswer(t, resolve(t, "tcp", r.Addr(), tlsaOwner, dns.TypeTLSA, true), dns.RcodeSuccess, false, dns.TypeTLSA, 1)
	wantAnswer(t, resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeA, true), dns.RcodeNameError, false, dns.TypeA, 0)
}

// startFake starts a server on a loopback port (UDP and TCP) that answers
// with handle.
func startFake(t *testing.T, handle func(*dns.Msg) *dns.Msg) string {
	t.Helper()
	pc, l, err := listenPair()
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if m := handle(req); m != nil {
			w.WriteMsg(m)
		}
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		if err := activate(srv); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// tamperingProxy starts a server that passes questions to upstream over
// TCP and lets change alter the answers.
func tamperingProxy(t *testing.T, upstream string, change func(m *dns.Msg)) string {
	return startFake(t, func(req *dns.Msg) *dns.Msg {
		c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
		m, _, err := c.Exchange(req, upstream)
		if err != nil {
			return nil
		}
		change(m)
		return m
	})
}

// flipSignature changes one bit of the signatures over rrtype in section.
func flipSignature(section []dns.RR, rrtype uint16) {
	for _, rr := range section {
		if s, ok := rr.(*dns.RRSIG); ok && s.TypeCovered == rrtype {
			b, _ := base64.StdEncoding.DecodeString(s.Signature)
			b[len(b)/2] ^= 1
			s.Signature = base64.StdEncoding.EncodeToString(b)
		}
	}
}

func without(section []dns.RR, drop func(dns.RR) bool) []dns.RR {
	var out []dns.RR
	for _, rr := range section {
		if !drop(rr) {
			out = append(out, rr)
		}
	}
	return out
}

func TestResolverBogus(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true})
	other := StartT(t, Options{Origin: "example.test.", Signed: true})

	wantServfail := func(t *testing.T, r *Resolver, name string, qtype uint16, code uint16, text string) {
		t.Helper()
		m := resolve(t, "udp", r.Addr(), name, qtype, true)
		e := edeOf(m)
		if m.Rcode != dns.RcodeServerFailure || m.AuthenticatedData || len(m.Answer) != 0 || e == nil || e.InfoCode != code || !strings.Contains(e.ExtraText, text) {
			t.Fatalf("%s %s: rcode %s AD %v answer %v EDE %v, want SERVFAIL with EDE %d %q",
				name, dns.TypeToString[qtype], dns.RcodeToString[m.Rcode], m.AuthenticatedData, m.Answer, e, code, text)
		}
	}
	tamper := func(t *testing.T, change func(q dns.Question, m *dns.Msg)) *Resolver {
		addr := tamperingProxy(t, c.Primary(), func(m *dns.Msg) { change(m.Question[0], m) })
		opts := c.ResolverOptions()
		opts.Upstreams = []string{addr}
		return StartResolverT(t, opts)
	}

	t.Run("another zone's anchor", func(t *testing.T) {
		opts := c.ResolverOptions()
		opts.Anchor = other.DS()
		r := StartResolverT(t, opts)
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY matches the trust anchor")
		wantServfail(t, r, "example.test.", dns.TypeDNSKEY, dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY matches the trust anchor")
		wantServfail(t, r, "nothere.example.test.", dns.TypeA, dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY matches the trust anchor")
	})
	t.Run("an anchor for another name", func(t *testing.T) {
		opts := c.ResolverOptions()
		opts.Zone = "example.org."
		if r, err := StartResolver(opts); err == nil {
			r.Close()
			t.Fatal("a resolver for example.org started with example.test's anchor")
		}
	})
	t.Run("unsigned zone with an anchor", func(t *testing.T) {
		unsigned := StartT(t, Options{Origin: "example.test.", Records: testRecords})
		opts := unsigned.ResolverOptions()
		opts.Anchor = c.DS()
		r := StartResolverT(t, opts)
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY matches")
	})
	t.Run("corrupted signature", func(t *testing.T) {
		r := tamper(t, func(_ dns.Question, m *dns.Msg) { flipSignature(m.Answer, dns.TypeTLSA) })
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeDNSBogus, "does not verify")
		// Answers the proxy leaves alone still validate.
		wantAnswer(t, resolve(t, "udp", r.Addr(), "mail.example.test.", dns.TypeA, true), dns.RcodeSuccess, true, dns.TypeA, 1)
	})
	t.Run("changed record", func(t *testing.T) {
		r := tamper(t, func(_ dns.Question, m *dns.Msg) {
			for _, rr := range m.Answer {
				if x, ok := rr.(*dns.TLSA); ok {
					x.Certificate = strings.Repeat("cd", 32)
				}
			}
		})
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeDNSBogus, "does not verify")
	})
	t.Run("stripped signature", func(t *testing.T) {
		r := tamper(t, func(_ dns.Question, m *dns.Msg) {
			m.Answer = without(m.Answer, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeRRSIG })
		})
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeRRSIGsMissing, "no RRSIG")
	})
	t.Run("corrupted DNSKEY signature", func(t *testing.T) {
		r := tamper(t, func(_ dns.Question, m *dns.Msg) { flipSignature(m.Answer, dns.TypeDNSKEY) })
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeDNSBogus, "the zone's keys")
	})
	t.Run("denial without NSEC", func(t *testing.T) {
		r := tamper(t, func(_ dns.Question, m *dns.Msg) {
			m.Ns = without(m.Ns, func(rr dns.RR) bool {
				s, ok := rr.(*dns.RRSIG)
				return rr.Header().Rrtype == dns.TypeNSEC || ok && s.TypeCovered == dns.TypeNSEC
			})
		})
		wantServfail(t, r, "nothere.example.test.", dns.TypeTLSA, dns.ExtendedErrorCodeNSECMissing, "NXDOMAIN without NSEC")
		wantServfail(t, r, "mail.example.test.", dns.TypeTLSA, dns.ExtendedErrorCodeNSECMissing, "NODATA without NSEC")
	})
	t.Run("denial with a corrupted SOA signature", func(t *testing.T) {
		r := tamper(t, func(_ dns.Question, m *dns.Msg) { flipSignature(m.Ns, dns.TypeSOA) })
		wantServfail(t, r, "nothere.example.test.", dns.TypeTLSA, dns.ExtendedErrorCodeDNSBogus, "SOA: RRSIG by key")
	})
	t.Run("NODATA for a type the NSEC lists", func(t *testing.T) {
		// A replayed denial: the TLSA record removed from a signed answer
		// turns it into NODATA, but the name's NSEC says it has TLSA.
		r := tamper(t, func(q dns.Question, m *dns.Msg) {
			if q.Qtype != dns.TypeTLSA {
				return
			}
			nsec, _, err := (&dns.Client{Net: "tcp"}).Exchange(func() *dns.Msg {
				x := new(dns.Msg)
				x.SetQuestion(q.Name, dns.TypeNSEC)
				x.SetEdns0(1232, true)
				return x
			}(), c.Primary())
			soa, _, err2 := (&dns.Client{Net: "tcp"}).Exchange(func() *dns.Msg {
				x := new(dns.Msg)
				x.SetQuestion("nothere.example.test.", dns.TypeA)
				x.SetEdns0(1232, true)
				return x
			}(), c.Primary())
			if err != nil || err2 != nil {
				return
			}
			m.Answer = nil
			m.Ns = append(without(soa.Ns, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeSOA && !isSigOver(rr, dns.TypeSOA) }), nsec.Answer...)
		})
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeNSECMissing, "NODATA without NSEC")
	})
	t.Run("expired signatures", func(t *testing.T) {
		opts := c.ResolverOptions()
		opts.Now = func() time.Time { return time.Now().AddDate(0, 2, 0) }
		r := StartResolverT(t, opts)
		wantServfail(t, r, tlsaOwner, dns.TypeTLSA, dns.ExtendedErrorCodeSignatureExpired, "RRSIG valid from")
	})
}

func isSigOver(rr dns.RR, t uint16) bool {
	s, ok := rr.(*dns.RRSIG)
	return ok && s.TypeCovered == t
}

// setTLSA replaces the records at owner on the primary.
func setTLSA(t *testing.T, c *Cluster, owner string, lines ...string) {
	t.Helper()
	if err := c.Update(func(z *Zone) error {
		z.RemoveRRset(owner, dns.TypeTLSA)
		return z.AddString(lines...)
	}); err != nil {
		t.Fatal(err)
	}
}

func tlsaDigests(m *dns.Msg) string {
	var out []string
	for _, rr := range rrsOfType(m.Answer, dns.TypeTLSA) {
		out = append(out, rr.(*dns.TLSA).Certificate)
	}
	return strings.Join(out, " ")
}

// TestResolverCachesAnswers checks that an answer is served from the cache
// for its TTL from the moment it was fetched, its TTL counting down, so
// that a change on the servers is not seen before; and then is.
func TestResolverCachesAnswers(t *testing.T) {
	clock := newClock()
	a, b := strings.Repeat("aa", 32), strings.Repeat("bb", 32)
	c := StartT(t, Options{Origin: "example.test.", Signed: true, Now: clock.Now,
		Records: []string{"_25._tcp.mail 300 IN TLSA 3 1 1 " + a}})
	r := c.StartResolverT(t)

	m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	if m.Answer[0].Header().Ttl != 300 || tlsaDigests(m) != a {
		t.Fatalf("first answer %v, want %s with TTL 300", m.Answer, a)
	}
	clock.Advance(10 * time.Second)
	setTLSA(t, c, tlsaOwner, "_25._tcp.mail 300 IN TLSA 3 1 1 "+b)
	m = resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	for _, rr := range m.Answer {
		if rr.Header().Ttl != 290 {
			t.Fatalf("after 10s: %v, want every TTL 290", m.Answer)
		}
	}
	if tlsaDigests(m) != a {
		t.Fatalf("after the change, within the TTL: %s, want the cached %s", tlsaDigests(m), a)
	}
	clock.Advance(289 * time.Second)
	m = resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	if tlsaDigests(m) != a || m.Answer[0].Header().Ttl != 1 {
		t.Fatalf("after 299s: %v, want the cached %s with TTL 1", m.Answer, a)
	}
	if n := upstreamAsked(c, tlsaOwner, dns.TypeTLSA); n != 1 {
		t.Fatalf("the servers were asked %d times, want once", n)
	}
	clock.Advance(time.Second)
	m = resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	if tlsaDigests(m) != b || m.Answer[0].Header().Ttl != 300 {
		t.Fatalf("after 300s: %v, want the new %s with TTL 300", m.Answer, b)
	}
	if n := upstreamAsked(c, tlsaOwner, dns.TypeTLSA); n != 2 {
		t.Fatalf("the servers were asked %d times, want twice", n)
	}

	// Flush forgets at once.
	setTLSA(t, c, tlsaOwner, "_25._tcp.mail 300 IN TLSA 3 1 1 "+a)
	r.Flush()
	if m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true); tlsaDigests(m) != a || !m.AuthenticatedData {
		t.Fatalf("after Flush: %v, want %s", m.Answer, a)
	}
}

func TestResolverMaxTTL(t *testing.T) {
	clock := newClock()
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, Now: clock.Now,
		SOATTL: 7200, NegativeTTL: 7200})
	opts := c.ResolverOptions()
	opts.MaxTTL = 60
	r := StartResolverT(t, opts)
	m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	for _, rr := range m.Answer {
		if rr.Header().Ttl != 60 {
			t.Fatalf("TTLs %v, want 60 (MaxTTL)", m.Answer)
		}
	}
	// Denials are capped by 3600 (unbound's cache-max-negative-ttl) unless
	// MaxTTL is lower.
	m = resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeA, true)
	if soa := rrsOfType(m.Ns, dns.TypeSOA); len(soa) != 1 || soa[0].Header().Ttl != 60 {
		t.Fatalf("denial SOA %v, want TTL 60", soa)
	}
	clock.Advance(60 * time.Second)
	resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	if n := upstreamAsked(c, tlsaOwner, dns.TypeTLSA); n != 2 {
		t.Fatalf("the servers were asked %d times in 60s, want twice", n)
	}

	r = c.StartResolverT(t)
	m = resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeA, true)
	if soa := rrsOfType(m.Ns, dns.TypeSOA); len(soa) != 1 || soa[0].Header().Ttl != 3600 {
		t.Fatalf("denial SOA %v, want TTL 3600", soa)
	}
}

// TestResolverCachesDenials checks that NXDOMAIN and NODATA are validated
// and cached for the negative TTL (the smaller of the SOA's TTL and
// MINIMUM) from when they were fetched.
func TestResolverCachesDenials(t *testing.T) {
	clock := newClock()
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, Now: clock.Now,
		SOATTL: 60, NegativeTTL: 5})
	r := c.StartResolverT(t)

	nx := resolve(t, "udp", r.Addr(), "_25._tcp.nothere.example.test.", dns.TypeTLSA, true)
	wantAnswer(t, nx, dns.RcodeNameError, true, dns.TypeTLSA, 0)
	nodata := resolve(t, "udp", r.Addr(), "mail.example.test.", dns.TypeTLSA, true)
	wantAnswer(t, nodata, dns.RcodeSuccess, true, dns.TypeTLSA, 0)
	for _, m := range []*dns.Msg{nx, nodata} {
		for _, rr := range m.Ns {
			if rr.Header().Ttl != 5 {
				t.Fatalf("denial authority %v, want every TTL 5", m.Ns)
			}
		}
	}
	clock.Advance(time.Second)
	setTLSA(t, c, "_25._tcp.nothere.example.test.", "_25._tcp.nothere 60 TLSA 3 1 1 "+strings.Repeat("ab", 32))
	setTLSA(t, c, "mail.example.test.", "mail 60 TLSA 3 1 1 "+strings.Repeat("ab", 32))

	clock.Advance(3 * time.Second)
	nx = resolve(t, "udp", r.Addr(), "_25._tcp.nothere.example.test.", dns.TypeTLSA, true)
	wantAnswer(t, nx, dns.RcodeNameError, true, dns.TypeTLSA, 0)
	nodata = resolve(t, "udp", r.Addr(), "mail.example.test.", dns.TypeTLSA, true)
	wantAnswer(t, nodata, dns.RcodeSuccess, true, dns.TypeTLSA, 0)
	if soa := rrsOfType(nx.Ns, dns.TypeSOA); len(soa) != 1 || soa[0].Header().Ttl != 1 {
		t.Fatalf("after 4s: denial SOA %v, want TTL 1", soa)
	}

	clock.Advance(time.Second)
	wantAnswer(t, resolve(t, "udp", r.Addr(), "_25._tcp.nothere.example.test.", dns.TypeTLSA, true), dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	wantAnswer(t, resolve(t, "udp", r.Addr(), "mail.example.test.", dns.TypeTLSA, true), dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	if n := upstreamAsked(c, "_25._tcp.nothere.example.test.", dns.TypeTLSA); n != 2 {
		t.Fatalf("the servers were asked %d times, want twice", n)
	}
}

// TestResolverNegativeTTLFromSOA checks that a denial is cached for the
// SOA's MINIMUM when it is below the SOA's TTL, whatever TTL the server
// gives the SOA (the cluster gives the smaller one; not every server does).
func TestResolverNegativeTTLFromSOA(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, SOATTL: 60, NegativeTTL: 5})
	addr := tamperingProxy(t, c.Primary(), func(m *dns.Msg) {
		for _, rr := range m.Ns {
			rr.Header().Ttl = 60 // the TTL is not signed: the RRSIG has the original
		}
	})
	opts := c.ResolverOptions()
	opts.Upstreams = []string{addr}
	r := StartResolverT(t, opts)
	m := resolve(t, "udp", r.Addr(), "nothere.example.test.", dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeNameError, true, dns.TypeTLSA, 0)
	for _, rr := range m.Ns {
		if rr.Header().Ttl != 5 {
			t.Fatalf("denial authority %v, want every TTL 5 (the SOA's MINIMUM)", m.Ns)
		}
	}
}

// TestResolverRealClock is TestResolverCachesAnswers on the wall clock
// with a TTL of 1s, as the command-line worlds run.
func TestResolverRealClock(t *testing.T) {
	a, b := strings.Repeat("aa", 32), strings.Repeat("bb", 32)
	c := StartT(t, Options{Origin: "example.test.", Signed: true, Records: []string{"_25._tcp.mail 1 IN TLSA 3 1 1 " + a}})
	r := c.StartResolverT(t)
	if m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true); tlsaDigests(m) != a {
		t.Fatalf("first answer %v", m.Answer)
	}
	fetched := time.Now()
	setTLSA(t, c, tlsaOwner, "_25._tcp.mail 1 IN TLSA 3 1 1 "+b)
	m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	if time.Since(fetched) < 900*time.Millisecond && tlsaDigests(m) != a {
		t.Fatalf("within the TTL: %s, want the cached %s", tlsaDigests(m), a)
	}
	time.Sleep(time.Until(fetched.Add(1100 * time.Millisecond)))
	m = resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	if tlsaDigests(m) != b {
		t.Fatalf("after the TTL: %s, want %s", tlsaDigests(m), b)
	}
}

func TestResolverRefuses(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true})
	r := c.StartResolverT(t)
	for _, q := range []struct {
		name  string
		qtype uint16
		rd    bool
		rcode int
	}{
		{"example.org.", dns.TypeA, true, dns.RcodeRefused},
		{"test.", dns.TypeSOA, true, dns.RcodeRefused},
		{"mail.example.test.", dns.TypeA, false, dns.RcodeRefused},
		{"example.test.", dns.TypeAXFR, true, dns.RcodeRefused},
		{"example.test.", dns.TypeSOA, true, dns.RcodeSuccess},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.RecursionDesired = q.rd
		m.SetEdns0(1232, true)
		got := exchange(t, "tcp", r.Addr(), m)
		if got.Rcode != q.rcode {
			t.Errorf("%s %s RD %v: %s, want %s", q.name, dns.TypeToString[q.qtype], q.rd, dns.RcodeToString[got.Rcode], dns.RcodeToString[q.rcode])
		}
	}
	for _, q := range c.Queries() {
		if q.Name != "example.test." || (q.Type != dns.TypeSOA && q.Type != dns.TypeDNSKEY) {
			t.Errorf("the servers were asked %s %s", q.Name, dns.TypeToString[q.Type])
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("mail.example.test.", dns.TypeA)
	m.SetEdns0(1232, true)
	m.IsEdns0().SetVersion(1)
	if got := exchange(t, "udp", r.Addr(), m); got.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s, want BADVERS", dns.RcodeToString[got.Rcode])
	}
}

func TestResolverTruncatesAndTCP(t *testing.T) {
	var records []string
	records = append(records, testRecords...)
	for i := range 40 {
		records = append(records, fmt.Sprintf("big TXT \"%s%02d\"", strings.Repeat("y", 50), i))
	}
	c := StartT(t, Options{Origin: "example.test.", Records: records, Signed: true})
	r := c.StartResolverT(t)

	m := resolve(t, "udp", r.Addr(), "big.example.test.", dns.TypeTXT, true)
	if !m.Truncated || wireLen(m) > 1232 {
		t.Fatalf("UDP: TC %v, %d bytes; want a truncated answer within 1232 bytes", m.Truncated, wireLen(m))
	}
	// The resolver got the big answer truncated from upstream too, and
	// asked again over TCP.
	var transports []string
	for _, q := range c.Queries() {
		if q.Name == "big.example.test." {
			transports = append(transports, q.Transport)
		}
	}
	if strings.Join(transports, " ") != "udp tcp" {
		t.Fatalf("upstream questions for big.example.test over %v, want udp then tcp", transports)
	}
	m = resolve(t, "tcp", r.Addr(), "big.example.test.", dns.TypeTXT, true)
	wantAnswer(t, m, dns.RcodeSuccess, true, dns.TypeTXT, 40)
	if m.Truncated {
		t.Fatal("TCP answer truncated")
	}

	// Without EDNS a UDP answer fits 512 bytes.
	q := new(dns.Msg)
	q.SetQuestion("example.test.", dns.TypeDNSKEY)
	if m := exchange(t, "udp", r.Addr(), q); wireLen(m) > 512 || len(m.Answer) != 2 {
		t.Fatalf("DNSKEY without EDNS: %d bytes, answer %v", wireLen(m), m.Answer)
	}
	q.SetQuestion("big.example.test.", dns.TypeTXT)
	if m := exchange(t, "udp", r.Addr(), q); !m.Truncated || wireLen(m) > 512 {
		t.Fatalf("big TXT without EDNS: TC %v, %d bytes; want truncated within 512", m.Truncated, wireLen(m))
	}
}

// wireLen is the size of m on the wire, names compressed as sent.
func wireLen(m *dns.Msg) int {
	m.Compress = true
	return m.Len()
}

func TestResolverUpstreams(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, Secondaries: 2})
	r := c.StartResolverT(t)
	const misses = 30
	for range misses {
		r.Flush()
		wantAnswer(t, resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true), dns.RcodeSuccess, true, dns.TypeTLSA, 1)
	}
	servers := map[int]int{}
	for _, q := range c.Queries() {
		if q.Name == tlsaOwner {
			servers[q.Server]++
			if q.RD || !q.DO {
				t.Errorf("upstream question with RD %v DO %v, want RD clear and DO set", q.RD, q.DO)
			}
		}
	}
	total := servers[0] + servers[1] + servers[2]
	if total != misses || len(servers) != 3 {
		t.Fatalf("%d misses asked the servers %v; want one question each, spread over all three", misses, servers)
	}

	// A server that is down costs a SERVFAIL, not another server.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	opts := c.ResolverOptions()
	opts.Upstreams = []string{dead}
	r = StartResolverT(t, opts)
	start := time.Now()
	m := resolve(t, "udp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	if e := edeOf(m); m.Rcode != dns.RcodeServerFailure || e == nil || e.InfoCode != dns.ExtendedErrorCodeNoReachableAuthority {
		t.Fatalf("with the server down: %s EDE %v, want SERVFAIL, no reachable authority", dns.RcodeToString[m.Rcode], e)
	}
	if d := time.Since(start); d > 2*resolverTimeout {
		t.Fatalf("SERVFAIL took %s", d)
	}
}

// TestResolverConcurrent asks many questions at once: misses for one
// question share one upstream exchange, and nothing races (go test -race).
func TestResolverConcurrent(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, Secondaries: 1})
	r := c.StartResolverT(t)
	names := []string{tlsaOwner, "mail.example.test.", "www.example.test.", "nothere.example.test."}
	ask := func(name string, network string) error {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTLSA)
		m.SetEdns0(1232, true)
		cl := &dns.Client{Net: network, Timeout: 10 * time.Second}
		got, _, err := cl.Exchange(m, r.Addr())
		switch {
		case err != nil:
			return err
		case got.Rcode == dns.RcodeServerFailure || !got.AuthenticatedData:
			return fmt.Errorf("%s: %s AD %v EDE %v", name, dns.RcodeToString[got.Rcode], got.AuthenticatedData, edeOf(got))
		}
		return nil
	}
	run := func(n int, also func()) {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				network := "udp"
				if i%3 == 0 {
					network = "tcp"
				}
				errs <- ask(names[i%len(names)], network)
			})
		}
		if also != nil {
			also()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	}

	run(100, nil)
	for _, name := range append(names, c.Origin()) {
		qtype := uint16(dns.TypeTLSA)
		if name == c.Origin() {
			qtype = dns.TypeDNSKEY
		}
		if n := upstreamAsked(c, name, qtype); n != 1 {
			t.Errorf("%s %s: the servers were asked %d times, want once", name, dns.TypeToString[qtype], n)
		}
	}
	run(100, func() {
		for range 20 {
			r.Flush()
			time.Sleep(time.Millisecond)
		}
	})
}

func TestResolverClose(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	r, err := StartResolver(c.ResolverOptions())
	if err != nil {
		t.Fatal(err)
	}
	resolve(t, "tcp", r.Addr(), tlsaOwner, dns.TypeTLSA, true)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	m := new(dns.Msg)
	m.SetQuestion(tlsaOwner, dns.TypeTLSA)
	if _, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, r.Addr()); err == nil {
		t.Fatal("a closed resolver answered")
	}
	if _, err := StartResolver(ResolverOptions{Zone: "example.test."}); err == nil {
		t.Fatal("a resolver without upstreams started")
	}
}
