package dane_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/dane/cloudflare"
	"github.com/daneroll/daneroll/dane/rfc2136"
	"github.com/daneroll/daneroll/internal/cftest"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/rig"
)

// The benchmarks measure the time from Publisher.Add to Confirmer.Wait
// returning, for one new TLSA record, and report it as ms/op (mean) and
// max-ms, with polls/op: how many times Wait slept before every server
// served the record. Run them with
//
//	go test -run '^$' -bench UpdateToConfirm -benchtime 5x ./dane
//
// "confirmer" is the Confirmer as daneroll runs it: the first check at
// once, then backoff from one second. "poll-10ms" polls every 10 ms
// instead, which measures how long the servers take to serve the change.

const benchSecret = "ZGFuZXJvbGwtYmVuY2gtc2VjcmV0LWRhbmVyb2xsLWJlbmNo"

// pollEvery returns a Confirmer.Sleep that waits d whatever backoff Wait
// asks for.
func pollEvery(d time.Duration) func(context.Context, time.Duration) error {
	return func(ctx context.Context, _ time.Duration) error { return sleepCtx(ctx, d) }
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// benchConfirmer is one way of polling.
type benchConfirmer struct {
	name  string
	sleep func(context.Context, time.Duration) error
}

// benchConfirmers are the ways of polling compared.
var benchConfirmers = []benchConfirmer{
	{"confirmer", sleepCtx},
	{"poll-10ms", pollEvery(10 * time.Millisecond)},
}

// measureUpdateToConfirm publishes a fresh record per iteration through
// pub, waits until a Confirmer asking servers confirms it, and reports the
// time between. The record is removed again (untimed) so the RRset stays
// small.
func measureUpdateToConfirm(b *testing.B, pub dane.Publisher, servers []string, how benchConfirmer, owner string, ttl uint32) {
	b.Helper()
	var (
		polls        int  // sleeps before an add was confirmed
		timing       bool // whether Wait is waiting for an add
		total, worst time.Duration
		n            int
	)
	// Sleep runs in Wait's goroutine, this one: no locking needed.
	conf := &dane.Confirmer{Nameservers: servers, Sleep: func(ctx context.Context, d time.Duration) error {
		if timing {
			polls++
		}
		return how.sleep(ctx, d)
	}}
	ctx := b.Context()
	for b.Loop() {
		b.StopTimer()
		rr := keyRecord(b, owner, ttl)
		b.StartTimer()
		start := time.Now()
		timing = true
		if err := pub.Add(ctx, rr); err != nil {
			b.Fatal(err)
		}
		if _, err := conf.Wait(ctx, []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Present: []dns.RR{rr}}}, time.Minute); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		total, worst, n, timing = total+d, max(worst, d), n+1, false

		b.StopTimer()
		if err := pub.Delete(ctx, rr); err != nil {
			b.Fatal(err)
		}
		if _, err := conf.Wait(ctx, []dane.Want{{Owner: owner, Type: dns.TypeTLSA, Absent: []dns.RR{rr}}}, time.Minute); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(total)/float64(n), "ms/op")
	b.ReportMetric(ms(worst), "max-ms")
	b.ReportMetric(float64(polls)/float64(n), "polls/op")
}

// BenchmarkRFC2136UpdateToConfirmBIND: an RFC 2136 update to a real BIND 9
// signing the zone inline, confirmed on it (RRSIGs included). Skips when
// BIND is not installed, and under -short.
func BenchmarkRFC2136UpdateToConfirmBIND(b *testing.B) {
	bind := rig.StartBIND(b, rig.BINDOptions{Signed: true})
	pub, err := rfc2136.New(rfc2136.Config{Server: bind.Addr, TSIGName: bind.TSIGName,
		TSIGAlgorithm: bind.TSIGAlgorithm, TSIGSecret: bind.TSIGSecret})
	if err != nil {
		b.Fatal(err)
	}
	for _, how := range benchConfirmers {
		b.Run(how.name, func(b *testing.B) { measureUpdateToConfirm(b, pub, []string{bind.Addr}, how, itOwner, 60) })
	}
}

// BenchmarkRFC2136UpdateToConfirmDNSTest: the same against the in-process
// signed cluster of three servers, which copy each change at once, and with
// one secondary 100 ms behind.
func BenchmarkRFC2136UpdateToConfirmDNSTest(b *testing.B) {
	c := dnstest.StartT(b, dnstest.Options{Origin: "example.test.", Secondaries: 2, Signed: true,
		TSIG: map[string]string{"daneroll.": benchSecret}})
	pub, err := rfc2136.New(rfc2136.Config{Server: c.Primary(), TSIGName: "daneroll.", TSIGSecret: benchSecret})
	if err != nil {
		b.Fatal(err)
	}
	for _, how := range benchConfirmers {
		b.Run(how.name, func(b *testing.B) { measureUpdateToConfirm(b, pub, c.Addrs(), how, itOwner, 60) })
	}
	c.SetLag(2, 100*time.Millisecond)
	for _, how := range benchConfirmers {
		b.Run("lag-100ms/"+how.name, func(b *testing.B) { measureUpdateToConfirm(b, pub, c.Addrs(), how, itOwner, 60) })
	}
}

// BenchmarkCloudflareUpdateToConfirmDNSTest: the Cloudflare publisher
// against the fake API, whose zone a signed three-server cluster serves.
func BenchmarkCloudflareUpdateToConfirmDNSTest(b *testing.B) {
	srv := cftest.NewServer(itToken, "example.test")
	b.Cleanup(srv.Close)
	c := dnstest.StartT(b, dnstest.Options{Origin: "example.test.", Secondaries: 2, Signed: true})
	if _, err := srv.MirrorTo(c); err != nil {
		b.Fatal(err)
	}
	pub, err := cloudflare.New(cloudflare.Config{Token: itToken, BaseURL: srv.URL, HTTPClient: srv.Client(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	for _, how := range benchConfirmers {
		b.Run(how.name, func(b *testing.B) { measureUpdateToConfirm(b, pub, c.Addrs(), how, itOwner, 300) })
	}
}
