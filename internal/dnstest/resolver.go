package dnstest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// A Resolver is a caching, validating recursive resolver for one zone, as
// unbound is with a stub-zone pointing at the zone's servers and the zone's
// DS as trust anchor. It lets tests and the demo look names up the way a
// DANE client does, with nothing installed: through a cache that keeps each
// answer for its TTL from the moment it was fetched (a change made on the
// servers meanwhile is not seen until then), with the AD bit only for what
// validated from the anchor down, and SERVFAIL for a signed zone's answers
// that do not validate.
//
// Each cache miss costs one question to one of the upstreams, picked at
// random as a resolver picks among a zone's name server addresses, over UDP
// and again over TCP to the same server when the answer is truncated; no
// other server is tried when it fails. Failures (SERVFAIL) are not cached,
// so a test that repairs the zone sees the repair at once; unbound keeps
// bogus answers for val-bogus-ttl (60 s).
//
// Not implemented: iteration from the root (it only knows its zone and
// refuses other names), following a CNAME (the CNAME is answered as the
// upstream served it, and the client follows it), delegations below the
// zone (a referral gets SERVFAIL), wildcards and NSEC3 (answers that need
// them do not validate), the CD bit (ignored: a bogus answer is SERVFAIL
// whatever the client asks), prefetching, serving expired answers and
// aggressive use of NSEC. A DS question for the zone apex is answered by
// the zone's own servers, not by a parent.
type Resolver struct {
	zone      string
	upstreams []string
	anchor    *dns.DS // nil: nothing validates
	maxTTL    uint32
	maxNegTTL uint32
	now       func() time.Time
	log       *slog.Logger
	addr      string
	udp, tcp  *dns.Server
	// ctx ends at Close, so that upstream exchanges in flight end too.
	ctx    context.Context
	cancel context.CancelFunc
	closed sync.Once

	// mu guards cache, inflight and gen.
	mu    sync.Mutex
	cache map[rrKey]*entry
	// inflight holds the fetches under way, so that concurrent misses for
	// one question share a single upstream exchange.
	inflight map[rrKey]*fetchCall
	// gen counts Flush calls: a fetch that began before a Flush does not
	// fill the cache after it.
	gen uint64
}

// ResolverOptions configures a Resolver.
type ResolverOptions struct {
	// Zone is the only zone it resolves (names at or below it); questions
	// for other names get REFUSED.
	Zone string
	// Upstreams are the zone's authoritative servers (host:port); each
	// cache miss asks one, picked at random.
	Upstreams []string
	// Anchor is the zone's trust anchor, its DS record. Nil: nothing
	// validates and AD is never set, as for a zone without a chain of
	// trust.
	Anchor *dns.DS
	// MaxTTL caps the TTL of cached answers; 0 means 86400 (unbound's
	// cache-max-ttl).
	MaxTTL uint32
	// MaxNegativeTTL caps the TTL of cached denials (NXDOMAIN, NODATA); 0
	// means 3600 (unbound's cache-max-negative-ttl).
	MaxNegativeTTL uint32
	// Now is the clock for cache expiry and signature validity; default
	// time.Now. It must not go backwards.
	Now func() time.Time
	// Logger receives a debug line per question and per upstream fetch;
	// default discards.
	Logger *slog.Logger
}

const (
	// resolverTimeout bounds one upstream exchange (UDP, and TCP after a
	// truncated answer).
	resolverTimeout = 2 * time.Second
	// resolverUDPSize is the EDNS buffer size it offers and answers up to
	// over UDP: unbound's edns-buffer-size.
	resolverUDPSize = 1232
	defaultMaxTTL   = 86400
	defaultMaxNeg   = 3600
)

// entry is one cached answer. It is not changed once stored, so readers
// share it without locks.
type entry struct {
	fetched time.Time
	expires time.Time
	rcode   int // dns.RcodeSuccess or dns.RcodeNameError
	// answer holds the answer section with the RRSIGs (the validated ones
	// when the zone validates); ns, for a denial, the SOA and NSEC records
	// with theirs. TTLs are as cached, counted from fetched.
	answer, ns []dns.RR
	// secure is set when everything in answer and ns validated.
	secure bool
}

