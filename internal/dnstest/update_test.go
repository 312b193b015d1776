package dnstest

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// key is a TSIG key for the tests.
type key struct {
	name, alg, secret string
}

// sendUpdate sends m (an UPDATE) over TCP, signed with k when k.name is
// set, and returns the response. The client checks the response's TSIG;
// err reports a failed check.
func sendUpdate(t *testing.T, addr string, m *dns.Msg, k key, signedAt time.Time) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	if k.name != "" {
		c.TsigSecret = map[string]string{k.name: k.secret}
		m.SetTsig(k.name, k.alg, 300, signedAt.Unix())
	}
	r, _, err := c.ExchangeContext(t.Context(), m, addr)
	if r == nil {
		t.Fatalf("update: %v", err)
	}
	return r, err
}

func newUpdate(zone string, ins, del []dns.RR) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	if len(ins) > 0 {
		m.Insert(ins)
	}
	if len(del) > 0 {
		m.Remove(del)
	}
	return m
}

func lookup(t *testing.T, c *Cluster, server int, name string, qtype uint16) []dns.RR {
	t.Helper()
	return ask(t, "tcp", c.Addrs()[server], name, qtype, false, false).Answer
}

func TestUpdateRFC2136(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	p := c.Primary()
	upd := func(m *dns.Msg) int {
		t.Helper()
		zone := m.Question[0]
		r, err := sendUpdate(t, p, m, key{}, time.Now())
		if err != nil {
			t.Error(err)
		}
		if len(r.Question) != 1 || r.Question[0] != zone || r.Opcode != dns.OpcodeUpdate {
			t.Errorf("response zone section %v opcode %d", r.Question, r.Opcode)
		}
		return r.Rcode
	}
	txt1 := mustRR(t, `_acme-challenge.mail.example.test. 60 IN TXT "one"`)
	txt2 := mustRR(t, `_acme-challenge.mail.example.test. 60 IN TXT "two"`)
	serial := c.Serial(0)

	if rc := upd(newUpdate("example.test.", []dns.RR{txt1, txt2}, nil)); rc != dns.RcodeSuccess {
		t.Fatalf("add: %s", dns.RcodeToString[rc])
	}
	if got := lookup(t, c, 0, "_acme-challenge.mail.example.test", dns.TypeTXT); len(got) != 2 {
		t.Fatalf("after add: %v", got)
	}
	if c.Serial(0) != serial+1 {
		t.Fatalf("serial %d after one update, want %d", c.Serial(0), serial+1)
	}
	// A duplicate add changes nothing, not even the serial.
	if rc := upd(newUpdate("example.test.", []dns.RR{mustRR(t, `_acme-challenge.MAIL.example.test. 60 IN TXT "one"`)}, nil)); rc != dns.RcodeSuccess {
		t.Fatalf("duplicate add: %s", dns.RcodeToString[rc])
	}
	if got := lookup(t, c, 0, "_acme-challenge.mail.example.test", dns.TypeTXT); len(got) != 2 || c.Serial(0) != serial+1 {
		t.Fatalf("after duplicate add: %v, serial %d", got, c.Serial(0))
	}
	// An add with another TTL sets the RRset's TTL.
	upd(newUpdate("example.test.", []dns.RR{mustRR(t, `_acme-challenge.mail.example.test. 120 IN TXT "two"`)}, nil))
	for _, rr := range lookup(t, c, 0, "_acme-challenge.mail.example.test", dns.TypeTXT) {
		if rr.Header().Ttl != 120 {
			t.Fatalf("RRset TTL not adjusted: %v", rr)
		}
	}
	// Delete one record (class NONE): the other stays.
	if rc := upd(newUpdate("example.test.", nil, []dns.RR{dns.Copy(txt1)})); rc != dns.RcodeSuccess {
		t.Fatalf("delete: %s", dns.RcodeToString[rc])
	}
	got := lookup(t, c, 0, "_acme-challenge.mail.example.test", dns.TypeTXT)
	if len(got) != 1 || got[0].(*dns.TXT).Txt[0] != "two" {
		t.Fatalf("after delete of one: %v", got)
	}
	// Deleting what is not there changes nothing.
	s := c.Serial(0)
	upd(newUpdate("example.test.", nil, []dns.RR{dns.Copy(txt1)}))
	if c.Serial(0) != s {
		t.Fatalf("deleting a missing record bumped the serial")
	}
	// Delete an RRset (class ANY).
	m := new(dns.Msg)
	m.SetUpdate("example.test.")
	m.RemoveRRset([]dns.RR{mustRR(t, "mail.example.test. A 192.0.2.1")})
	upd(m)
	if got := lookup(t, c, 0, "mail.example.test", dns.TypeA); len(got) != 0 {
		t.Fatalf("after RRset delete: %v", got)
	}
	if got := lookup(t, c, 0, "mail.example.test", dns.TypeMX); len(got) != 1 {
		t.Fatalf("RRset delete removed another type: %v", got)
	}
	// Delete a name (class ANY, type ANY); at the apex SOA and NS stay.
	m = new(dns.Msg)
	m.SetUpdate("example.test.")
	m.RemoveName([]dns.RR{mustRR(t, "mail.example.test. A 192.0.2.1"), mustRR(t, "example.test. A 192.0.2.1")})
	upd(m)
	// mail stays as an empty non-terminal above _25._tcp.mail.
	if r := ask(t, "udp", p, "mail.example.test", dns.TypeMX, false, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("after name delete: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if len(lookup(t, c, 0, "example.test", dns.TypeSOA)) != 1 || len(lookup(t, c, 0, "example.test", dns.TypeNS)) != 2 {
		t.Fatalf("name delete at the apex removed SOA or NS")
	}
	// The apex's last NS record is never removed.
	upd(newUpdate("example.test.", nil, []dns.RR{mustRR(t, "example.test. NS ns1.example.test."), mustRR(t, "example.test. NS ns2.elsewhere.test.")}))
	if got := lookup(t, c, 0, "example.test", dns.TypeNS); len(got) != 1 {
		t.Fatalf("apex NS after deleting both: %v", got)
	}
	// A CNAME cannot join other data, nor data a CNAME.
	upd(newUpdate("example.test.", []dns.RR{mustRR(t, "www.example.test. 60 TXT hello"), mustRR(t, "ns1.example.test. 60 CNAME www")}, nil))
	if len(rrsOfType(lookup(t, c, 0, "www.example.test", dns.TypeTXT), dns.TypeTXT)) != 0 ||
		len(lookup(t, c, 0, "ns1.example.test", dns.TypeCNAME)) != 0 {
		t.Fatalf("CNAME conflict not ignored")
	}

	// Errors.
	for _, tc := range []struct {
		name  string
		m     func() *dns.Msg
		rcode int
	}{
		{"other zone", func() *dns.Msg {
			return newUpdate("example.org.", []dns.RR{mustRR(t, "a.example.org. A 192.0.2.1")}, nil)
		}, dns.RcodeNotAuth},
		{"record outside the zone", func() *dns.Msg {
			return newUpdate("example.test.", []dns.RR{mustRR(t, "a.example.org. A 192.0.2.1")}, nil)
		}, dns.RcodeNotZone},
		{"delete with a TTL", func() *dns.Msg {
			m := new(dns.Msg)
			m.SetUpdate("example.test.")
			rr := mustRR(t, "a.example.test. 60 A 192.0.2.1")
			rr.Header().Class = dns.ClassNONE
			m.Ns = []dns.RR{rr}
			return m
		}, dns.RcodeFormatError},
		{"add type ANY", func() *dns.Msg {
			return newUpdate("example.test.", []dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: "a.example.test.", Rrtype: dns.TypeANY, Class: dns.ClassINET}}}, nil)
		}, dns.RcodeFormatError},
		{"DNSSEC records", func() *dns.Msg {
			return newUpdate("example.test.", []dns.RR{mustRR(t, "a.example.test. NSEC b.example.test. A")}, nil)
		}, dns.RcodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := c.Serial(0)
			if rc := upd(tc.m()); rc != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[rc], dns.RcodeToString[tc.rcode])
			}
			if c.Serial(0) != s {
				t.Fatalf("a refused update changed the serial")
			}
		})
	}
}

