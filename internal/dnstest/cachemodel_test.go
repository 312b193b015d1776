package dnstest

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestCacheGaps(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	key := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	tlsa := func(s string) dns.RR {
		rr, err := dns.NewRR("_25._tcp.mail.example.test. 60 IN TLSA " + s)
		if err != nil {
			t.Fatal(err)
		}
		return rr
	}
	denial := Served{Negative: true, NegTTL: 5}
	withKey := Served{RRs: []dns.RR{tlsa("3 1 1 " + key), tlsa("3 1 1 " + other)}, TTL: 60}
	without := Served{RRs: []dns.RR{tlsa("3 1 1 " + other)}, TTL: 60}
	// Another digest of the key, or the key by the certificate: not a
	// record for the key's SPKI digest.
	wrongParams := Served{RRs: []dns.RR{tlsa("3 0 1 " + key), tlsa("3 1 2 " + key + key)}, TTL: 60}
	span := func(s Served, server int, from, to float64) Served {
		s.Server, s.From = server, at(from)
		if to >= 0 {
			s.To = at(to)
		}
		return s
	}
	now := at(1000)
	for _, tc := range []struct {
		name    string
		history []Served
		served  []KeyServed
		gaps    int
	}{
		{"covered throughout", []Served{span(denial, 0, 0, 10), span(withKey, 0, 10, -1)},
			[]KeyServed{{From: at(20), SPKI: key}}, 0},
		{"a denial still cached", []Served{span(denial, 0, 0, 10), span(withKey, 0, 10, -1)},
			[]KeyServed{{From: at(12), SPKI: key}}, 1},
		{"served before the record", []Served{span(without, 1, 0, 100), span(withKey, 1, 100, -1)},
			[]KeyServed{{From: at(50), To: at(500), SPKI: key}}, 1},
		{"an RRset without it, cached after it changed", []Served{span(without, 2, 0, 100), span(withKey, 2, 100, -1)},
			[]KeyServed{{From: at(150), SPKI: key}}, 1},
		{"its TTL ran out first", []Served{span(without, 2, 0, 100), span(withKey, 2, 100, -1)},
			[]KeyServed{{From: at(160), SPKI: key}}, 0},
		{"the record went after the key", []Served{span(withKey, 0, 0, 100), span(without, 0, 100, -1)},
			[]KeyServed{{From: at(10), To: at(100), SPKI: key}}, 0},
		{"the record went while the key was served", []Served{span(withKey, 0, 0, 100), span(without, 0, 100, -1)},
			[]KeyServed{{From: at(10), To: at(101), SPKI: key}}, 1},
		{"other parameters", []Served{span(wrongParams, 0, 0, -1)},
			[]KeyServed{{From: at(10), SPKI: key}}, 1},
		{"nothing served", []Served{span(denial, 0, 0, -1)},
			[]KeyServed{{From: at(10), SPKI: ""}}, 0},
		{"upper-case digest", []Served{span(withKey, 0, 0, -1)},
			[]KeyServed{{From: at(10), SPKI: strings.ToUpper(key)}}, 0},
	} {
		gaps := CacheGaps(tc.history, tc.served, now)
		if len(gaps) != tc.gaps {
			var texts []string
			for _, g := range gaps {
				texts = append(texts, g.Describe(t0))
			}
			t.Errorf("%s: %d gaps, want %d: %v", tc.name, len(gaps), tc.gaps, texts)
		}
	}

	g := CacheGaps([]Served{span(denial, 1, 0, 10)}, []KeyServed{{From: at(12), SPKI: key}}, now)
	want := "key abababababab… served from +12.000s to now, but server 1 answered no such record from +0.000s to +10.000s (cacheable until +15.000s)"
	if len(g) != 1 {
		t.Fatalf("%d gaps, want 1", len(g))
	}
	if got := g[0].Describe(t0); got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
}