// fetchCall is a fetch under way; done is closed once e or err is set.
type fetchCall struct {
	done chan struct{}
	e    *entry
	err  error
}

// failure is why a question gets SERVFAIL, with the extended DNS error
// code (RFC 8914) the answer carries.
type failure struct {
	code uint16
	msg  string
}

func (f *failure) Error() string { return f.msg }

func fail(code uint16, format string, args ...any) *failure {
	return &failure{code: code, msg: fmt.Sprintf(format, args...)}
}

// StartResolver starts a resolver on 127.0.0.1, UDP and TCP on one random
// port, and returns once it answers.
func StartResolver(opts ResolverOptions) (*Resolver, error) {
	if opts.Zone == "" {
		return nil, errors.New("dnstest: resolver: no zone")
	}
	if len(opts.Upstreams) == 0 {
		return nil, errors.New("dnstest: resolver: no upstream servers")
	}
	r := &Resolver{
		zone:      dns.CanonicalName(opts.Zone),
		upstreams: slices.Clone(opts.Upstreams),
		maxTTL:    opts.MaxTTL,
		maxNegTTL: opts.MaxNegativeTTL,
		now:       opts.Now,
		log:       opts.Logger,
		cache:     make(map[rrKey]*entry),
		inflight:  make(map[rrKey]*fetchCall),
	}
	if opts.Anchor != nil {
		r.anchor = dns.Copy(opts.Anchor).(*dns.DS)
		if dns.CanonicalName(r.anchor.Hdr.Name) != r.zone {
			return nil, fmt.Errorf("dnstest: resolver: trust anchor for %s, not for the zone %s", r.anchor.Hdr.Name, r.zone)
		}
	}
	if r.maxTTL == 0 {
		r.maxTTL = defaultMaxTTL
	}
	if r.maxNegTTL == 0 {
		r.maxNegTTL = defaultMaxNeg
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())

	pc, l, err := listenPair()
	if err != nil {
		r.cancel()
		return nil, fmt.Errorf("dnstest: resolver: %w", err)
	}
	r.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(r.serve)
	r.udp = &dns.Server{PacketConn: pc, Handler: h, UDPSize: dns.DefaultMsgSize}
	r.tcp = &dns.Server{Listener: l, Handler: h}
	if err := activate(r.udp); err != nil {
		r.cancel()
		pc.Close()
		l.Close()
		return nil, fmt.Errorf("dnstest: resolver: %w", err)
	}
	if err := activate(r.tcp); err != nil {
		l.Close()
		r.tcp = nil
		r.Close()
		return nil, fmt.Errorf("dnstest: resolver: %w", err)
	}
	return r, nil
}

// StartResolverT starts a resolver for a test, fails the test when it
// cannot, and stops the resolver when the test ends.
func StartResolverT(t TB, opts ResolverOptions) *Resolver {
	t.Helper()
	r, err := StartResolver(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// ResolverOptions returns the options of a resolver in front of the
// cluster: its zone, every one of its servers as upstreams, its DS as the
// trust anchor when it is signed, its clock and its logger.
func (c *Cluster) ResolverOptions() ResolverOptions {
	return ResolverOptions{Zone: c.origin, Upstreams: c.Addrs(), Anchor: c.DS(), Now: c.now, Logger: c.log}
}

// StartResolverT starts a resolver with c.ResolverOptions for a test, as
// the package-level StartResolverT does.
func (c *Cluster) StartResolverT(t TB) *Resolver {
	t.Helper()
	return StartResolverT(t, c.ResolverOptions())
}

// Addr returns the resolver's "127.0.0.1:port", for UDP and TCP.
func (r *Resolver) Addr() string { return r.addr }

// Flush empties the cache, as unbound-control flush_zone does.
func (r *Resolver) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.cache)
	r.gen++
}

