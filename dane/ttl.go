package dane

import (
	"math"
	"time"
)

// MaxCacheTTL is the longest a resolver is assumed to keep a positive answer
// (an RRset, NSEC and NSEC3 records included): 7 days, BIND's max-cache-ttl
// default and the largest default among common resolvers (unbound's
// cache-max-ttl and PowerDNS Recursor's max-cache-ttl default to 86400, one
// day). TTLs taken from DNS answers are capped here, so that a server
// answering with a TTL of 2^32-1 cannot make daneroll hold a key for 136
// years; a resolver configured to keep answers longer than this is not
// allowed for.
const MaxCacheTTL uint32 = 604800

// MaxNegativeTTL is the longest a resolver is assumed to keep a negative
// answer (NXDOMAIN, NODATA) learnt from an SOA: 3 hours, BIND's
// max-ncache-ttl default and the largest default among common resolvers
// (unbound's cache-max-negative-ttl defaults to 3600).
const MaxNegativeTTL uint32 = 10800

// ttlTopBit marks a TTL that RFC 2181 §8 says to read as zero: TTLs are
// 31-bit numbers sent in 32 bits.
const ttlTopBit = 1 << 31

// CacheTTL is how long a resolver may keep a positive answer served with
// ttl: 0 when the top bit is set (RFC 2181 §8), else at most MaxCacheTTL.
func CacheTTL(ttl uint32) uint32 {
	if ttl&ttlTopBit != 0 {
		return 0
	}
	return min(ttl, MaxCacheTTL)
}

// NegativeCacheTTL is how long a resolver may keep a negative answer whose
// SOA gives ttl (RFC 2308 §5): 0 when the top bit is set (RFC 2181 §8), else
// at most MaxNegativeTTL.
func NegativeCacheTTL(ttl uint32) uint32 {
	if ttl&ttlTopBit != 0 {
		return 0
	}
	return min(ttl, MaxNegativeTTL)
}

// CachedTTL is the largest TTL a resolver may hold an answer for, as seen
// in r: the RRsets' TTLs and, with negatives, the negative-caching TTL where
// an RRset was absent. Values are capped as CacheTTL says, also in a Report
// that was not made by a Confirmer.
func CachedTTL(r *Report, negatives bool) uint32 {
	var ttl uint32
	if r == nil {
		return 0
	}
	for _, z := range r.Zones {
		for _, o := range z.Owners {
			ttl = max(ttl, CacheTTL(o.TTL))
			if negatives && o.Absent {
				ttl = max(ttl, CacheTTL(z.NegTTL))
			}
		}
	}
	return ttl
}

// HoldFor is how long to wait after confirmation before serving a key whose
// records were just published: factor times the largest TTL a resolver may
// still be holding from before the change (the old RRset's TTL, or the
// negative-caching TTL where there was none, from before) or may fetch
// after it (the new RRset's TTL, from after) — so that every cached answer
// that lacks the new records has expired.
//
// beforeTTL is capped as CacheTTL says (it may be either kind of TTL, and
// the positive cap is the larger), so the hold is at most MaxHold(factor).
// The result saturates instead of overflowing: a factor of 0 or less gives
// no hold, and a NaN factor the longest hold, so that a broken factor
// never skips the hold silently.
func HoldFor(factor float64, beforeTTL uint32, after *Report) time.Duration {
	ttl := max(CacheTTL(beforeTTL), CachedTTL(after, false))
	return scaleSeconds(factor, ttl)
}

// MaxHold is the longest hold HoldFor can return for factor: factor times
// MaxCacheTTL, saturated as HoldFor is.
func MaxHold(factor float64) time.Duration {
	return scaleSeconds(factor, MaxCacheTTL)
}

// scaleSeconds is factor × ttl seconds, clamped to [0, math.MaxInt64 ns].
func scaleSeconds(factor float64, ttl uint32) time.Duration {
	if ttl == 0 {
		// Not NaN even for an infinite factor.
		return 0
	}
	if math.IsNaN(factor) {
		return math.MaxInt64
	}
	ns := factor * float64(ttl) * float64(time.Second)
	switch {
	case ns <= 0:
		return 0
	// float64(math.MaxInt64) rounds up to 2^63, which converts to a
	// negative Duration: compare with >=.
	case ns >= float64(math.MaxInt64):
		return math.MaxInt64
	}
	return time.Duration(ns)
}
