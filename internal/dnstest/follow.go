package dnstest

import (
	"time"

	"github.com/miekg/dns"
)

// Secondaries copy the primary lazily: what a secondary serves at time t
// follows from the versions' creation times, its lag and Freeze/Thaw, so
// with an injected clock a test moves secondaries along by moving the
// clock, and no timer runs in the background.

// serve records that s serves version vi from at on. A change at the same
// instant replaces the previous one, so no interval is empty.
func (s *server) serve(at time.Time, vi int) {
	last := &s.timeline[len(s.timeline)-1]
	switch {
	case last.v == vi:
	case last.from.Equal(at):
		last.v = vi
	default:
		s.timeline = append(s.timeline, segment{from: at, v: vi})
	}
}

// advance brings s's timeline up to now: every version whose copy has
// arrived by now (its creation plus the lag, not before the last Thaw or
// SetLag) is served from that moment. The caller holds c.mu.
func (c *Cluster) advance(s *server, now time.Time) {
	if s.index == 0 || s.frozen || c.closed {
		return
	}
	for vi := s.timeline[len(s.timeline)-1].v + 1; vi < len(c.versions); vi++ {
		at := c.versions[vi].created.Add(s.lag)
		if at.Before(s.since) {
			at = s.since
		}
		if at.After(now) {
			return
		}
		s.serve(at, vi)
	}
}

// current returns the version s serves at now. The caller holds c.mu.
func (c *Cluster) current(s *server, now time.Time) *version {
	c.advance(s, now)
	vi := s.timeline[len(s.timeline)-1].v
	if vi < 0 {
		// Closed: report what was served last.
		vi = s.timeline[len(s.timeline)-2].v
	}
	return c.versions[vi]
}

// Freeze stops secondary server from copying the primary: it keeps serving
// what it has, as a secondary that cannot reach its primary does. It has no
// effect on the primary (server 0).
func (c *Cluster) Freeze(server int) {
	s := c.server(server)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(s, c.now())
	s.frozen = s.index != 0
}

// Thaw lets a frozen secondary copy again: it serves the primary's latest
// version at once and follows later changes with its lag.
func (c *Cluster) Thaw(server int) {
	s := c.server(server)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.index == 0 || !s.frozen || c.closed {
		return
	}
	now := c.now()
	s.frozen = false
	s.since = now
	s.serve(now, len(c.versions)-1)
}

// SetLag makes each primary change reach secondary server d after it was
// made. Changes already due under the old lag have arrived. It has no
// effect on the primary (server 0).
func (c *Cluster) SetLag(server int, d time.Duration) {
	s := c.server(server)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.advance(s, now)
	s.lag = d
	s.since = now
}

// History returns, per server in order and then by time, the intervals
// during which the server gave one answer for (owner, rrtype): the RRset
// with its TTL, or a denial (NXDOMAIN or NODATA) with its negative TTL. A
// CNAME at owner is its answer. Names below a delegation point, answered
// with a referral, have no intervals.
func (c *Cluster) History(owner string, rrtype uint16) []Served {
	owner = dns.CanonicalName(owner)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var out []Served
	for _, s := range c.servers {
		c.advance(s, now)
		var cur *Served
		end := func(at time.Time) {
			if cur != nil {
				cur.To = at
				out = append(out, *cur)
				cur = nil
			}
		}
		for _, seg := range s.timeline {
			if seg.v < 0 {
				end(seg.from)
				continue
			}
			v := c.versions[seg.v]
			next, ok := v.served(owner, rrtype)
			if cur != nil && ok && sameAnswer(*cur, next) {
				continue
			}
			end(seg.from)
			if ok {
				next.Server, next.From, next.Serial = s.index, seg.from, v.serial
				cur = &next
			}
		}
		if cur != nil {
			out = append(out, *cur)
		}
	}
	return out
}

// served is v's answer for (owner, rrtype), ok false for a referral.
func (v *version) served(owner string, rrtype uint16) (Served, bool) {
	r := v.resolve(owner, rrtype, false)
	switch {
	case !r.aa:
		return Served{}, false
	case len(r.answer) > 0:
		return Served{RRs: r.answer, TTL: r.answer[0].Header().Ttl}, true
	default:
		return Served{Negative: true, NegTTL: negTTL(v.soa())}, true
	}
}

func sameAnswer(a, b Served) bool {
	return a.Negative == b.Negative && a.NegTTL == b.NegTTL && a.TTL == b.TTL && sameRRset(a.RRs, b.RRs)
}
