package dane_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
)

// The seed corpora are in testdata/fuzz/FuzzXxx as well, with the inputs
// fuzzing found worth keeping; go test runs them all as ordinary tests.

func FuzzParseTLSA(f *testing.F) {
	for _, s := range []string{
		"3 1 1 0000000000000000000000000000000000000000000000000000000000000001",
		"DANE-EE SPKI SHA2-256 ABCDEF0123",
		"2 0 2 ( ab cd\n ef ) ; a comment",
		`\# 5 0301010a0b`,
		`\# 3 030101`,
		"_25._tcp.mail.example.org. 300 IN TLSA 3 1 1 ab12",
		"_25._tcp.mail.example.org IN 300 TYPE52 3 1 1 AB12",
		"mail.example.org. CLASS1 tlsa privcert privsel privmatch 00",
		"@ 300 IN TLSA 3 1 1 00",
		"x. 4294967296 IN TLSA 3 1 1 00",
		"x. CH TLSA 3 1 1 00",
		"3 1 1 abc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if tl, err := dane.ParseTLSA(s); err == nil {
			again, err := dane.ParseTLSA(tl.String())
			if err != nil || !again.Equal(tl) {
				t.Fatalf("ParseTLSA(%q) = %v, which reads back as %v, %v", s, tl, again, err)
			}
		}
		owner, ttl, tl, err := dane.ParseZoneLine(s)
		if err != nil {
			return
		}
		line := dane.ZoneLine(owner, ttl, tl)
		owner2, ttl2, tl2, err := dane.ParseZoneLine(line)
		if err != nil || owner2 != owner || ttl2 != ttl || !tl2.Equal(tl) {
			t.Fatalf("ParseZoneLine(%q) = %q %d %v, written %q, which reads back as %q %d %v, %v",
				s, owner, ttl, tl, line, owner2, ttl2, tl2, err)
		}
		if !strings.HasSuffix(owner, ".") {
			t.Fatalf("ParseZoneLine(%q): owner %q is not fully qualified", s, owner)
		}
	})
}

func FuzzReadPEM(f *testing.F) {
	files, _ := filepath.Glob("testdata/vectors/*")
	for _, name := range files {
		if strings.HasSuffix(name, ".txt") || strings.HasSuffix(name, ".sh") {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, pub, err := dane.ReadPEM(data)
		if err != nil {
			if chain != nil || pub != nil {
				t.Fatalf("ReadPEM failed (%v) but returned %d certificates and a key %T", err, len(chain), pub)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error on more than one line: %q", err)
			}
			return
		}
		if len(chain) == 0 && pub == nil {
			t.Fatal("ReadPEM succeeded with neither certificates nor a key")
		}
		for i, c := range chain {
			if c == nil {
				t.Fatalf("certificate %d is nil", i)
			}
			// What daneroll does with a chain: no panic, whatever it holds.
			for _, sel := range []uint8{dane.SelectorCert, dane.SelectorSPKI} {
				if _, err := dane.Compute(c, dane.UsageDANEEE, sel, dane.MatchSHA256); err != nil {
					t.Fatalf("Compute on certificate %d: %v", i, err)
				}
			}
		}
		if len(chain) > 0 && !samePub(pub, chain[0].PublicKey) {
			t.Fatalf("the key returned (%T) is not the first certificate's (%T)", pub, chain[0].PublicKey)
		}
		if pub != nil {
			// May fail for key types x509 cannot marshal (DSA); must not
			// panic.
			_, _ = dane.SPKISHA256(pub)
			_, _ = dane.ComputeKey(pub, dane.UsageDANEEE, dane.MatchSHA512)
		}
	})
}

func samePub(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	x, err1 := x509.MarshalPKIXPublicKey(a)
	y, err2 := x509.MarshalPKIXPublicKey(b)
	if err1 != nil || err2 != nil {
		// Not marshallable (DSA): the same value, then.
		return err1 != nil && err2 != nil
	}
	return bytes.Equal(x, y)
}

