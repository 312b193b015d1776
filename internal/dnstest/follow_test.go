package dnstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const tlsaData = "3 1 1 0000000000000000000000000000000000000000000000000000000000000001"

func addTLSA(t *testing.T, c *Cluster, line string) {
	t.Helper()
	if err := c.Update(func(z *Zone) error { return z.AddString(line) }); err != nil {
		t.Fatal(err)
	}
}

// served asks server i for the SOA serial and the TLSA RRset at name, in one
// consistent view.
func served(t *testing.T, c *Cluster, i int, name string) (uint32, []dns.RR) {
	t.Helper()
	soa := ask(t, "udp", c.Addrs()[i], c.Origin(), dns.TypeSOA, false, false).Answer[0].(*dns.SOA)
	r := ask(t, "udp", c.Addrs()[i], name, dns.TypeTLSA, false, false)
	return soa.Serial, r.Answer
}

func TestFreezeThaw(t *testing.T) {
	clock := newClock()
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Secondaries: 2, Now: clock.Now})
	start := c.Serial(0)
	for i := range 3 {
		if c.Serial(i) != start {
			t.Fatalf("server %d starts at serial %d, primary at %d", i, c.Serial(i), start)
		}
	}

	c.Freeze(1)
	c.Freeze(0) // no effect on the primary
	clock.Advance(time.Second)
	addTLSA(t, c, "_25._tcp.mx1 300 TLSA "+tlsaData)
	clock.Advance(time.Second)
	addTLSA(t, c, "_25._tcp.mx2 300 TLSA "+tlsaData)
	clock.Advance(time.Hour)

	if s, rrs := served(t, c, 0, "_25._tcp.mx2.example.test."); s != start+2 || len(rrs) != 1 {
		t.Fatalf("primary: serial %d, TLSA %v", s, rrs)
	}
	if s, rrs := served(t, c, 2, "_25._tcp.mx2.example.test."); s != start+2 || len(rrs) != 1 || c.Serial(2) != start+2 {
		t.Fatalf("following secondary: serial %d, TLSA %v", s, rrs)
	}
	// The frozen secondary serves its old copy, serial and data together.
	if s, rrs := served(t, c, 1, "_25._tcp.mx1.example.test."); s != start || len(rrs) != 0 || c.Serial(1) != start {
		t.Fatalf("frozen secondary: serial %d, TLSA %v", s, rrs)
	}

	c.Thaw(1)
	if s, rrs := served(t, c, 1, "_25._tcp.mx2.example.test."); s != start+2 || len(rrs) != 1 {
		t.Fatalf("thawed secondary: serial %d, TLSA %v", s, rrs)
	}
	// And follows from then on.
	addTLSA(t, c, "_25._tcp.mx3 300 TLSA "+tlsaData)
	if c.Serial(1) != start+3 {
		t.Fatalf("thawed secondary at %d, primary at %d", c.Serial(1), c.Serial(0))
	}
}

func TestLagFakeClock(t *testing.T) {
	clock := newClock()
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Secondaries: 1, Now: clock.Now})
	start := c.Serial(0)
	c.SetLag(1, time.Minute)
	addTLSA(t, c, "_25._tcp.mx1 300 TLSA "+tlsaData) // copy due at +1m
	clock.Advance(30 * time.Second)
	addTLSA(t, c, "_25._tcp.mx2 300 TLSA "+tlsaData) // copy due at +1m30s

	if c.Serial(1) != start {
		t.Fatalf("secondary at %d before the lag passed", c.Serial(1))
	}
	clock.Advance(30 * time.Second)
	if s, rrs := served(t, c, 1, "_25._tcp.mx1.example.test."); s != start+1 || len(rrs) != 1 {
		t.Fatalf("after 1m: serial %d, TLSA %v", s, rrs)
	}
	if _, rrs := served(t, c, 1, "_25._tcp.mx2.example.test."); len(rrs) != 0 {
		t.Fatalf("after 1m the second change is already there")
	}
	clock.Advance(30 * time.Second)
	if c.Serial(1) != start+2 {
		t.Fatalf("after 1m30s: serial %d, want %d", c.Serial(1), start+2)
	}

	// A shorter lag applies from when it is set, to changes not yet copied.
	c.SetLag(1, time.Hour)
	addTLSA(t, c, "_25._tcp.mx3 300 TLSA "+tlsaData)
	clock.Advance(time.Minute)
	c.SetLag(1, 0)
	if c.Serial(1) != start+3 {
		t.Fatalf("after lag 0: serial %d, want %d", c.Serial(1), start+3)
	}
}

