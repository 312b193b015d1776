// Package rfc2136 publishes records with RFC 2136 dynamic updates signed
// with TSIG (RFC 8945), as BIND, Knot and PowerDNS take them.
//
// Every change is one record: an add is an RFC 2136 "add to an RRset", a
// delete "delete an RR from an RRset" of exactly that record, so records
// others keep at the same name are never touched and nothing is replaced.
// Both are idempotent on the server: adding a record that exists and
// deleting one that does not change nothing.
package rfc2136

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Config says where updates go and how they are signed.
type Config struct {
	// Server is "host:port" of the primary that takes updates; port 53
	// when left out.
	Server string
	// TSIGName is the key's name, TSIGAlgorithm its miekg/dns name (e.g.
	// dns.HmacSHA256, the default; "hmac-sha256" works too) and TSIGSecret
	// the base64 secret, which never appears in logs or errors.
	TSIGName      string
	TSIGAlgorithm string
	TSIGSecret    string
	// Timeout bounds each exchange with the server; default 10s.
	Timeout time.Duration
	// Now is the clock for the TSIG signing time, which the server checks
	// against its own within 5 minutes; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Publisher implements dane.Publisher with dynamic updates.
type Publisher struct {
	server  string
	keyName string
	alg     string
	secret  string
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu    sync.Mutex        // guards zones
	zones map[string]string // owner name -> apex of the zone holding it
}

// New checks cfg and returns a publisher. It does not contact the server.
func New(cfg Config) (*Publisher, error) {
	p := &Publisher{
		server:  cfg.Server,
		keyName: dns.CanonicalName(cfg.TSIGName),
		alg:     dns.CanonicalName(cfg.TSIGAlgorithm),
		secret:  cfg.TSIGSecret,
		timeout: cfg.Timeout,
		now:     cfg.Now,
		log:     cfg.Logger,
		zones:   make(map[string]string),
	}
	if p.server == "" {
		return nil, errors.New("rfc2136: no server")
	}
	if _, _, err := net.SplitHostPort(p.server); err != nil {
		p.server = net.JoinHostPort(strings.Trim(p.server, "[]"), "53")
	}
	if cfg.TSIGName == "" {
		return nil, errors.New("rfc2136: no TSIG key name")
	}
	if cfg.TSIGAlgorithm == "" {
		p.alg = dns.HmacSHA256
	}
	switch p.alg {
	case dns.HmacSHA1, dns.HmacSHA224, dns.HmacSHA256, dns.HmacSHA384, dns.HmacSHA512:
	default:
		return nil, fmt.Errorf("rfc2136: unknown TSIG algorithm %q (want hmac-sha256, hmac-sha512 or hmac-sha1)", cfg.TSIGAlgorithm)
	}
	if raw, err := base64.StdEncoding.DecodeString(p.secret); err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("rfc2136: TSIG key %s: the secret is not base64 (as in the secret \"…\"; line of a BIND key file)", p.keyName)
	}
	if p.timeout <= 0 {
		p.timeout = 10 * time.Second
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// String names the publisher in messages.
func (p *Publisher) String() string { return "rfc2136 " + p.server }

// Records returns the records of type rrtype at owner as the server has
// them, asked over TCP without recursion.
func (p *Publisher) Records(ctx context.Context, owner string, rrtype uint16) ([]dns.RR, error) {
	owner = dns.CanonicalName(owner)
	r, err := p.query(ctx, owner, rrtype)
	if err != nil {
		return nil, fmt.Errorf("rfc2136: %w", err)
	}
	switch {
	case r.Rcode == dns.RcodeNameError && r.Authoritative:
		return nil, nil
	case r.Rcode != dns.RcodeSuccess:
		return nil, fmt.Errorf("rfc2136: %s", p.queryRefusal(r.Rcode, owner))
	case !r.Authoritative:
		return nil, fmt.Errorf("rfc2136: %s", p.notAuthoritative(r, owner))
	}
	var out []dns.RR
	for _, rr := range r.Answer {
		if h := rr.Header(); h.Rrtype == rrtype && strings.EqualFold(h.Name, owner) {
			out = append(out, rr)
		}
	}
	return out, nil
}

// Add adds rr to its RRset; an identical record already there is left as
// it is (the server treats the add as a no-op).
func (p *Publisher) Add(ctx context.Context, rr dns.RR) error {
	return p.change(ctx, "add", rr)
}

// Delete removes exactly rr; when it is not there nothing changes.
func (p *Publisher) Delete(ctx context.Context, rr dns.RR) error {
	return p.change(ctx, "delete", rr)
}

func (p *Publisher) change(ctx context.Context, op string, rr dns.RR) error {
	if rr == nil {
		return fmt.Errorf("rfc2136: %s: no record", op)
	}
	rr = dns.Copy(rr)
	h := rr.Header()
	h.Name = dns.CanonicalName(h.Name)
	h.Class = dns.ClassINET
	switch h.Rrtype {
	case dns.TypeSOA, dns.TypeANY, dns.TypeOPT, dns.TypeTSIG, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3:
		return fmt.Errorf("rfc2136: %s records are not changed by this publisher", dns.TypeToString[h.Rrtype])
	}
	zone, err := p.zoneOf(ctx, h.Name)
	if err != nil {
		return fmt.Errorf("rfc2136: %w", err)
	}

	m := new(dns.Msg)
	m.SetUpdate(zone)
	if op == "add" {
		m.Insert([]dns.RR{rr})
	} else {
		m.Remove([]dns.RR{rr}) // class NONE, TTL 0: exactly this record
	}
	m.SetTsig(p.keyName, p.alg, 300, p.now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: p.timeout, TsigSecret: map[string]string{p.keyName: p.secret}}
	r, err := p.exchange(ctx, c, m)
	if r == nil {
		return fmt.Errorf("rfc2136: %w", err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("rfc2136: %s", p.updateRefusal(r, h.Name, h.Rrtype, zone))
	}
	if err != nil {
		return fmt.Errorf("rfc2136: the answer from %s fails the TSIG check (%v): it may not come from the server that has key %s", p.server, err, p.keyName)
	}
	if r.IsTsig() == nil {
		return fmt.Errorf("rfc2136: the answer from %s is not signed with TSIG key %s: it may not come from the server that has the key", p.server, p.keyName)
	}
	p.log.Debug("rfc2136: updated", "server", p.server, "zone", zone, "op", op, "owner", h.Name, "type", dns.TypeToString[h.Rrtype])
	return nil
}

// zoneOf finds the apex of the zone the server holds owner in: it asks for
// the SOA of owner and then of each parent name until an authoritative
// answer names the zone (a negative answer carries its SOA).
func (p *Publisher) zoneOf(ctx context.Context, owner string) (string, error) {
	p.mu.Lock()
	zone, ok := p.zones[owner]
	p.mu.Unlock()
	if ok {
		return zone, nil
	}
	for name := owner; ; name = parentName(name) {
		r, err := p.query(ctx, name, dns.TypeSOA)
		if err != nil {
			return "", fmt.Errorf("find the zone of %s: %w", owner, err)
		}
		if r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError {
			if r.Authoritative {
				if name == owner && hasType(r.Answer, dns.TypeCNAME) {
					return "", fmt.Errorf("%s is a CNAME: no other records can be added at that name", owner)
				}
				if zone := apex(r, name); zone != "" && dns.IsSubDomain(zone, owner) {
					p.mu.Lock()
					p.zones[owner] = zone
					p.mu.Unlock()
					return zone, nil
				}
			} else if hasType(r.Ns, dns.TypeNS) {
				return "", fmt.Errorf("%s: %s", owner, p.notAuthoritative(r, owner))
			}
		}
		if name == "." {
			return "", fmt.Errorf("no zone on %s holds %s: it answered no SOA up to the root (is the zone configured there, and is %s its primary?)",
				p.server, owner, p.server)
		}
	}
}

// apex returns the zone apex an authoritative answer to a SOA question for
// name shows: the SOA's owner in the answer or the authority section.
func apex(r *dns.Msg, name string) string {
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, name) {
			return dns.CanonicalName(soa.Hdr.Name)
		}
	}
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return dns.CanonicalName(soa.Hdr.Name)
		}
	}
	return ""
}

