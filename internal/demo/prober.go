package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/services"
)

// maxShownFailures bounds the failure lines the prober (and the history
// check) print; the prober counts them all.
const maxShownFailures = 5

// prober is a DANE client watching the service while daneroll works: at
// every tick it asks the service (STARTTLS) which key it serves, then
// checks that every authoritative server serves a 3 1 1 record for that key
// now, and that no answer a resolver may still hold in its cache (any
// answer given within its TTL) lacks one.
type prober struct {
	w   *world
	con *console
	ep  services.Endpoint
	dns *dns.Client

	mu sync.Mutex // guards the counters and key below
	// checks counts conclusive checks, failed the ones that found a gap.
	checks, failed int
	// skipped counts checks during which the served key changed: they
	// cannot say which key to look for.
	skipped int
	key     string // the key served at the last check
	changes int    // how often the served key changed under the prober
}

func newProber(w *world, con *console) (*prober, error) {
	ep, err := services.ParseEndpoint(w.endpoint())
	if err != nil {
		return nil, err
	}
	return &prober{w: w, con: con, ep: ep, dns: &dns.Client{Net: "udp", Timeout: 5 * time.Second}}, nil
}

// run checks every interval until ctx ends.
func (p *prober) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		p.checkOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOnce makes one check and records its result.
func (p *prober) checkOnce(ctx context.Context) {
	key, problem, ok := p.check(ctx)
	if ctx.Err() != nil {
		return // stopped mid-check: no conclusion
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ok {
		p.skipped++
		return
	}
	p.checks++
	if problem != "" {
		p.failed++
		if p.failed <= maxShownFailures {
			p.con.stamped("[prober] FAIL ", problem)
		}
	}
	if key != "" && key != p.key {
		if p.key != "" {
			p.changes++
			verdict := "its record is on every server and in every answer a resolver may hold"
			if problem != "" {
				verdict = "NOT covered, see above"
			}
			p.con.stamped("[prober] ", fmt.Sprintf("the service now serves key %s: %s", short(key), verdict))
		}
		p.key = key
	}
}

// check returns the key served and what is wrong, if anything; ok is false
// when the served key changed during the check.
func (p *prober) check(ctx context.Context) (key, problem string, ok bool) {
	before, err := services.Probe(ctx, p.ep, services.ProbeOptions{Timeout: 5 * time.Second})
	if err != nil {
		return "", "STARTTLS probe: " + err.Error(), true
	}
	key = before.LeafSPKI()
	var problems []string
	owner := p.w.owner()
	for i, addr := range p.w.dns.Addrs() {
		if msg := p.checkServer(ctx, addr, owner, key); msg != "" {
			problems = append(problems, fmt.Sprintf("ns%d %s", i+1, msg))
		}
	}
	problems = append(problems, cacheGaps(p.w, time.Now(), key)...)
	after, err := services.Probe(ctx, p.ep, services.ProbeOptions{Timeout: 5 * time.Second})
	if err != nil {
		return "", "STARTTLS probe: " + err.Error(), true
	}
	if after.LeafSPKI() != key {
		return "", "", false
	}
	if len(problems) > 0 {
		return key, fmt.Sprintf("key %s served, but %s", short(key), strings.Join(problems, "; ")), true
	}
	return key, "", true
}

// checkServer asks one authoritative server, without recursion and with
// DNSSEC records, for the TLSA RRset and says what is wrong with it.
func (p *prober) checkServer(ctx context.Context, addr, owner, key string) string {
	m := new(dns.Msg)
	m.SetQuestion(owner, dns.TypeTLSA)
	m.RecursionDesired = false
	m.SetEdns0(1232, true)
	r, _, err := p.dns.ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: p.dns.Timeout}
		r, _, err = tcp.ExchangeContext(ctx, m, addr)
	}
	switch {
	case err != nil:
		return "did not answer: " + err.Error()
	case r.Rcode != dns.RcodeSuccess:
		return "answered " + dns.RcodeToString[r.Rcode]
	case !r.Authoritative:
		return "answered without authority"
	}
	found, signed := false, false
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.TLSA:
			if matches311(rr, key) {
				found = true
			}
		case *dns.RRSIG:
			if rr.TypeCovered == dns.TypeTLSA {
				signed = true
			}
		}
	}
	switch {
	case !found:
		return fmt.Sprintf("serves no 3 1 1 record for it (%d records)", countTLSA(r.Answer))
	case !signed:
		return "serves the record without an RRSIG"
	}
	return ""
}

// cacheGaps lists the answers for the TLSA name that some resolver may
// still hold at now (each was given by a server less than its TTL, or its
// negative TTL, ago) and that have no 3 1 1 record for key: a DANE client
// behind such a resolver would refuse the service.
func cacheGaps(w *world, now time.Time, key string) []string {
	var gaps []string
	for _, h := range w.dns.History(w.owner(), dns.TypeTLSA) {
		end, until := cacheable(h, now)
		if h.From.After(now) || !until.After(now) {
			continue
		}
		if !historyHas(h, key) {
			gaps = append(gaps, fmt.Sprintf("ns%d gave %s from %s to %s, which a resolver may cache until %s",
				h.Server+1, describeServed(h), w.since(h.From), w.since(end), w.since(until)))
		}
	}
	return gaps
}

// cacheable returns when a server stopped giving an answer (now if it still
// does) and until when a resolver that got it last may hold it: its TTL,
// or for a denial the negative TTL, later.
func cacheable(h dnstest.Served, now time.Time) (end, until time.Time) {
	end = h.To
	if end.IsZero() {
		end = now
	}
	ttl := h.TTL
	if h.Negative {
		ttl = h.NegTTL
	}
	return end, end.Add(time.Duration(ttl) * time.Second)
}

func historyHas(h dnstest.Served, key string) bool {
	for _, rr := range h.RRs {
		if t, ok := rr.(*dns.TLSA); ok && matches311(t, key) {
			return true
		}
	}
	return false
}

func describeServed(h dnstest.Served) string {
	if h.Negative {
		return "\"no such record\""
	}
	return fmt.Sprintf("an RRset of %d record(s) without it", len(h.RRs))
}

func matches311(t *dns.TLSA, key string) bool {
	return t.Usage == 3 && t.Selector == 1 && t.MatchingType == 1 && strings.EqualFold(t.Certificate, key)
}

func countTLSA(rrs []dns.RR) int {
	n := 0
	for _, rr := range rrs {
		if _, ok := rr.(*dns.TLSA); ok {
			n++
		}
	}
	return n
}

// since stamps a moment as the time since the world started.
func (w *world) since(t time.Time) string { return fmt.Sprintf("+%.3fs", t.Sub(w.start).Seconds()) }

// result is what the prober saw.
func (p *prober) result() (checks, failed, skipped, changes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.checks, p.failed, p.skipped, p.changes
}