// Close stops the resolver; exchanges in flight are abandoned. Calling it
// again does nothing.
func (r *Resolver) Close() error {
	var errs []error
	r.closed.Do(func() {
		r.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range []*dns.Server{r.udp, r.tcp} {
			if srv == nil {
				continue
			}
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, fmt.Errorf("dnstest: stop resolver: %w", err))
			}
		}
	})
	return errors.Join(errs...)
}

// serve answers one client question.
func (r *Resolver) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	opt := req.IsEdns0()
	do := opt != nil && opt.Do()
	var why *failure
	switch {
	case opt != nil && opt.Version() != 0:
		m.Rcode = dns.RcodeBadVers
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
	case !req.RecursionDesired:
		// unbound's access-control "allow" answers recursive questions
		// only; cache snooping needs "allow_snoop".
		m.Rcode = dns.RcodeRefused
	case q.Qclass != dns.ClassINET || !dns.IsSubDomain(r.zone, dns.CanonicalName(q.Name)):
		m.Rcode = dns.RcodeRefused
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR || q.Qtype == dns.TypeRRSIG ||
		q.Qtype == dns.TypeOPT || q.Qtype == dns.TypeTSIG:
		m.Rcode = dns.RcodeRefused
	default:
		// RFC 6840 §5.7: AD only for a client that shows it understands it.
		why = r.answer(q, do, do || req.AuthenticatedData, m)
	}

	size := dns.MaxMsgSize
	if _, ok := w.LocalAddr().(*net.UDPAddr); ok {
		size = dns.MinMsgSize
		if opt != nil {
			size = int(min(max(opt.UDPSize(), dns.MinMsgSize), resolverUDPSize))
		}
	}
	if opt != nil {
		m.SetEdns0(resolverUDPSize, do)
		if why != nil {
			o := m.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_EDE{InfoCode: why.code, ExtraText: why.msg})
		}
	}
	m.Truncate(size)
	args := []any{"name", q.Name, "type", dns.TypeToString[q.Qtype], "do", do,
		"rcode", dns.RcodeToString[m.Rcode], "ad", m.AuthenticatedData, "tc", m.Truncated}
	if why != nil {
		args = append(args, "why", why.msg)
	}
	r.log.Debug("dnstest resolver: question", args...)
	if err := w.WriteMsg(m); err != nil {
		r.log.Debug("dnstest resolver: write answer", "err", err)
	}
}

// answer fills m with the answer to q, from the cache or fetched, and
// returns why it is SERVFAIL when it is.
func (r *Resolver) answer(q dns.Question, do, adOK bool, m *dns.Msg) *failure {
	// Room for two exchanges: the answer and the DNSKEY RRset.
	ctx, cancel := context.WithTimeout(r.ctx, 2*resolverTimeout+time.Second)
	defer cancel()
	e, err := r.lookup(ctx, rrKey{dns.CanonicalName(q.Name), q.Qtype})
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
		var f *failure
		if errors.As(err, &f) {
			return f
		}
		return fail(dns.ExtendedErrorCodeNoReachableAuthority, "%v", err)
	}
	now := r.now()
	m.Rcode = e.rcode
	m.Answer = e.section(e.answer, now, func(t uint16) bool { return do || t != dns.TypeRRSIG })
	// RFC 4035 §3.2.1: the denial's proof only for a client that asked for
	// DNSSEC records.
	m.Ns = e.section(e.ns, now, func(t uint16) bool { return do || (t != dns.TypeRRSIG && t != dns.TypeNSEC) })
	m.AuthenticatedData = e.secure && adOK
	return nil
}

// section returns copies of the records keep admits, their TTLs counted
// down from when they were fetched.
func (e *entry) section(rrs []dns.RR, now time.Time, keep func(uint16) bool) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if !keep(rr.Header().Rrtype) {
			continue
		}
		c := dns.Copy(rr)
		c.Header().Ttl = ttlLeft(e.fetched, rr.Header().Ttl, now)
		out = append(out, c)
	}
	return out
}