// query asks the server one question over TCP, without recursion.
func (p *Publisher) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	r, err := p.exchange(ctx, &dns.Client{Net: "tcp", Timeout: p.timeout}, m)
	if r == nil {
		return nil, err
	}
	return r, nil
}

// exchange sends m. A nil message comes with an error that says the
// server could not be reached; a message may come with an error from the
// check of its TSIG.
func (p *Publisher) exchange(ctx context.Context, c *dns.Client, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, p.server)
	if r != nil {
		return r, err
	}
	var reason string
	var ne net.Error
	switch {
	case err == nil:
		reason = "no answer"
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "connection refused (is the name server running and listening there on TCP?)"
	case errors.Is(err, context.Canceled):
		reason = "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		reason = fmt.Sprintf("no answer within %v (is a firewall dropping TCP to it?)", p.timeout)
	default:
		reason = err.Error()
	}
	return nil, &reachError{server: p.server, reason: reason, err: err}
}

// reachError is a failure to exchange messages with the server at all.
type reachError struct {
	server, reason string
	err            error
}

func (e *reachError) Error() string { return "cannot reach " + e.server + ": " + e.reason }
func (e *reachError) Unwrap() error { return e.err }

// updateRefusal explains a failed update in one line.
func (p *Publisher) updateRefusal(r *dns.Msg, owner string, rrtype uint16, zone string) string {
	rcode := dns.RcodeToString[r.Rcode]
	switch r.Rcode {
	case dns.RcodeRefused:
		return fmt.Sprintf("%s: the update-policy of %s does not allow key %s to change %s %s (check update-policy/allow-update, and that it is the primary of %s)",
			rcode, p.server, p.keyName, owner, dns.TypeToString[rrtype], zone)
	case dns.RcodeNotAuth:
		if t := r.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
			terr := dns.RcodeToString[int(t.Error)]
			if t.Error == dns.RcodeBadTime {
				return fmt.Sprintf("TSIG time rejected by %s (%s, %s): this host's clock and the server's differ by more than 5 minutes", p.server, rcode, terr)
			}
			return fmt.Sprintf("TSIG key %s rejected by %s (%s, %s): check tsig_name/tsig_algorithm/tsig_secret", p.keyName, p.server, rcode, terr)
		}
		return fmt.Sprintf("%s: %s is not authoritative for zone %s (is it the zone's primary?)", rcode, p.server, zone)
	case dns.RcodeNotZone:
		return fmt.Sprintf("%s: %s is not in zone %s", rcode, owner, zone)
	case dns.RcodeServerFailure:
		return fmt.Sprintf("%s: %s failed to apply the update to %s (see its log: a journal it cannot write, a zone that failed to load)", rcode, p.server, owner)
	case dns.RcodeNotImplemented:
		return fmt.Sprintf("%s: %s does not take dynamic updates", rcode, p.server)
	case dns.RcodeFormatError:
		return fmt.Sprintf("%s: %s could not parse the update of %s", rcode, p.server, owner)
	}
	return fmt.Sprintf("%s answered %s to the update of %s", p.server, rcode, owner)
}

// queryRefusal explains a failed query in one line.
func (p *Publisher) queryRefusal(rc int, owner string) string {
	rcode := dns.RcodeToString[rc]
	if rc == dns.RcodeRefused {
		return fmt.Sprintf("%s: %s does not answer for %s (no zone there holds it, or allow-query denies this host)", rcode, p.server, owner)
	}
	return fmt.Sprintf("%s answered %s for %s", p.server, rcode, owner)
}

// notAuthoritative explains an answer without authority: a referral to the
// servers of a child zone, or a server that is a resolver.
func (p *Publisher) notAuthoritative(r *dns.Msg, owner string) string {
	for _, rr := range r.Ns {
		if ns, ok := rr.(*dns.NS); ok {
			return fmt.Sprintf("%s is delegated from %s to %s: use the primary of zone %s", owner, p.server, ns.Ns, ns.Hdr.Name)
		}
	}
	return fmt.Sprintf("%s is not authoritative for %s (a resolver? use the zone's primary)", p.server, owner)
}

func hasType(rrs []dns.RR, t uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return true
		}
	}
	return false
}

// parentName returns the name one label up, "." above a top-level name.
func parentName(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[i:]
}
