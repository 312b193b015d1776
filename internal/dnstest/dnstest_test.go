package dnstest

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeClock is an Options.Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

var testRecords = []string{
	"@ 3600 IN NS ns1",
	"@ 3600 IN NS ns2.elsewhere.test.",
	"ns1 3600 IN A 192.0.2.53",
	"ns1 3600 IN AAAA 2001:db8::53",
	"mail 300 IN A 192.0.2.25",
	"mail 300 IN MX 10 mail",
	"_25._tcp.mail 300 IN TLSA 3 1 1 " + strings.Repeat("ab", 32),
	"www 600 IN CNAME mail",
	"sub 3600 IN NS ns.sub",
	"ns.sub 3600 IN A 192.0.2.99",
	"signedsub 3600 IN NS ns.elsewhere.test.",
	"signedsub 3600 IN DS 12345 13 2 " + strings.Repeat("cd", 32),
}

// ask sends one question and returns the answer.
func ask(t *testing.T, network, addr, name string, qtype uint16, edns bool, do bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = false
	if edns {
		m.SetEdns0(1232, do)
	}
	return exchange(t, network, addr, m)
}

func exchange(t *testing.T, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.ExchangeContext(t.Context(), m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	return r
}

func rrsOfType(rrs []dns.RR, t uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			out = append(out, rr)
		}
	}
	return out
}

func TestAuthoritativeAnswers(t *testing.T) {
	c := StartT(t, Options{Origin: "Example.TEST", Records: testRecords, Secondaries: 1})
	for i, addr := range c.Addrs() {
		for _, network := range []string{"udp", "tcp"} {
			r := ask(t, network, addr, "MAIL.example.test.", dns.TypeA, false, false)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.RecursionAvailable {
				t.Fatalf("server %d %s: rcode %s AA %v RA %v, want NOERROR, AA, no RA", i, network,
					dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable)
			}
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.25" || r.Answer[0].Header().Ttl != 300 {
				t.Fatalf("server %d %s: answer %v", i, network, r.Answer)
			}
		}
	}
	if c.Primary() != c.Addrs()[0] || len(c.Addrs()) != 2 || c.Addrs()[0] == c.Addrs()[1] {
		t.Fatalf("Primary %s, Addrs %v", c.Primary(), c.Addrs())
	}
	for _, a := range c.Addrs() {
		if host, _, _ := net.SplitHostPort(a); host != "127.0.0.1" {
			t.Fatalf("server listens on %s, want loopback", a)
		}
	}

	// Outside the zone: no recursion, no authority.
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA) // RD set
	r := exchange(t, "udp", c.Primary(), m)
	if r.Rcode != dns.RcodeRefused || r.Authoritative || r.RecursionAvailable {
		t.Fatalf("outside the zone: rcode %s AA %v RA %v, want REFUSED", dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable)
	}
	if !r.RecursionDesired {
		t.Fatalf("RD not echoed")
	}

	// A CNAME is answered as it is, not followed.
	r = ask(t, "udp", c.Primary(), "www.example.test", dns.TypeA, false, false)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.CNAME).Target != "mail.example.test." {
		t.Fatalf("CNAME: answer %v", r.Answer)
	}

	// SOA at the apex, for clients that find the zone by walking up.
	r = ask(t, "tcp", c.Primary(), "example.test", dns.TypeSOA, false, false)
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != "example.test." || r.Answer[0].(*dns.SOA).Serial != c.Serial(0) {
		t.Fatalf("SOA: answer %v, serial %d", r.Answer, c.Serial(0))
	}

	// ANY returns every RRset at the name.
	r = ask(t, "tcp", c.Primary(), "mail.example.test", dns.TypeANY, false, false)
	if len(rrsOfType(r.Answer, dns.TypeA)) != 1 || len(rrsOfType(r.Answer, dns.TypeMX)) != 1 || len(r.Answer) != 2 {
		t.Fatalf("ANY: %v", r.Answer)
	}

	// Zone transfers are not offered.
	r = ask(t, "tcp", c.Primary(), "example.test", dns.TypeAXFR, false, false)
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestNegativeAnswers(t *testing.T) {
	for _, tc := range []struct {
		soaTTL, neg, want uint32
	}{{3600, 300, 300}, {60, 900, 60}} {
		t.Run(fmt.Sprintf("soa%d-min%d", tc.soaTTL, tc.neg), func(t *testing.T) {
			c := StartT(t, Options{Origin: "example.test.", Records: testRecords, SOATTL: tc.soaTTL, NegativeTTL: tc.neg})
			soa := ask(t, "udp", c.Primary(), "example.test", dns.TypeSOA, false, false).Answer[0].(*dns.SOA)
			if soa.Hdr.Ttl != tc.soaTTL || soa.Minttl != tc.neg {
				t.Fatalf("SOA %v, want TTL %d MINIMUM %d", soa, tc.soaTTL, tc.neg)
			}
			for _, q := range []struct {
				name  string
				qtype uint16
				rcode int
			}{
				{"nothere.example.test.", dns.TypeA, dns.RcodeNameError},
				{"a.b.mail.example.test.", dns.TypeTLSA, dns.RcodeNameError},
				{"mail.example.test.", dns.TypeTXT, dns.RcodeSuccess},
				// An empty non-terminal exists: NODATA, not NXDOMAIN, or
				// a resolver would take the TLSA name below it for gone.
				{"_tcp.mail.example.test.", dns.TypeA, dns.RcodeSuccess},
				{"_25._tcp.mail.example.test.", dns.TypeA, dns.RcodeSuccess},
			} {
				r := ask(t, "udp", c.Primary(), q.name, q.qtype, true, false)
				if r.Rcode != q.rcode || !r.Authoritative || len(r.Answer) != 0 {
					t.Fatalf("%s %s: rcode %s AA %v answer %v, want %s", q.name, dns.TypeToString[q.qtype],
						dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer, dns.RcodeToString[q.rcode])
				}
				if len(r.Ns) != 1 {
					t.Fatalf("%s: authority %v, want the SOA", q.name, r.Ns)
				}
				got, ok := r.Ns[0].(*dns.SOA)
				if !ok || got.Hdr.Name != "example.test." || got.Hdr.Ttl != tc.want || got.Minttl != tc.neg {
					t.Fatalf("%s: authority %v, want SOA with TTL %d", q.name, r.Ns[0], tc.want)
				}
			}
		})
	}
}