func TestLagRealClock(t *testing.T) {
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Secondaries: 1})
	const lag = 300 * time.Millisecond
	c.SetLag(1, lag)
	start := c.Serial(0)
	changed := time.Now()
	addTLSA(t, c, "_25._tcp.mx1 300 TLSA "+tlsaData)
	if s, _ := served(t, c, 1, "_25._tcp.mx1.example.test."); s != start && time.Since(changed) < lag {
		t.Fatalf("secondary copied at once despite the lag")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, rrs := served(t, c, 1, "_25._tcp.mx1.example.test.")
		if s == start+1 && len(rrs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("secondary never copied: serial %d", s)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if since := time.Since(changed); since < lag {
		t.Fatalf("copy after %v, lag is %v", since, lag)
	}
}

func TestHistory(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	c := StartT(t, Options{Origin: "example.test.", Records: testRecords, Secondaries: 2,
		SOATTL: 3600, NegativeTTL: 900, Now: clock.Now})
	owner := "_25._tcp.mx.example.test."
	c.SetLag(1, 5*time.Minute)
	c.Freeze(2)

	t1 := clock.Advance(time.Minute)
	addTLSA(t, c, "_25._tcp.mx 300 TLSA "+tlsaData)
	clock.Advance(time.Minute)
	addTLSA(t, c, "unrelated 60 TXT x") // same answer at owner: no new interval
	t3 := clock.Advance(time.Minute)
	if err := c.Update(func(z *Zone) error { return z.AddString("_25._tcp.mx 120 TLSA " + tlsaData) }); err != nil {
		t.Fatal(err)
	}
	t4 := clock.Advance(time.Minute)
	c.Thaw(2)
	t5 := clock.Advance(time.Minute)
	if err := c.Update(func(z *Zone) error { z.RemoveName(owner); return nil }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	s0 := c.Serial(0) - 4 // at start; four changes since

	neg := func(server int, from, to time.Time, serial uint32) Served {
		return Served{Server: server, From: from, To: to, Serial: serial, Negative: true, NegTTL: 900}
	}
	pos := func(server int, from, to time.Time, serial, ttl uint32) Served {
		return Served{Server: server, From: from, To: to, Serial: serial, TTL: ttl}
	}
	lag := 5 * time.Minute
	want := []Served{
		neg(0, t0, t1, s0),
		pos(0, t1, t3, s0+1, 300),
		pos(0, t3, t5, s0+3, 120),
		neg(0, t5, time.Time{}, s0+4),

		neg(1, t0, t1.Add(lag), s0),
		pos(1, t1.Add(lag), t3.Add(lag), s0+1, 300),
		pos(1, t3.Add(lag), t5.Add(lag), s0+3, 120),
		neg(1, t5.Add(lag), time.Time{}, s0+4),

		// Frozen until t4, then a copy of serial s0+3 at once.
		neg(2, t0, t4, s0),
		pos(2, t4, t5, s0+3, 120),
		neg(2, t5, time.Time{}, s0+4),
	}
	got := c.History(owner, dns.TypeTLSA)
	if len(got) != len(want) {
		t.Fatalf("history has %d intervals, want %d:\n%s", len(got), len(want), fmtHistory(got))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Server != w.Server || !g.From.Equal(w.From) || !g.To.Equal(w.To) || g.Serial != w.Serial ||
			g.Negative != w.Negative || g.NegTTL != w.NegTTL || g.TTL != w.TTL {
			t.Fatalf("interval %d:\n got %s\nwant %s\nall:\n%s", i, fmtServed(g), fmtServed(w), fmtHistory(got))
		}
		if !w.Negative && (len(g.RRs) != 1 || !strings.HasSuffix(g.RRs[0].String(), tlsaData) || g.RRs[0].Header().Ttl != w.TTL) {
			t.Fatalf("interval %d RRs %v", i, g.RRs)
		}
	}

	// A name below a delegation is answered with a referral: no intervals.
	if h := c.History("www.sub.example.test.", dns.TypeA); len(h) != 0 {
		t.Fatalf("history below a delegation: %v", h)
	}
}

func fmtServed(s Served) string {
	return fmt.Sprintf("server %d %s–%s serial %d negative %v ttl %d negttl %d",
		s.Server, s.From.Format("15:04:05"), s.To.Format("15:04:05"), s.Serial, s.Negative, s.TTL, s.NegTTL)
}

func fmtHistory(h []Served) string {
	var b strings.Builder
	for _, s := range h {
		b.WriteString(fmtServed(s) + "\n")
	}
	return b.String()
}