func TestUpdatePrerequisites(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	a := mustRR(t, "mail.example.test. 300 A 192.0.2.25")
	add := mustRR(t, "new.example.test. 60 TXT added")
	for _, tc := range []struct {
		name  string
		pre   func(m *dns.Msg)
		rcode int
	}{
		{"name in use", func(m *dns.Msg) { m.NameUsed([]dns.RR{a}) }, dns.RcodeSuccess},
		{"name in use, missing", func(m *dns.Msg) { m.NameUsed([]dns.RR{mustRR(t, "gone.example.test. A 192.0.2.1")}) }, dns.RcodeNameError},
		{"name not in use, present", func(m *dns.Msg) { m.NameNotUsed([]dns.RR{a}) }, dns.RcodeYXDomain},
		{"RRset exists", func(m *dns.Msg) { m.RRsetUsed([]dns.RR{a}) }, dns.RcodeSuccess},
		{"RRset exists, missing", func(m *dns.Msg) { m.RRsetUsed([]dns.RR{mustRR(t, "mail.example.test. TXT x")}) }, dns.RcodeNXRrset},
		{"RRset does not exist, present", func(m *dns.Msg) { m.RRsetNotUsed([]dns.RR{a}) }, dns.RcodeYXRrset},
		{"value-dependent", func(m *dns.Msg) { m.Used([]dns.RR{dns.Copy(a)}) }, dns.RcodeSuccess},
		{"value-dependent, other value", func(m *dns.Msg) { m.Used([]dns.RR{mustRR(t, "mail.example.test. A 192.0.2.26")}) }, dns.RcodeNXRrset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetUpdate("example.test.")
			tc.pre(m)
			m.Insert([]dns.RR{dns.Copy(add)})
			r, err := sendUpdate(t, c.Primary(), m, key{}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			added := len(lookup(t, c, 0, "new.example.test", dns.TypeTXT)) == 1
			if added != (tc.rcode == dns.RcodeSuccess) {
				t.Fatalf("record added: %v with rcode %s", added, dns.RcodeToString[r.Rcode])
			}
			if err := c.Update(func(z *Zone) error { z.RemoveName("new.example.test."); return nil }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUpdateTSIG(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	other := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	c := StartT(t, Options{
		Origin:      "example.test.",
		Records:     testRecords,
		Secondaries: 1,
		TSIG:        map[string]string{"Daneroll.": secret, "limited.": other},
		UpdatePolicy: func(key, name string, rrtype uint16) bool {
			return key == "daneroll." || (key == "limited." && rrtype == dns.TypeTXT)
		},
	})
	rr := func() []dns.RR {
		return []dns.RR{mustRR(t, "_25._tcp.mx.example.test. 300 TLSA 3 1 1 "+strings.Repeat("12", 32))}
	}

	for _, tc := range []struct {
		name    string
		server  int
		k       key
		at      time.Time
		rcode   int
		tsigErr uint16
		added   bool
	}{
		{"unsigned", 0, key{}, time.Now(), dns.RcodeRefused, 0, false},
		{"hmac-sha256", 0, key{"daneroll.", dns.HmacSHA256, secret}, time.Now(), dns.RcodeSuccess, 0, true},
		{"hmac-sha512, name in other case", 0, key{"DANEROLL.", dns.HmacSHA512, secret}, time.Now(), dns.RcodeSuccess, 0, true},
		{"hmac-sha1", 0, key{"daneroll.", dns.HmacSHA1, secret}, time.Now(), dns.RcodeSuccess, 0, true},
		{"wrong secret", 0, key{"daneroll.", dns.HmacSHA256, other}, time.Now(), dns.RcodeNotAuth, dns.RcodeBadSig, false},
		{"unknown key", 0, key{"stranger.", dns.HmacSHA256, secret}, time.Now(), dns.RcodeNotAuth, dns.RcodeBadKey, false},
		{"clock skew", 0, key{"daneroll.", dns.HmacSHA256, secret}, time.Now().Add(-time.Hour), dns.RcodeNotAuth, dns.RcodeBadTime, false},
		{"policy", 0, key{"limited.", dns.HmacSHA256, other}, time.Now(), dns.RcodeRefused, 0, false},
		{"secondary", 1, key{"daneroll.", dns.HmacSHA256, secret}, time.Now(), dns.RcodeRefused, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Update(func(z *Zone) error { z.RemoveName("_25._tcp.mx.example.test."); return nil }); err != nil {
				t.Fatal(err)
			}
			r, err := sendUpdate(t, c.Addrs()[tc.server], newUpdate("example.test.", rr(), nil), tc.k, tc.at)
			q := c.Queries()
			if last := q[len(q)-1]; last.Opcode != dns.OpcodeUpdate || last.Server != tc.server || last.Rcode != r.Rcode ||
				(tc.k.name != "" && last.TSIGKey != dns.CanonicalName(tc.k.name)) {
				t.Fatalf("logged %+v", last)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			rt := r.IsTsig()
			switch {
			case tc.k.name == "":
				if rt != nil {
					t.Fatalf("unsigned request, signed response")
				}
			case tc.tsigErr != 0:
				if rt == nil || rt.Error != tc.tsigErr {
					t.Fatalf("response TSIG %v, want error %s", rt, dns.RcodeToString[int(tc.tsigErr)])
				}
			default:
				// The client verified the response's MAC.
				if rt == nil || err != nil {
					t.Fatalf("response TSIG %v, check: %v", rt, err)
				}
			}
			if added := len(lookup(t, c, 0, "_25._tcp.mx.example.test", dns.TypeTLSA)) == 1; added != tc.added {
				t.Fatalf("record added: %v, want %v", added, tc.added)
			}
		})
	}
	// The limited key may change what the policy allows.
	txt := mustRR(t, `_acme-challenge.example.test. 60 TXT "token"`)
	r, err := sendUpdate(t, c.Primary(), newUpdate("example.test.", []dns.RR{txt}, nil), key{"limited.", dns.HmacSHA256, other}, time.Now())
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("allowed update: %s, %v", dns.RcodeToString[r.Rcode], err)
	}
}

func TestZoneAPI(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords})
	serial := c.Serial(0)
	err := c.Update(func(z *Zone) error {
		if z.Origin() != "example.test." {
			t.Errorf("Origin %q", z.Origin())
		}
		if err := z.AddString("extra 60 TXT one", "extra 60 TXT two"); err != nil {
			return err
		}
		if !z.Remove(mustRR(t, "EXTRA.example.test. TXT one")) {
			t.Errorf("Remove found nothing")
		}
		if z.Remove(mustRR(t, "extra.example.test. TXT three")) {
			t.Errorf("Remove of a missing record reported true")
		}
		z.RemoveRRset("mail.example.test.", dns.TypeMX)
		if got := z.Lookup("extra.example.test.", dns.TypeTXT); len(got) != 1 || got[0].(*dns.TXT).Txt[0] != "two" {
			t.Errorf("Lookup %v", got)
		}
		if err := z.AddString("www.example.org. A 192.0.2.1"); err == nil {
			t.Errorf("added a record outside the zone")
		}
		if err := z.AddString("x DNSKEY 256 3 13 AAAA"); err == nil {
			t.Errorf("added a DNSKEY")
		}
		if err := z.AddString("www TXT conflict"); err == nil {
			t.Errorf("added data next to a CNAME")
		}
		soa := z.SOA()
		soa.Minttl = 42
		return z.Add(soa)
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Serial(0) != serial+1 {
		t.Fatalf("serial %d, want %d", c.Serial(0), serial+1)
	}
	if got := lookup(t, c, 0, "extra.example.test", dns.TypeTXT); len(got) != 1 {
		t.Fatalf("served %v", got)
	}
	if got := lookup(t, c, 0, "mail.example.test", dns.TypeMX); len(got) != 0 {
		t.Fatalf("MX still served: %v", got)
	}
	if soa := lookup(t, c, 0, "example.test", dns.TypeSOA)[0].(*dns.SOA); soa.Minttl != 42 {
		t.Fatalf("SOA %v, want MINIMUM 42", soa)
	}
	// An error from the callback changes nothing.
	err = c.Update(func(z *Zone) error {
		z.RemoveRRset("extra.example.test.", dns.TypeTXT)
		return errTest
	})
	if err != errTest || c.Serial(0) != serial+1 || len(lookup(t, c, 0, "extra.example.test", dns.TypeTXT)) != 1 {
		t.Fatalf("failed Update: err %v, serial %d", err, c.Serial(0))
	}
	// A later serial given in the SOA is taken.
	if err := c.Update(func(z *Zone) error {
		soa := z.SOA()
		soa.Serial = 2030010100
		return z.Add(soa)
	}); err != nil {
		t.Fatal(err)
	}
	if c.Serial(0) != 2030010100 {
		t.Fatalf("serial %d, want the one given", c.Serial(0))
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("callback failed")
