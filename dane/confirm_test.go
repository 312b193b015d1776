package dane_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/dane/manual"
	"github.com/daneroll/daneroll/dane/rfc2136"
	"github.com/daneroll/daneroll/internal/dnstest"
)

const (
	zone    = "example.test."
	owner   = "_25._tcp.mail.example.test."
	tsigKey = "daneroll."
	secret  = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
)

func cluster(t *testing.T, signed bool, secondaries int) *dnstest.Cluster {
	t.Helper()
	return dnstest.StartT(t, dnstest.Options{
		Origin:      zone,
		Records:     []string{"mail 300 IN A 127.0.0.1"},
		Secondaries: secondaries,
		Signed:      signed,
		TSIG:        map[string]string{tsigKey: secret},
		SOATTL:      600,
		NegativeTTL: 30,
	})
}

func tlsa(t *testing.T, line string) *dns.TLSA {
	t.Helper()
	rr, err := dns.NewRR(line)
	if err != nil {
		t.Fatal(err)
	}
	return rr.(*dns.TLSA)
}

var (
	rec1 = "_25._tcp.mail.example.test. 60 IN TLSA 3 1 1 0000000000000000000000000000000000000000000000000000000000000001"
	rec2 = "_25._tcp.mail.example.test. 60 IN TLSA 3 1 1 0000000000000000000000000000000000000000000000000000000000000002"
)

// fakeSleep records waits and returns at once.
type fakeSleep struct {
	mu     sync.Mutex // guards slept
	slept  []time.Duration
	onWait func()
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.slept = append(f.slept, d)
	hook := f.onWait
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return ctx.Err()
}

func TestConfirmWaitsForLaggingSecondary(t *testing.T) {
	c := cluster(t, true, 2)
	c.Freeze(2)
	pub, err := rfc2136.New(rfc2136.Config{Server: c.Primary(), TSIGName: tsigKey, TSIGAlgorithm: dns.HmacSHA256, TSIGSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pub.Add(ctx, tlsa(t, rec1)); err != nil {
		t.Fatal(err)
	}
	fs := &fakeSleep{}
	conf := &dane.Confirmer{Nameservers: c.Addrs(), Sleep: fs.sleep}
	want := []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}}}

	rep, err := conf.Check(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Confirmed {
		t.Fatal("confirmed while a secondary lags")
	}
	lag := rep.Lagging()
	if len(lag) != 1 || !strings.Contains(lag[0], c.Addrs()[2]) || !strings.Contains(lag[0], "lacks "+owner+" TLSA 3 1 1") {
		t.Errorf("lagging = %q, want only the frozen secondary, saying what it lacks", lag)
	}
	if !rep.Zones[0].Signed {
		t.Error("signed zone reported unsigned")
	}

	// Wait polls; the secondary catches up after the second poll.
	polls := 0
	fs.onWait = func() {
		polls++
		if polls == 2 {
			c.Thaw(2)
		}
	}
	rep, err = conf.Wait(ctx, want, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Confirmed || rep.Zones[0].Serial != c.Serial(0) {
		t.Errorf("report = %+v", rep.Zones[0])
	}
	if len(fs.slept) < 2 || fs.slept[1] <= fs.slept[0] {
		t.Errorf("no backoff between polls: %v", fs.slept)
	}
	// Every server agrees on one serial and serves the record.
	for _, s := range rep.Zones[0].Servers {
		if s.Serial != c.Serial(0) || len(s.Missing) > 0 {
			t.Errorf("server %s: %+v", s.Addr, s)
		}
	}
}

func TestConfirmTimeoutNamesTheServer(t *testing.T) {
	c := cluster(t, false, 1)
	c.Freeze(1)
	if err := c.Update(func(z *dnstest.Zone) error { return z.AddString(rec1) }); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	fs := &fakeSleep{}
	fs.onWait = func() { now = now.Add(time.Minute) }
	conf := &dane.Confirmer{Nameservers: c.Addrs(), Sleep: fs.sleep, Now: func() time.Time { return now }}
	_, err := conf.Wait(context.Background(), []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}}}, 5*time.Minute)
	var te *dane.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, c.Addrs()[1]) || strings.Contains(msg, c.Addrs()[0]+" (") || strings.Contains(msg, "\n") {
		t.Errorf("message %q should name only the lagging server, on one line", msg)
	}
	if !strings.Contains(msg, "after 5m0s") {
		t.Errorf("message %q does not say how long it waited", msg)
	}
}

