package dane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Want is what one RRset must look like on every authoritative server.
type Want struct {
	Owner string
	Type  uint16
	// Present must all be served; Absent must none be served. Other
	// records at the name (someone else's) do not matter.
	Present []dns.RR
	Absent  []dns.RR
}

// Confirmer asks every authoritative server of a zone, directly and
// without recursion, whether it serves a change.
type Confirmer struct {
	// Nameservers, when set, are the servers asked (host:port), instead of
	// the zone's NS set discovered through Resolver.
	Nameservers []string
	// Resolver (host:port) is the recursive resolver used to find the
	// zone, its NS names and their addresses; "" reads /etc/resolv.conf.
	Resolver string
	Querier  *Querier
	// Timeout bounds one Check (one round of Wait), finding the zone and
	// its servers included; 0 means DefaultCheckTimeout. Servers that have
	// not answered by then count as lagging, with the error that says so.
	Timeout time.Duration
	Now     func() time.Time
	// Sleep waits between polls; it must return early when ctx ends.
	Sleep  func(ctx context.Context, d time.Duration) error
	Logger *slog.Logger
}

// DefaultCheckTimeout is the Confirmer's Timeout when it is zero: many
// times what a round costs when one server in each zone never answers
// (about one Querier timeout, since the servers are asked in parallel).
const DefaultCheckTimeout = time.Minute

// maxParallel bounds the servers asked at once: more than any usual NS set
// has addresses, so that a round costs about one question's timeout, while
// a zone with dozens of addresses is not flooded.
const maxParallel = 8

// ServerState is what one authoritative server serves.
type ServerState struct {
	Addr   string // host:port asked
	NS     string // its NS name, when discovered
	Serial uint32
	// Missing are wanted records it does not serve; Extra are records it
	// still serves that should be gone.
	Missing []dns.RR
	Extra   []dns.RR
	// Unsigned is set when the zone is signed but an answer came without
	// RRSIGs.
	Unsigned bool
	// Skipped is set when this host has no route to the address family
	// (an IPv6 address on an IPv4-only host).
	Skipped bool
	Err     error
}

func (s *ServerState) ok() bool {
	return s.Skipped || (s.Err == nil && len(s.Missing) == 0 && len(s.Extra) == 0 && !s.Unsigned)
}

// OwnerState sums up what the servers serve at one name, for the hold.
type OwnerState struct {
	// TTL is the largest TTL served for the RRset, as CacheTTL reads it.
	TTL uint32
	// Absent is set when some server had no such RRset at all (NXDOMAIN or
	// NODATA), which resolvers may cache for the negative TTL.
	Absent bool
}

// ZoneReport is one zone's answer to a check.
type ZoneReport struct {
	Zone   string
	Signed bool
	// NegTTL is how long a resolver may cache a denial: the SOA's RFC 2308
	// negative TTL (at most MaxNegativeTTL) or, where a denial came with
	// NSEC or NSEC3 records that an RFC 8198 resolver may keep and reuse,
	// their TTL (at most MaxCacheTTL).
	NegTTL    uint32
	Serial    uint32 // the serial every server agrees on, when confirmed
	Confirmed bool
	Servers   []ServerState
	Owners    map[string]OwnerState
}

// Report is the result of one round of checks.
type Report struct {
	At        time.Time
	Confirmed bool
	Zones     []*ZoneReport
}

// MaxTTL is the largest TTL served at any of the names.
func (r *Report) MaxTTL() uint32 {
	var m uint32
	for _, z := range r.Zones {
		for _, o := range z.Owners {
			m = max(m, o.TTL)
		}
	}
	return m
}

// Unsigned lists zones that are not DNSSEC-signed (where DANE is inert).
func (r *Report) Unsigned() []string {
	var out []string
	for _, z := range r.Zones {
		if !z.Signed {
			out = append(out, z.Zone)
		}
	}
	return out
}

