package dnstest

import (
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// KeyServed is an interval during which a service presented one key.
type KeyServed struct {
	// To is zero while the key is still served.
	From, To time.Time
	// SPKI is the hex SHA-256 digest of the key's SubjectPublicKeyInfo,
	// the data of its "3 1 1" TLSA record; "" when nothing was served.
	SPKI string
}

// CacheGap is an answer that a resolver could have held while a key was
// served, and that had no record for the key.
type CacheGap struct {
	Key    KeyServed
	Answer Served
	// CachedUntil is when the last copy a cache could hold ran out: the
	// end of the answer's interval plus its TTL (its negative TTL for a
	// denial).
	CachedUntil time.Time
}

// CacheGaps checks a model of resolver caches against what a service
// served: a resolver may have fetched any answer in history (the History
// of one TLSA owner name) while a server gave it, and kept it for up to its
// TTL, or its negative TTL for a denial, after the server stopped. It
// returns every answer that a cache could still have held while a key in
// served was presented, and that holds no record with selector 1 (SPKI)
// and matching type 1 (SHA-256) for that key: a moment when a DANE client
// could have found the served key without a matching record. Intervals
// still open end at now.
func CacheGaps(history []Served, served []KeyServed, now time.Time) []CacheGap {
	var gaps []CacheGap
	for _, k := range served {
		if k.SPKI == "" {
			continue
		}
		to := k.To
		if to.IsZero() {
			to = now
		}
		for _, h := range history {
			end := h.To
			if end.IsZero() {
				end = now
			}
			ttl := h.TTL
			if h.Negative {
				ttl = h.NegTTL
			}
			cachedUntil := end.Add(time.Duration(ttl) * time.Second)
			if !h.From.Before(to) || !k.From.Before(cachedUntil) {
				continue // no cache could hold this answer while the key was served
			}
			if !holdsKey(h, k.SPKI) {
				gaps = append(gaps, CacheGap{Key: k, Answer: h, CachedUntil: cachedUntil})
			}
		}
	}
	return gaps
}

func holdsKey(h Served, spki string) bool {
	for _, rr := range h.RRs {
		if t, ok := rr.(*dns.TLSA); ok && t.Selector == 1 && t.MatchingType == 1 && strings.EqualFold(t.Certificate, spki) {
			return true
		}
	}
	return false
}

// Describe says what the gap is, with times in seconds since origin (the
// start of the test).
func (g CacheGap) Describe(origin time.Time) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "now"
		}
		return fmt.Sprintf("+%.3fs", t.Sub(origin).Seconds())
	}
	spki := g.Key.SPKI
	if len(spki) > 12 {
		spki = spki[:12] + "…"
	}
	what := "no such record"
	if !g.Answer.Negative {
		what = fmt.Sprintf("an RRset of %d record(s) without it", len(g.Answer.RRs))
	}
	return fmt.Sprintf("key %s served from %s to %s, but server %d answered %s from %s to %s (cacheable until %s)",
		spki, at(g.Key.From), at(g.Key.To), g.Answer.Server, what, at(g.Answer.From), at(g.Answer.To), at(g.CachedUntil))
}