// ttlLeft is what is left at now of ttl seconds from fetched, in whole
// seconds rounded up: an answer just fetched keeps its full TTL, as with
// unbound, which counts time in whole seconds.
func ttlLeft(fetched time.Time, ttl uint32, now time.Time) uint32 {
	left := fetched.Add(time.Duration(ttl) * time.Second).Sub(now)
	if left <= 0 {
		return 0
	}
	return uint32((left + time.Second - 1) / time.Second)
}

// lookup returns the cached answer for k, fetching it on a miss. Concurrent
// misses for k wait for one fetch.
func (r *Resolver) lookup(ctx context.Context, k rrKey) (*entry, error) {
	now := r.now()
	r.mu.Lock()
	if e := r.cache[k]; e != nil {
		if now.Before(e.expires) {
			r.mu.Unlock()
			return e, nil
		}
		delete(r.cache, k)
	}
	if c := r.inflight[k]; c != nil {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.e, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &fetchCall{done: make(chan struct{})}
	r.inflight[k] = c
	gen := r.gen
	r.mu.Unlock()

	c.e, c.err = r.fetch(ctx, k)
	now = r.now()
	r.mu.Lock()
	delete(r.inflight, k)
	if c.err == nil && gen == r.gen && now.Before(c.e.expires) {
		r.cache[k] = c.e
	}
	r.mu.Unlock()
	close(c.done)
	return c.e, c.err
}

// fetch asks an upstream for k and makes the answer an entry: validated
// when there is an anchor, TTLs capped.
func (r *Resolver) fetch(ctx context.Context, k rrKey) (*entry, error) {
	resp, server, err := r.ask(ctx, k)
	if err != nil {
		return nil, fail(dns.ExtendedErrorCodeNoReachableAuthority, "%s %s: %v", k.name, dns.TypeToString[k.t], err)
	}
	// The TTLs count from when the answer arrived: the latest moment a
	// resolver can have fetched it, so the longest it may keep it.
	e := &entry{fetched: r.now(), rcode: resp.Rcode}
	if f := r.parse(resp, e); f != nil {
		f.msg = fmt.Sprintf("%s %s from %s: %s", k.name, dns.TypeToString[k.t], server, f.msg)
		return nil, f
	}
	if r.anchor != nil {
		if err := r.validate(ctx, k, e); err != nil {
			var f *failure
			if errors.As(err, &f) {
				f.msg = fmt.Sprintf("%s %s from %s: %s", k.name, dns.TypeToString[k.t], server, f.msg)
				return nil, f
			}
			return nil, err
		}
		e.secure = true
	}
	decisive := e.answer
	if len(decisive) == 0 {
		decisive = e.ns
	}
	ttl := uint32(0)
	for i, rr := range decisive {
		if i == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
	}
	e.expires = e.fetched.Add(time.Duration(ttl) * time.Second)
	r.log.Debug("dnstest resolver: fetched", "name", k.name, "type", dns.TypeToString[k.t], "server", server,
		"rcode", dns.RcodeToString[e.rcode], "ttl", ttl, "secure", e.secure)
	return e, nil
}

// ask sends k to one upstream picked at random, without recursion and with
// the DO bit, and again over TCP when the answer comes truncated.
func (r *Resolver) ask(ctx context.Context, k rrKey) (*dns.Msg, string, error) {
	server := r.upstreams[rand.IntN(len(r.upstreams))]
	ctx, cancel := context.WithTimeout(ctx, resolverTimeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(k.name, k.t)
	m.RecursionDesired = false
	m.SetEdns0(resolverUDPSize, true)
	resp, err := exchangeOnce(ctx, "udp", m, server)
	if err == nil && resp.Truncated {
		resp, err = exchangeOnce(ctx, "tcp", m, server)
	}
	if err != nil {
		return nil, server, err
	}
	if len(resp.Question) != 1 || dns.CanonicalName(resp.Question[0].Name) != k.name || resp.Question[0].Qtype != k.t {
		return nil, server, fmt.Errorf("%s answered another question: %v", server, resp.Question)
	}
	return resp, server, nil
}

func exchangeOnce(ctx context.Context, network string, m *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, UDPSize: resolverUDPSize}
	resp, _, err := c.ExchangeContext(ctx, m.Copy(), server)
	return resp, err
}

// parse fills e from an upstream answer: the records in the zone (others
// are dropped, as resolvers scrub what a server is not authoritative for),
// TTLs capped; for a denial the SOA and NSEC records.
func (r *Resolver) parse(resp *dns.Msg, e *entry) *failure {
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return fail(dns.ExtendedErrorCodeNoReachableAuthority, "answered %s", dns.RcodeToString[resp.Rcode])
	}
	inZone := func(rr dns.RR) bool { return dns.IsSubDomain(r.zone, dns.CanonicalName(rr.Header().Name)) }
	for _, rr := range resp.Answer {
		if inZone(rr) && rr.Header().Class == dns.ClassINET {
			e.answer = append(e.answer, rr)
		}
	}
	if len(e.answer) > 0 {
		for _, rr := range e.answer {
			rr.Header().Ttl = min(rr.Header().Ttl, r.maxTTL)
		}
		return nil
	}

	var soa *dns.SOA
	for _, rr := range resp.Ns {
		if s, ok := rr.(*dns.SOA); ok && dns.CanonicalName(s.Hdr.Name) == r.zone {
			soa = s
		}
	}
	if soa == nil {
		for _, rr := range resp.Ns {
			if ns, ok := rr.(*dns.NS); ok && resp.Rcode == dns.RcodeSuccess {
				return fail(dns.ExtendedErrorCodeNotSupported, "a referral to %s (delegations are not followed)", ns.Hdr.Name)
			}
		}
		return fail(dns.ExtendedErrorCodeInvalidData, "%s without a SOA record", dns.RcodeToString[resp.Rcode])
	}
	// RFC 2308 §5: a denial is cached for the smaller of the SOA's TTL and
	// its MINIMUM field.
	negTTL := min(soa.Hdr.Ttl, soa.Minttl, r.maxNegTTL, r.maxTTL)
	for _, rr := range resp.Ns {
		keep := false
		switch x := rr.(type) {
		case *dns.SOA:
			keep = x == soa
		case *dns.NSEC:
			keep = inZone(rr)
		case *dns.RRSIG:
			keep = inZone(rr) && (x.TypeCovered == dns.TypeSOA || x.TypeCovered == dns.TypeNSEC)
		}
		if keep {
			rr.Header().Ttl = min(rr.Header().Ttl, negTTL)
			e.ns = append(e.ns, rr)
		}
	}
	return nil
}