// Lagging describes, one line per server, what keeps the change from being
// confirmed: "ns2.example.org 192.0.2.2:53 (serial 7): lacks _25._tcp… TLSA 3 1 1 ab12…".
func (r *Report) Lagging() []string {
	var out []string
	for _, z := range r.Zones {
		var newest uint32
		first := true
		for _, s := range z.Servers {
			// RFC 1982 serial arithmetic: s is newer when s − newest,
			// read as a signed number, is positive.
			if s.Err == nil && !s.Skipped && (first || int32(s.Serial-newest) > 0) {
				newest, first = s.Serial, false
			}
		}
		for _, s := range z.Servers {
			who := s.Addr
			if s.NS != "" {
				who = strings.TrimSuffix(s.NS, ".") + " " + s.Addr
			}
			var what []string
			switch {
			case s.Skipped:
				continue
			case s.Err != nil:
				what = append(what, s.Err.Error())
			default:
				for _, rr := range s.Missing {
					what = append(what, "lacks "+RRText(rr))
				}
				for _, rr := range s.Extra {
					what = append(what, "still serves "+RRText(rr))
				}
				if s.Unsigned {
					what = append(what, "answers without RRSIG")
				}
				if len(what) == 0 && s.Serial != newest {
					what = append(what, fmt.Sprintf("behind serial %d", newest))
				}
			}
			if len(what) > 0 {
				out = append(out, fmt.Sprintf("%s (serial %d): %s", who, s.Serial, strings.Join(what, "; ")))
			}
		}
	}
	return out
}

// RRText is a record on one line, without its TTL (not part of a record's
// identity) or class: "_25._tcp.mail.example.org. TLSA 3 1 1 ab12…".
func RRText(rr dns.RR) string {
	h := rr.Header()
	rdata := strings.TrimPrefix(rr.String(), h.String())
	return strings.Join(strings.Fields(h.Name+" "+dns.TypeToString[h.Rrtype]+" "+rdata), " ")
}

// TimeoutError is returned by Wait when the deadline passes before every
// server serves the change.
type TimeoutError struct {
	Waited time.Duration
	Report *Report
}

func (e *TimeoutError) Error() string {
	lag := e.Report.Lagging()
	if len(lag) == 0 {
		return fmt.Sprintf("authoritative servers did not agree within %s", e.Waited.Round(time.Second))
	}
	return fmt.Sprintf("not served everywhere after %s: %s", e.Waited.Round(time.Second), strings.Join(lag, " | "))
}