func TestNSAndGlue(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	r := ask(t, "udp", c.Primary(), "example.test", dns.TypeNS, true, false)
	if !r.Authoritative || len(r.Answer) != 2 {
		t.Fatalf("NS: AA %v answer %v", r.Authoritative, r.Answer)
	}
	// Glue only for the name server inside the zone.
	if a, aaaa := rrsOfType(r.Extra, dns.TypeA), rrsOfType(r.Extra, dns.TypeAAAA); len(a) != 1 || len(aaaa) != 1 ||
		a[0].Header().Name != "ns1.example.test." {
		t.Fatalf("NS: additional %v, want A and AAAA of ns1", r.Extra)
	}

	// Below a delegation: a referral, not an answer.
	for _, name := range []string{"sub.example.test.", "www.sub.example.test.", "ns.sub.example.test."} {
		r = ask(t, "udp", c.Primary(), name, dns.TypeA, true, false)
		if r.Rcode != dns.RcodeSuccess || r.Authoritative || len(r.Answer) != 0 {
			t.Fatalf("%s: rcode %s AA %v answer %v, want a referral", name, dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer)
		}
		if ns := rrsOfType(r.Ns, dns.TypeNS); len(ns) != 1 || ns[0].Header().Name != "sub.example.test." {
			t.Fatalf("%s: authority %v", name, r.Ns)
		}
		if glue := rrsOfType(r.Extra, dns.TypeA); len(glue) != 1 || glue[0].(*dns.A).A.String() != "192.0.2.99" {
			t.Fatalf("%s: glue %v", name, r.Extra)
		}
	}
	// The DS is the parent's: answered with authority.
	r = ask(t, "udp", c.Primary(), "signedsub.example.test.", dns.TypeDS, true, false)
	if !r.Authoritative || len(rrsOfType(r.Answer, dns.TypeDS)) != 1 {
		t.Fatalf("DS at the cut: AA %v answer %v", r.Authoritative, r.Answer)
	}
}

func TestTruncation(t *testing.T) {
	var records []string
	for i := range 20 {
		records = append(records, fmt.Sprintf("big TXT \"%s%02d\"", strings.Repeat("x", 30), i)) // ~800 bytes
	}
	for i := range 40 {
		records = append(records, fmt.Sprintf("huge TXT \"%s%02d\"", strings.Repeat("y", 50), i)) // ~2500 bytes
	}
	c := StartT(t, Options{Origin: "example.test.", Records: records})

	for _, tc := range []struct {
		name    string
		network string
		edns    bool
		tc      bool
		n       int
	}{
		{"big", "udp", false, true, -1}, // 512 bytes without EDNS
		{"big", "udp", true, false, 20},
		{"big", "tcp", false, false, 20},
		{"huge", "udp", true, true, -1}, // over the server's 1232
		{"huge", "tcp", false, false, 40},
		{"huge", "tcp", true, false, 40},
	} {
		r := ask(t, tc.network, c.Primary(), tc.name+".example.test.", dns.TypeTXT, tc.edns, false)
		if r.Truncated != tc.tc {
			t.Errorf("%s over %s, EDNS %v: TC %v, want %v", tc.name, tc.network, tc.edns, r.Truncated, tc.tc)
		}
		if tc.n >= 0 && len(r.Answer) != tc.n {
			t.Errorf("%s over %s: %d records, want %d", tc.name, tc.network, len(r.Answer), tc.n)
		}
		if tc.tc && len(r.Answer) >= 20 {
			t.Errorf("%s over %s: truncated answer still has %d records", tc.name, tc.network, len(r.Answer))
		}
	}
}