// validate checks e against the trust anchor: the DNSKEY RRset against the
// DS, anything else against the zone's validated keys. On success e's
// sections keep only the RRSIGs that verified, and TTLs are capped by the
// signatures' original TTL and expiration.
func (r *Resolver) validate(ctx context.Context, k rrKey, e *entry) error {
	now := e.fetched
	if k.name == r.zone && k.t == dns.TypeDNSKEY {
		// The keys are validated from the anchor, never from themselves.
		anchored := r.anchored(e.answer)
		if len(anchored) == 0 {
			return fail(dns.ExtendedErrorCodeDNSKEYMissing, "no DNSKEY matches the trust anchor (DS key tag %d, algorithm %d)",
				r.anchor.KeyTag, r.anchor.Algorithm)
		}
		answer, f := verifySets(e.answer, anchored, r.zone, now)
		if f != nil {
			return f
		}
		e.answer = answer
		return nil
	}

	ke, err := r.lookup(ctx, rrKey{r.zone, dns.TypeDNSKEY})
	if err != nil {
		var f *failure
		if errors.As(err, &f) {
			return fail(f.code, "the zone's keys: %s", f.msg)
		}
		return fail(dns.ExtendedErrorCodeDNSKEYMissing, "the zone's keys: %v", err)
	}
	if !ke.secure {
		return fail(dns.ExtendedErrorCodeDNSKEYMissing, "the zone's DNSKEY RRset is missing")
	}
	var keys []*dns.DNSKEY
	for _, rr := range ke.answer {
		if key, ok := rr.(*dns.DNSKEY); ok {
			keys = append(keys, key)
		}
	}
	if len(e.answer) > 0 {
		answer, f := verifySets(e.answer, keys, r.zone, now)
		if f != nil {
			return f
		}
		e.answer = answer
		return nil
	}
	ns, f := verifySets(e.ns, keys, r.zone, now)
	if f != nil {
		return f
	}
	e.ns = ns
	var nsecs []*dns.NSEC
	for _, rr := range ns {
		if n, ok := rr.(*dns.NSEC); ok {
			nsecs = append(nsecs, n)
		}
	}
	if e.rcode == dns.RcodeNameError {
		if !provesNXDomain(nsecs, k.name) {
			return fail(dns.ExtendedErrorCodeNSECMissing, "NXDOMAIN without NSEC records that prove it")
		}
	} else if !provesNoData(nsecs, k.name, k.t) {
		return fail(dns.ExtendedErrorCodeNSECMissing, "NODATA without NSEC records that prove it")
	}
	return nil
}