// Wait polls until every authoritative server serves wants, with backoff
// from a fifth of a second to thirty, and returns the confirming report. A round
// that fails (a lost packet while finding the zone's servers) is retried
// like a lagging server. It gives up with a *TimeoutError after timeout, or
// when ctx ends. The timeout bounds the whole call, a round in progress and
// the finding of zones and servers included: servers that are still silent
// then are named in the error. A timeout of 0 or less makes one round.
func (c *Confirmer) Wait(ctx context.Context, wants []Want, timeout time.Duration) (*Report, error) {
	start := c.now()
	delay := 200 * time.Millisecond
	d := &discovery{}
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	giveUp := func(rep *Report, err error, waited time.Duration) (*Report, error) {
		if err != nil {
			return nil, fmt.Errorf("not confirmed after %s: %w", waited.Round(time.Second), err)
		}
		return rep, &TimeoutError{Waited: waited, Report: rep}
	}
	for {
		rep, err := c.round(wctx, wants, d)
		if err == nil && rep.Confirmed {
			return rep, nil
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		// The clock may be a test's: the deadline of wctx, on the real
		// clock, ends the wait as well.
		waited := c.now().Sub(start)
		if wctx.Err() != nil {
			waited = max(waited, timeout)
		}
		if waited >= timeout {
			return giveUp(rep, err, waited)
		}
		if err != nil {
			c.log().Warn("cannot check the authoritative servers; trying again", "err", err)
		} else {
			c.log().Info("waiting for authoritative servers", "lagging", strings.Join(rep.Lagging(), " | "))
		}
		if serr := c.sleep(wctx, min(delay, timeout-waited)); serr != nil {
			if ctx.Err() != nil {
				return rep, serr
			}
			return giveUp(rep, err, max(c.now().Sub(start), timeout))
		}
		delay = min(delay*3/2, 30*time.Second)
	}
}

// discovery remembers, across the rounds of one Wait, which zone each name
// is in and which servers serve each zone.
type discovery struct {
	zones   map[string]string
	servers map[string][]Server
}

// Check asks every authoritative server once, within the Confirmer's
// Timeout. It fails when the zones or their servers cannot be found; a
// server that does not answer in time is reported (as lagging), not an
// error.
func (c *Confirmer) Check(ctx context.Context, wants []Want) (*Report, error) {
	return c.round(ctx, wants, &discovery{})
}

// round is one Check, bounded by the Confirmer's Timeout.
func (c *Confirmer) round(ctx context.Context, wants []Want, d *discovery) (*Report, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.check(ctx, wants, d)
}

func (c *Confirmer) check(ctx context.Context, wants []Want, d *discovery) (*Report, error) {
	if d.zones == nil {
		d.zones, d.servers = map[string]string{}, map[string][]Server{}
	}
	byZone := map[string][]Want{}
	var zones []string
	for _, w := range wants {
		w.Owner = strings.ToLower(dns.Fqdn(w.Owner))
		zone, ok := d.zones[w.Owner]
		if !ok {
			var err error
			if zone, err = c.ZoneOf(ctx, w.Owner); err != nil {
				return nil, err
			}
			d.zones[w.Owner] = zone
		}
		if _, ok := byZone[zone]; !ok {
			zones = append(zones, zone)
		}
		byZone[zone] = append(byZone[zone], w)
	}
	rep := &Report{At: c.now(), Confirmed: true}
	for _, zone := range zones {
		servers, ok := d.servers[zone]
		if !ok {
			var err error
			if servers, err = c.Servers(ctx, zone); err != nil {
				return nil, err
			}
			d.servers[zone] = servers
		}
		zr := c.checkZone(ctx, zone, servers, byZone[zone])
		rep.Zones = append(rep.Zones, zr)
		rep.Confirmed = rep.Confirmed && zr.Confirmed
	}
	return rep, nil
}

func (c *Confirmer) checkZone(ctx context.Context, zone string, servers []Server, wants []Want) *ZoneReport {
	zr := &ZoneReport{Zone: zone, Owners: map[string]OwnerState{}}
	// Asked in parallel, so that a silent server costs one timeout per
	// round rather than one per server; merged in the servers' order, so
	// that the report does not depend on who answered first.
	results := make([]serverResult, len(servers))
	parallel(len(servers), func(i int) {
		s := servers[i]
		r := &results[i]
		r.st = ServerState{Addr: s.Addr, NS: s.NS, Err: s.Err}
		if s.Err == nil {
			c.checkServer(ctx, zone, wants, r)
		}
	})
	// Signed or not is a property of the zone: the first server that
	// answered the DNSKEY question authoritatively says.
	for _, r := range results {
		if r.keysAnswered {
			zr.Signed = r.signed
			break
		}
	}
	for _, r := range results {
		r.st.Unsigned = zr.Signed && r.rrsetWithoutSig
		zr.Servers = append(zr.Servers, r.st)
		zr.NegTTL = max(zr.NegTTL, r.negTTL)
		for owner, o := range r.owners {
			seen := zr.Owners[owner]
			seen.TTL = max(seen.TTL, o.TTL)
			seen.Absent = seen.Absent || o.Absent
			zr.Owners[owner] = seen
		}
	}
	zr.Confirmed = true
	serials := map[uint32]bool{}
	answered := 0
	for _, st := range zr.Servers {
		zr.Confirmed = zr.Confirmed && st.ok()
		if !st.Skipped && st.Err == nil {
			serials[st.Serial] = true
			answered++
		}
	}
	if answered == 0 || len(serials) != 1 {
		zr.Confirmed = false
	}
	if zr.Confirmed {
		for s := range serials {
			zr.Serial = s
		}
	}
	return zr
}

// serverResult is what one server answered, before it is merged into the
// zone's report.
type serverResult struct {
	st ServerState
	// keysAnswered is set when the server answered the DNSKEY question
	// authoritatively; signed when that answer had keys.
	keysAnswered, signed bool
	// rrsetWithoutSig is set when a wanted RRset came without RRSIGs.
	rrsetWithoutSig bool
	negTTL          uint32
	owners          map[string]OwnerState
}

// parallel calls f(0) … f(n-1), at most maxParallel at once, and returns
// when all have returned.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallel)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

func (c *Confirmer) checkServer(ctx context.Context, zone string, wants []Want, r *serverResult) {
	q := c.querier()
	st := &r.st
	r.owners = map[string]OwnerState{}
	// The SOA first: a server that does not answer it costs one timeout,
	// not one per question.
	m, err := q.Query(ctx, st.Addr, zone, dns.TypeSOA, false)
	if err != nil {
		if isUnreachable(err) {
			st.Skipped = true
			c.log().Warn("skipping an authoritative server this host cannot reach", "server", st.Addr, "ns", st.NS)
			return
		}
		st.Err = err
		return
	}
	if err := authoritative(m, st.Addr, zone); err != nil {
		st.Err = err
		return
	}
	soa, _ := rrsetOf(m.Answer, zone, dns.TypeSOA)
	if len(soa) == 0 {
		st.Err = fmt.Errorf("%s: no SOA for %s", st.Addr, zone)
		return
	}
	st.Serial = soa[0].(*dns.SOA).Serial
	r.negTTL = max(r.negTTL, negativeTTL(soa[0].(*dns.SOA)))
	if m, err := q.Query(ctx, st.Addr, zone, dns.TypeDNSKEY, false); err == nil && m.Rcode == dns.RcodeSuccess && m.Authoritative {
		keys, _ := rrsetOf(m.Answer, zone, dns.TypeDNSKEY)
		r.keysAnswered, r.signed = true, len(keys) > 0
	}
	for _, w := range wants {
		m, err := q.Query(ctx, st.Addr, w.Owner, w.Type, false)
		if err != nil {
			st.Err = err
			return
		}
		if err := authoritative(m, st.Addr, zone); err != nil {
			st.Err = err
			return
		}
		if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
			st.Err = fmt.Errorf("%s answers %s for %s", st.Addr, dns.RcodeToString[m.Rcode], w.Owner)
			return
		}
		rrs, sigs := rrsetOf(m.Answer, w.Owner, w.Type)
		seen := r.owners[w.Owner]
		if len(rrs) == 0 {
			seen.Absent = true
			// A resolver may cache the denial for the SOA's negative TTL
			// or, with aggressive NSEC caching (RFC 8198), for as long as
			// the NSEC/NSEC3 records that prove it: records it may keep
			// like any other RRset, hence the positive cap.
			for _, rr := range m.Ns {
				switch rr := rr.(type) {
				case *dns.SOA:
					r.negTTL = max(r.negTTL, negativeTTL(rr))
				case *dns.NSEC, *dns.NSEC3:
					r.negTTL = max(r.negTTL, CacheTTL(rr.Header().Ttl))
				}
			}
		}
		for _, rr := range rrs {
			seen.TTL = max(seen.TTL, CacheTTL(rr.Header().Ttl))
		}
		r.owners[w.Owner] = seen
		for _, want := range w.Present {
			if !containsRR(rrs, want) {
				st.Missing = append(st.Missing, want)
			}
		}
		for _, gone := range w.Absent {
			if containsRR(rrs, gone) {
				st.Extra = append(st.Extra, gone)
			}
		}
		if len(rrs) > 0 && len(sigs) == 0 {
			r.rrsetWithoutSig = true
		}
	}
}