// fuzzMsgs are realistic answers to start FuzzConfirmerAnswers from: the
// zone's SOA, NS and addresses, and answers at the owner.
func fuzzMsgs(t testing.TB) (soa, positive, denial, signed []byte) {
	pack := func(rrs []string, ns []string, rcode int) []byte {
		m := new(dns.Msg)
		m.Response, m.Authoritative, m.Rcode = true, true, rcode
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		for _, s := range ns {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			m.Ns = append(m.Ns, rr)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	soaRR := "example.test. 2147483647 IN SOA ns1.example.test. hostmaster.example.test. 7 3600 600 86400 4294967295"
	soa = pack([]string{soaRR,
		"example.test. 300 IN NS ns1.example.test.",
		"ns1.example.test. 300 IN A 127.0.0.1",
		"ns1.example.test. 300 IN AAAA ::1",
	}, nil, dns.RcodeSuccess)
	positive = pack([]string{
		strings.Replace(rec1, " 60 ", " 4294967295 ", 1),
		strings.Replace(rec2, " 60 ", " 2147483647 ", 1),
	}, nil, dns.RcodeSuccess)
	denial = pack(nil, []string{soaRR,
		"_25._tcp.mail.example.test. 2147483647 IN NSEC zzz.example.test. A RRSIG NSEC",
		"example.test. 86400 IN NSEC3 1 0 0 - 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM A",
	}, dns.RcodeNameError)
	signed = pack([]string{soaRR,
		"example.test. 300 IN DNSKEY 257 3 13 AAAA",
		"example.test. 300 IN RRSIG SOA 13 2 300 20300101000000 20200101000000 1 example.test. AAAA",
	}, nil, dns.RcodeSuccess)
	return soa, positive, denial, signed
}

func FuzzConfirmerAnswers(f *testing.F) {
	soa, positive, denial, signed := fuzzMsgs(f)
	f.Add(soa, positive, false)
	f.Add(soa, positive, true)
	f.Add(soa, denial, false)
	f.Add(signed, positive, false)
	f.Add(signed, denial, true)
	f.Add(denial, denial, false)
	f.Fuzz(func(t *testing.T, soaWire, answerWire []byte, discover bool) {
		for _, b := range [][]byte{soaWire, answerWire} {
			if err := new(dns.Msg).Unpack(b); err != nil {
				return
			}
		}
		// The zone's own questions (SOA, DNSKEY) and the resolver's get
		// soaWire, the question at the owner answerWire; each answer is
		// unpacked afresh, so that nothing a Confirmer does to one answer
		// changes the next, and made to answer the question asked.
		exchange := func(_ context.Context, q *dns.Msg, _, _ string) (*dns.Msg, error) {
			wire := answerWire
			if qt := q.Question[0].Qtype; qt == dns.TypeSOA || qt == dns.TypeDNSKEY || q.RecursionDesired {
				wire = soaWire
			}
			m := new(dns.Msg)
			if err := m.Unpack(wire); err != nil {
				t.Fatalf("unpacked once, not twice: %v", err)
			}
			m.Id, m.Response = q.Id, true
			m.Question = append([]dns.Question(nil), q.Question...)
			return m, nil
		}
		conf := &dane.Confirmer{Querier: &dane.Querier{Exchange: exchange}}
		if discover {
			conf.Resolver = "192.0.2.53:53"
		} else {
			conf.Nameservers = []string{"192.0.2.1:53", "192.0.2.2:53"}
		}
		want := dane.Want{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}, Absent: []dns.RR{tlsa(t, rec2)}}
		rep, err := conf.Check(context.Background(), []dane.Want{want})
		if err != nil {
			return
		}
		for _, z := range rep.Zones {
			for name, o := range z.Owners {
				if o.TTL > dane.MaxCacheTTL {
					t.Fatalf("TTL at %s = %d, above MaxCacheTTL", name, o.TTL)
				}
			}
			if z.NegTTL > dane.MaxCacheTTL {
				t.Fatalf("NegTTL = %d, above MaxCacheTTL", z.NegTTL)
			}
			if len(z.Servers) == 0 {
				t.Fatal("a zone without servers")
			}
		}
		if rep.MaxTTL() > dane.MaxCacheTTL || dane.CachedTTL(rep, true) > dane.MaxCacheTTL {
			t.Fatalf("MaxTTL %d, CachedTTL %d", rep.MaxTTL(), dane.CachedTTL(rep, true))
		}
		for _, before := range []uint32{0, dane.CachedTTL(rep, true), 4294967295} {
			if h := dane.HoldFor(100, before, rep); h < 0 || h > dane.MaxHold(100) {
				t.Fatalf("HoldFor(100, %d) = %v", before, h)
			}
		}
		// What the callers print must not panic either, and stay on one
		// line per server.
		for _, l := range rep.Lagging() {
			if strings.Contains(l, "\n") {
				t.Fatalf("lagging line %q spans lines", l)
			}
		}
		_ = rep.Unsigned()
		_ = rep.Skipped()
		_ = (&dane.TimeoutError{Report: rep}).Error()
	})
}