// anchored returns the keys in a DNSKEY RRset that match the trust anchor.
func (r *Resolver) anchored(rrs []dns.RR) []*dns.DNSKEY {
	var out []*dns.DNSKEY
	for _, rr := range rrs {
		k, ok := rr.(*dns.DNSKEY)
		if !ok || k.Flags&dns.ZONE == 0 || k.Flags&dns.REVOKE != 0 || k.Algorithm != r.anchor.Algorithm || k.KeyTag() != r.anchor.KeyTag {
			continue
		}
		if ds := k.ToDS(r.anchor.DigestType); ds != nil && strings.EqualFold(ds.Digest, r.anchor.Digest) {
			out = append(out, k)
		}
	}
	return out
}

// verifySets checks that every RRset in section has an RRSIG by one of keys
// that verifies and is valid at now. It returns the section with only those
// RRSIGs, each RRset's TTL capped by its RRSIG's original TTL and by the
// time left until the RRSIG expires (as validators do).
func verifySets(section []dns.RR, keys []*dns.DNSKEY, zone string, now time.Time) ([]dns.RR, *failure) {
	var order []rrKey
	sets := make(map[rrKey][]dns.RR)
	sigs := make(map[rrKey][]*dns.RRSIG)
	for _, rr := range section {
		name := dns.CanonicalName(rr.Header().Name)
		if s, ok := rr.(*dns.RRSIG); ok {
			k := rrKey{name, s.TypeCovered}
			sigs[k] = append(sigs[k], s)
			continue
		}
		k := rrKey{name, rr.Header().Rrtype}
		if _, ok := sets[k]; !ok {
			order = append(order, k)
		}
		sets[k] = append(sets[k], rr)
	}
	var out []dns.RR
	for _, k := range order {
		set := sets[k]
		sig, f := verifySet(set, sigs[k], keys, zone, now)
		if f != nil {
			f.msg = fmt.Sprintf("%s %s: %s", k.name, dns.TypeToString[k.t], f.msg)
			return nil, f
		}
		ttl := sig.OrigTtl
		if left := int64(sig.Expiration) - now.Unix(); left < int64(ttl) {
			ttl = uint32(max(left, 0))
		}
		for _, rr := range set {
			ttl = min(ttl, rr.Header().Ttl)
		}
		ttl = min(ttl, sig.Hdr.Ttl)
		for _, rr := range set {
			rr.Header().Ttl = ttl
		}
		sig.Hdr.Ttl = ttl
		out = append(out, set...)
		out = append(out, sig)
	}
	return out, nil
}