func TestConfirmAbsentAndNegativeCaching(t *testing.T) {
	c := cluster(t, true, 1)
	conf := &dane.Confirmer{Nameservers: c.Addrs()}
	ctx := context.Background()
	// Before anything is published the name does not exist: resolvers may
	// cache that for min(SOA TTL, MINIMUM) = 30s.
	rep, err := conf.Check(ctx, []dane.Want{{Owner: owner, Type: dns.TypeTLSA}})
	if err != nil {
		t.Fatal(err)
	}
	z := rep.Zones[0]
	if z.Zone != zone || z.NegTTL != 30 || !z.Owners[owner].Absent {
		t.Errorf("zone report = %+v", z)
	}
	if got := dane.HoldFor(2, dane.CachedTTL(rep, true), nil); got != 60*time.Second {
		t.Errorf("hold after publishing at a new name = %v, want 2 × 30s", got)
	}
	if err := c.Update(func(z *dnstest.Zone) error { return z.AddString(rec1, rec2) }); err != nil {
		t.Fatal(err)
	}
	after, err := conf.Check(ctx, []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}, Absent: []dns.RR{tlsa(t, rec2)}}})
	if err != nil {
		t.Fatal(err)
	}
	if after.Confirmed {
		t.Error("confirmed although a record that must be gone is served")
	}
	if !strings.Contains(strings.Join(after.Lagging(), "|"), "still serves") {
		t.Errorf("lagging = %q", after.Lagging())
	}
	if after.MaxTTL() != 60 {
		t.Errorf("MaxTTL = %d", after.MaxTTL())
	}
	if got := dane.HoldFor(2, dane.CachedTTL(rep, true), after); got != 120*time.Second {
		t.Errorf("hold with a 60s RRset = %v", got)
	}
	if err := c.Update(func(z *dnstest.Zone) error { z.Remove(tlsa(t, rec2)); return nil }); err != nil {
		t.Fatal(err)
	}
	final, err := conf.Check(ctx, []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{tlsa(t, rec1)}, Absent: []dns.RR{tlsa(t, rec2)}}})
	if err != nil || !final.Confirmed {
		t.Fatalf("after removal: %v, %v", final.Lagging(), err)
	}
}

