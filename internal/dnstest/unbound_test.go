package dnstest

import (
	"strings"
	"testing"
	"time"

	"github.com/daneroll/daneroll/internal/rig"
	"github.com/miekg/dns"
)

// TestUnboundValidates puts a real validating resolver in front of a
// signed cluster with the cluster's DS as trust anchor: answers, denials
// and changes made later must all come back with the AD bit.
func TestUnboundValidates(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Signed: true, NegativeTTL: 1})
	u := rig.StartUnbound(t, rig.UnboundOptions{StubZone: c.Origin(), StubAddr: c.Primary(), TrustAnchor: c.DS().String()})

	check := func(name string, qtype uint16, rcode int, answers int) {
		t.Helper()
		r, err := u.Query(t.Context(), name, qtype)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != rcode || !r.AuthenticatedData || len(rrsOfType(r.Answer, qtype)) != answers {
			t.Fatalf("%s %s via unbound: rcode %s AD %v answer %v, want %s with AD and %d records\nunbound log:\n%s",
				name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], r.AuthenticatedData, r.Answer,
				dns.RcodeToString[rcode], answers, u.Log())
		}
	}
	check("_25._tcp.mail.example.test.", dns.TypeTLSA, dns.RcodeSuccess, 1)
	check("mail.example.test.", dns.TypeTLSA, dns.RcodeSuccess, 0)
	check("_tcp.mail.example.test.", dns.TypeTXT, dns.RcodeSuccess, 0)
	check("nothere.example.test.", dns.TypeA, dns.RcodeNameError, 0)

	// A name added by an update is validated too, once the negative answer
	// cached above (1 s) has expired.
	if err := c.Update(func(z *Zone) error {
		return z.AddString("_25._tcp.nothere 60 TLSA 3 1 1 " + strings.Repeat("ab", 32))
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := u.Query(t.Context(), "_25._tcp.nothere.example.test.", dns.TypeTLSA)
		if err == nil && len(r.Answer) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new record never reached unbound: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	check("_25._tcp.nothere.example.test.", dns.TypeTLSA, dns.RcodeSuccess, 1)
}