// verifySet returns the first of sigs that validates set with one of keys.
func verifySet(set []dns.RR, sigs []*dns.RRSIG, keys []*dns.DNSKEY, zone string, now time.Time) (*dns.RRSIG, *failure) {
	if len(sigs) == 0 {
		return nil, fail(dns.ExtendedErrorCodeRRSIGsMissing, "no RRSIG")
	}
	var last *failure
	for _, s := range sigs {
		switch {
		case dns.CanonicalName(s.SignerName) != zone:
			last = fail(dns.ExtendedErrorCodeDNSBogus, "RRSIG by %s, not by the zone", s.SignerName)
		case int(s.Labels) != dns.CountLabel(set[0].Header().Name):
			last = fail(dns.ExtendedErrorCodeDNSBogus, "RRSIG of a wildcard expansion (not supported)")
		case !s.ValidityPeriod(now):
			code := uint16(dns.ExtendedErrorCodeSignatureNotYetValid)
			if int32(uint32(now.Unix())-s.Expiration) > 0 {
				code = dns.ExtendedErrorCodeSignatureExpired
			}
			last = fail(code, "RRSIG valid from %s to %s, not at %s", dns.TimeToString(s.Inception),
				dns.TimeToString(s.Expiration), now.UTC().Format(time.RFC3339))
		default:
			var key *dns.DNSKEY
			for _, k := range keys {
				if k.Algorithm == s.Algorithm && k.KeyTag() == s.KeyTag {
					key = k
				}
			}
			if key == nil {
				last = fail(dns.ExtendedErrorCodeDNSKEYMissing, "RRSIG by key %d, which is not a validated zone key", s.KeyTag)
				continue
			}
			if err := s.Verify(key, set); err != nil {
				last = fail(dns.ExtendedErrorCodeDNSBogus, "RRSIG by key %d does not verify: %v", s.KeyTag, err)
				continue
			}
			return s, nil
		}
	}
	return nil, last
}

// coversName reports whether n proves that name does not exist: name sorts
// strictly between n's owner and its next name, the last NSEC of the chain
// (whose next name is the apex) covering everything after its owner.
func coversName(n *dns.NSEC, name string) bool {
	if canonicalCompare(n.Hdr.Name, name) >= 0 {
		return false
	}
	return canonicalCompare(name, n.NextDomain) < 0 || canonicalCompare(n.NextDomain, n.Hdr.Name) <= 0
}

// provesNoData reports whether nsecs prove that name has no qtype records
// (RFC 4035 §5.4): an NSEC at name without qtype or CNAME in its bitmap,
// or, for an empty non-terminal, one that covers name with a next name
// below it.
func provesNoData(nsecs []*dns.NSEC, name string, qtype uint16) bool {
	for _, n := range nsecs {
		if dns.CanonicalName(n.Hdr.Name) == name {
			if !slices.Contains(n.TypeBitMap, qtype) && !slices.Contains(n.TypeBitMap, dns.TypeCNAME) {
				return true
			}
			continue
		}
		next := dns.CanonicalName(n.NextDomain)
		if coversName(n, name) && next != name && dns.IsSubDomain(name, next) {
			return true
		}
	}
	return false
}

// provesNXDomain reports whether nsecs prove that name does not exist (RFC
// 4035 §5.4): an NSEC covers name (without showing it to be an empty
// non-terminal), and one covers the wildcard at the closest encloser.
func provesNXDomain(nsecs []*dns.NSEC, name string) bool {
	for _, n := range nsecs {
		next := dns.CanonicalName(n.NextDomain)
		if !coversName(n, name) || dns.IsSubDomain(name, next) {
			continue
		}
		// The closest encloser is the longest ancestor of name that the
		// NSEC's owner or next name shows to exist.
		labels := dns.SplitDomainName(name)
		common := max(dns.CompareDomainName(name, n.Hdr.Name), dns.CompareDomainName(name, next))
		ce := dns.Fqdn(strings.Join(labels[len(labels)-common:], "."))
		wildcard := "*." + ce
		if ce == "." {
			wildcard = "*."
		}
		for _, w := range nsecs {
			if coversName(w, wildcard) {
				return true
			}
		}
	}
	return false
}