func TestConfirmUnsignedZone(t *testing.T) {
	c := cluster(t, false, 0)
	conf := &dane.Confirmer{Nameservers: c.Addrs()}
	rep, err := conf.Check(context.Background(), []dane.Want{{Owner: owner, Type: dns.TypeTLSA}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Unsigned(); len(got) != 1 || got[0] != zone {
		t.Errorf("Unsigned() = %v", got)
	}
}

func TestConfirmServerDown(t *testing.T) {
	c := cluster(t, false, 1)
	addrs := c.Addrs()
	// A server nobody answers on: a port that was free a moment ago.
	down := "127.0.0.1:9"
	conf := &dane.Confirmer{Nameservers: append(addrs, down), Querier: &dane.Querier{Timeout: 200 * time.Millisecond}}
	rep, err := conf.Check(context.Background(), []dane.Want{{Owner: owner, Type: dns.TypeTLSA}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Confirmed {
		t.Error("confirmed although a server does not answer")
	}
	if lag := strings.Join(rep.Lagging(), "|"); !strings.Contains(lag, down) {
		t.Errorf("lagging = %q", lag)
	}
}

func TestZoneOfWalksUp(t *testing.T) {
	c := cluster(t, false, 0)
	conf := &dane.Confirmer{Nameservers: c.Addrs()}
	for _, name := range []string{"example.test.", "mail.example.test.", "_25._tcp.deep.below.mail.example.test."} {
		got, err := conf.ZoneOf(context.Background(), name)
		if err != nil || got != zone {
			t.Errorf("ZoneOf(%s) = %q, %v", name, got, err)
		}
	}
	if _, err := conf.ZoneOf(context.Background(), "mail.example.org."); err == nil {
		t.Error("found a zone for a name the servers do not serve")
	}
}

func TestTXTChallengeConfirmsOnEveryServer(t *testing.T) {
	c := cluster(t, true, 2)
	c.SetLag(1, 50*time.Millisecond)
	pub, err := rfc2136.New(rfc2136.Config{Server: c.Primary(), TSIGName: tsigKey, TSIGAlgorithm: dns.HmacSHA256, TSIGSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	conf := &dane.Confirmer{Nameservers: c.Addrs()}
	ch := &dane.TXTChallenge{Publisher: pub, Confirmer: conf, Timeout: time.Minute}
	ctx := context.Background()
	name := "_acme-challenge.mail.example.test."
	if err := ch.PresentTXT(ctx, name, "token-value"); err != nil {
		t.Fatal(err)
	}
	// Once PresentTXT returns, every server serves the record.
	for i := range c.Addrs() {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		r, err := dns.Exchange(m, c.Addrs()[i])
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != "token-value" {
			t.Errorf("server %d: %v %v", i, r, err)
		}
	}
	if err := ch.CleanUpTXT(ctx, name, "token-value"); err != nil {
		t.Fatal(err)
	}
	if rrs, _ := pub.Records(ctx, name, dns.TypeTXT); len(rrs) != 0 {
		t.Errorf("challenge record left: %v", rrs)
	}
}

func TestManualPublisherInstructs(t *testing.T) {
	c := cluster(t, false, 1)
	conf := &dane.Confirmer{Nameservers: c.Addrs()}
	var got []manual.Instruction
	pub := manual.New(conf, func(i manual.Instruction) { got = append(got, i) })
	ctx := context.Background()
	if err := pub.Add(ctx, tlsa(t, rec1)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != "add" || got[0].Zone != zone || !strings.Contains(got[0].Line, "3 1 1 0000") {
		t.Fatalf("instructions = %+v", got)
	}
	// The operator makes the change; adding again asks for nothing.
	if err := c.Update(func(z *dnstest.Zone) error { return z.AddString(rec1) }); err != nil {
		t.Fatal(err)
	}
	if err := pub.Add(ctx, tlsa(t, rec1)); err != nil || len(got) != 1 {
		t.Errorf("re-adding a served record: %v, %+v", err, got)
	}
	rrs, err := pub.Records(ctx, owner, dns.TypeTLSA)
	if err != nil || len(rrs) != 1 {
		t.Errorf("Records = %v, %v", rrs, err)
	}
	if err := pub.Delete(ctx, tlsa(t, rec1)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Action != "remove" || !strings.Contains(got[1].String(), "remove in zone example.test: ") {
		t.Errorf("instructions = %+v", got)
	}
	if err := pub.Delete(ctx, tlsa(t, rec2)); err != nil || len(got) != 2 {
		t.Errorf("deleting a record that is not served asked for a change: %+v", got)
	}
}

func TestLookupNullMX(t *testing.T) {
	c := dnstest.StartT(t, dnstest.Options{Origin: "nomail.test.", Records: []string{"@ 300 IN MX 0 ."}})
	_, _, err := dane.LookupMX(context.Background(), &dane.Querier{}, c.Primary(), "nomail.test")
	if err == nil || !strings.Contains(err.Error(), "accepts no mail") {
		t.Errorf("null MX: %v", err)
	}
}

func TestZoneOfWithoutTrailingDot(t *testing.T) {
	c := cluster(t, false, 0)
	conf := &dane.Confirmer{Nameservers: append([]string{"127.0.0.1:9"}, c.Addrs()...), Querier: &dane.Querier{Timeout: 300 * time.Millisecond}}
	// The first configured server does not answer; the next one does.
	if got, err := conf.ZoneOf(context.Background(), "_25._tcp.mail.example.test"); err != nil || got != zone {
		t.Errorf("ZoneOf = %q, %v", got, err)
	}
}