func TestEDNS(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	r := ask(t, "udp", c.Primary(), "mail.example.test", dns.TypeA, true, true)
	opt := r.IsEdns0()
	if opt == nil || !opt.Do() || opt.UDPSize() != maxUDP {
		t.Fatalf("OPT in answer: %v", opt)
	}
	if r = ask(t, "udp", c.Primary(), "mail.example.test", dns.TypeA, false, false); r.IsEdns0() != nil {
		t.Fatalf("OPT in answer to a query without EDNS")
	}

	m := new(dns.Msg)
	m.SetQuestion("mail.example.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r = exchange(t, "udp", c.Primary(), m); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
}

func TestCanonicalOrder(t *testing.T) {
	// RFC 4034 §6.1.
	want := []string{"example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.", "zABC.a.EXAMPLE.",
		"z.example.", "\\001.z.example.", "*.z.example.", "\\200.z.example."}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortFunc(got, canonicalCompare)
	if !slices.Equal(got, want) {
		t.Fatalf("canonical order:\n got %q\nwant %q", got, want)
	}
}

func TestQueriesLog(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Secondaries: 1})
	ask(t, "udp", c.Addrs()[1], "mail.example.test", dns.TypeA, true, true)
	m := new(dns.Msg)
	m.SetQuestion("_25._tcp.mail.example.test.", dns.TypeTLSA) // RD set
	exchange(t, "tcp", c.Primary(), m)

	q := c.Queries()
	if len(q) != 2 {
		t.Fatalf("%d queries logged, want 2: %+v", len(q), q)
	}
	if q[0].Server != 1 || q[0].Transport != "udp" || q[0].Name != "mail.example.test." || q[0].Type != dns.TypeA ||
		!q[0].DO || q[0].RD || q[0].Opcode != dns.OpcodeQuery || q[0].Rcode != dns.RcodeSuccess {
		t.Errorf("first query: %+v", q[0])
	}
	if q[1].Server != 0 || q[1].Transport != "tcp" || q[1].Type != dns.TypeTLSA || q[1].DO || !q[1].RD || q[1].Request == nil {
		t.Errorf("second query: %+v", q[1])
	}
}

func TestClose(t *testing.T) {
	clock := newClock()
	c, err := Start(Options{Origin: "example.test.", Records: testRecords, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.Primary()
	ask(t, "tcp", addr, "mail.example.test", dns.TypeA, false, false)
	closedAt := clock.Advance(time.Minute)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Close", addr)
	}
	h := c.History("mail.example.test", dns.TypeA)
	if len(h) != 1 || !h[0].To.Equal(closedAt) {
		t.Fatalf("history after Close: %+v, want one interval ending at %v", h, closedAt)
	}
	if err := c.Update(func(z *Zone) error { return nil }); err == nil {
		t.Fatalf("Update after Close succeeded")
	}
}

func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no origin", Options{}, "no origin"},
		{"bad line", Options{Origin: "example.test.", Records: []string{"www IN A not-an-address"}}, "records"},
		{"outside", Options{Origin: "example.test.", Records: []string{"www.example.org. A 192.0.2.1"}}, "outside zone"},
		{"dnssec record", Options{Origin: "example.test.", Records: []string{"@ NSEC a.example.test. A"}}, "made by the server"},
		{"bad secret", Options{Origin: "example.test.", TSIG: map[string]string{"k.": "not base64!"}}, "not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Start(tc.opts)
			if err == nil {
				c.Close()
				t.Fatalf("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "not base64!") {
				t.Fatalf("error %q shows the secret", err)
			}
		})
	}
}

func TestDefaultSOAAndNS(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: []string{"www A 192.0.2.80"}})
	r := ask(t, "udp", c.Primary(), "example.test", dns.TypeNS, false, false)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns1.example.test." || len(r.Extra) != 1 {
		t.Fatalf("default NS: answer %v extra %v", r.Answer, r.Extra)
	}
	soa := ask(t, "udp", c.Primary(), "example.test", dns.TypeSOA, false, false).Answer[0].(*dns.SOA)
	if soa.Hdr.Ttl != 3600 || soa.Minttl != 300 || soa.Serial != c.Serial(0) {
		t.Fatalf("default SOA %v", soa)
	}
}