// authoritative checks that the server answered for the zone as one of its
// authoritative servers: AA set, not a referral, not refused.
func authoritative(m *dns.Msg, addr, zone string) error {
	if m.Rcode == dns.RcodeRefused || m.Rcode == dns.RcodeNotAuth {
		return fmt.Errorf("%s is not authoritative for %s (%s)", addr, zone, dns.RcodeToString[m.Rcode])
	}
	if !m.Authoritative {
		return fmt.Errorf("%s is not authoritative for %s (no AA flag)", addr, zone)
	}
	return nil
}

func containsRR(set []dns.RR, rr dns.RR) bool {
	return slices.ContainsFunc(set, func(x dns.RR) bool { return dns.IsDuplicate(x, rr) })
}

// Server is one address of an authoritative server.
type Server struct {
	NS   string
	Addr string
	// Err is set for an NS name whose addresses could not be found; the
	// server then counts as not confirming.
	Err error
}

// Servers returns the addresses to ask for zone: the configured ones, or
// every address (A and AAAA) of every NS name, port 53.
func (c *Confirmer) Servers(ctx context.Context, zone string) ([]Server, error) {
	if len(c.Nameservers) > 0 {
		out := make([]Server, len(c.Nameservers))
		for i, ns := range c.Nameservers {
			out[i] = Server{Addr: hostPort(ns)}
		}
		return out, nil
	}
	res, err := c.resolver()
	if err != nil {
		return nil, err
	}
	q := c.querier()
	m, err := q.Query(ctx, res, zone, dns.TypeNS, true)
	if err != nil {
		return nil, fmt.Errorf("find name servers of %s: %w", zone, err)
	}
	nsrrs, _ := rrsetOf(m.Answer, zone, dns.TypeNS)
	if len(nsrrs) == 0 {
		return nil, fmt.Errorf("find name servers of %s: %s has no NS records for it (%s)", zone, res, dns.RcodeToString[m.Rcode])
	}
	var out []Server
	for _, rr := range nsrrs {
		name := rr.(*dns.NS).Ns
		found := 0
		var lookupErr error
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			am, err := q.Query(ctx, res, name, t, true)
			if err == nil && am.Rcode != dns.RcodeSuccess {
				err = fmt.Errorf("%s answers %s for %s %s", res, dns.RcodeToString[am.Rcode], name, dns.TypeToString[t])
			}
			if err != nil {
				lookupErr = err
				continue
			}
			addrs, _ := rrsetOf(am.Answer, name, t)
			for _, a := range addrs {
				var ip net.IP
				switch a := a.(type) {
				case *dns.A:
					ip = a.A
				case *dns.AAAA:
					ip = a.AAAA
				}
				out = append(out, Server{NS: name, Addr: net.JoinHostPort(ip.String(), "53")})
				found++
			}
		}
		if found == 0 {
			if lookupErr == nil {
				lookupErr = errors.New("no addresses")
			}
			// A name server nobody can find cannot confirm anything; keep
			// it in the report rather than silently dropping it.
			out = append(out, Server{NS: name, Addr: strings.TrimSuffix(name, ".") + ":53",
				Err: fmt.Errorf("name server %s: %w", name, lookupErr)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NS+out[i].Addr < out[j].NS+out[j].Addr })
	return out, nil
}

// ZoneOf finds the zone owner belongs to from the SOA that answers for it:
// in the answer at the apex, in the authority section below it. Configured
// name servers are asked in parallel; the first to find the zone wins.
func (c *Confirmer) ZoneOf(ctx context.Context, owner string) (string, error) {
	owner = dns.Fqdn(owner)
	var (
		servers   []string
		recursion bool
	)
	if len(c.Nameservers) > 0 {
		for _, ns := range c.Nameservers {
			servers = append(servers, hostPort(ns))
		}
	} else {
		res, err := c.resolver()
		if err != nil {
			return "", err
		}
		servers, recursion = []string{res}, true
	}
	// The others are no longer needed once one server has found the zone.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	zones := make([]string, len(servers))
	errs := make([]error, len(servers))
	parallel(len(servers), func(i int) {
		zones[i], errs[i] = c.zoneFrom(ctx, servers[i], owner, recursion)
		if errs[i] == nil {
			cancel()
		}
	})
	for i, z := range zones {
		if errs[i] == nil {
			return z, nil
		}
	}
	return "", fmt.Errorf("find the zone of %s: %w", owner, joinErrors(errs))
}

// zoneFrom walks up from owner asking server for an SOA. A server that does
// not answer at all is not asked about the parent names: it would not
// answer those either.
func (c *Confirmer) zoneFrom(ctx context.Context, server, owner string, recursion bool) (string, error) {
	q := c.querier()
	var lastErr error
	for name := owner; ; {
		m, err := q.Query(ctx, server, name, dns.TypeSOA, recursion)
		if err != nil {
			return "", err
		}
		if soa := soaOf(m); soa != nil && dns.IsSubDomain(soa.Hdr.Name, owner) &&
			(m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError) {
			return strings.ToLower(soa.Hdr.Name), nil
		}
		lastErr = fmt.Errorf("%s: no SOA for %s (%s)", server, name, dns.RcodeToString[m.Rcode])
		i, end := dns.NextLabel(name, 0)
		if end || name == "." {
			return "", lastErr
		}
		name = name[i:]
	}
}

// joinedErrors is several errors on one line, for messages that must stay
// on one line (errors.Join puts each on its own).
type joinedErrors []error

func (e joinedErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e joinedErrors) Unwrap() []error { return e }

// joinErrors joins the non-nil errors; one stays itself.
func joinErrors(errs []error) error {
	var out joinedErrors
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}

// Skipped lists the servers this host could not reach at all (typically
// IPv6 addresses on an IPv4-only host): they did not take part in the
// confirmation.
func (r *Report) Skipped() []string {
	var out []string
	for _, z := range r.Zones {
		for _, s := range z.Servers {
			if s.Skipped {
				out = append(out, strings.TrimSpace(strings.TrimSuffix(s.NS, ".")+" "+s.Addr))
			}
		}
	}
	return out
}

func (c *Confirmer) resolver() (string, error) {
	if c.Resolver != "" {
		return hostPort(c.Resolver), nil
	}
	return SystemResolver()
}

func (c *Confirmer) querier() *Querier {
	if c.Querier != nil {
		return c.Querier
	}
	return &Querier{}
}

func (c *Confirmer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Confirmer) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Confirmer) log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}
