package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/services"
)

// validated is one server's TLSA RRset after DNSSEC validation.
type validated struct {
	records []dane.TLSA
	ksk     uint16 // key tag of the KSK that matched the DS
	zsk     uint16 // key tag of the key that signed the TLSA RRset
}

// validateTLSA fetches the DNSKEY RRset and the TLSA RRset with their
// RRSIGs from one authoritative server, and validates them as a resolver
// would, from the DS down: a KSK that hashes to the DS signs the DNSKEY
// RRset, and a key of that set signs the TLSA RRset. It trusts nothing
// daneroll computed.
func validateTLSA(ctx context.Context, addr, owner string, ds *dns.DS, now time.Time) (*validated, error) {
	keys, keySigs, err := fetchSigned(ctx, addr, zone, dns.TypeDNSKEY)
	if err != nil {
		return nil, fmt.Errorf("DNSKEY: %w", err)
	}
	var dnskeys []*dns.DNSKEY
	for _, rr := range keys {
		if k, ok := rr.(*dns.DNSKEY); ok {
			dnskeys = append(dnskeys, k)
		}
	}
	var ksk *dns.DNSKEY
	for _, k := range dnskeys {
		if d := k.ToDS(ds.DigestType); d != nil && d.KeyTag == ds.KeyTag && d.Algorithm == ds.Algorithm && strings.EqualFold(d.Digest, ds.Digest) {
			ksk = k
		}
	}
	if ksk == nil {
		return nil, errors.New("no DNSKEY matches the DS")
	}
	if err := verifyBy(keySigs, []*dns.DNSKEY{ksk}, keys, now); err != nil {
		return nil, fmt.Errorf("DNSKEY RRset: %w", err)
	}
	rrs, sigs, err := fetchSigned(ctx, addr, owner, dns.TypeTLSA)
	if err != nil {
		return nil, fmt.Errorf("TLSA: %w", err)
	}
	if len(rrs) == 0 {
		return nil, errors.New("no TLSA records")
	}
	if err := verifyBy(sigs, dnskeys, rrs, now); err != nil {
		return nil, fmt.Errorf("TLSA RRset: %w", err)
	}
	v := &validated{ksk: ksk.KeyTag(), zsk: sigs[0].KeyTag}
	for _, s := range sigs {
		if s.Verify(keyByTag(dnskeys, s.KeyTag), rrs) == nil {
			v.zsk = s.KeyTag
		}
	}
	for _, rr := range rrs {
		t, err := dane.FromRR(rr.(*dns.TLSA))
		if err != nil {
			return nil, err
		}
		v.records = append(v.records, t)
	}
	return v, nil
}

// fetchSigned asks addr, without recursion and with the DO bit, for an
// RRset and returns it with the RRSIGs that cover it.
func fetchSigned(ctx context.Context, addr, name string, qtype uint16) ([]dns.RR, []*dns.RRSIG, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	m.SetEdns0(1232, true)
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, addr)
	}
	if err != nil {
		return nil, nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, nil, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	if !r.Authoritative {
		return nil, nil, errors.New("answer without authority")
	}
	var rrs []dns.RR
	var sigs []*dns.RRSIG
	for _, rr := range r.Answer {
		if !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		switch {
		case rr.Header().Rrtype == qtype:
			rrs = append(rrs, rr)
		case rr.Header().Rrtype == dns.TypeRRSIG && rr.(*dns.RRSIG).TypeCovered == qtype:
			sigs = append(sigs, rr.(*dns.RRSIG))
		}
	}
	return rrs, sigs, nil
}

// verifyBy succeeds when one of sigs, current at now, is by one of keys
// and verifies rrs.
func verifyBy(sigs []*dns.RRSIG, keys []*dns.DNSKEY, rrs []dns.RR, now time.Time) error {
	if len(sigs) == 0 {
		return errors.New("no RRSIG")
	}
	var errs []error
	for _, s := range sigs {
		k := keyByTag(keys, s.KeyTag)
		switch {
		case k == nil:
			errs = append(errs, fmt.Errorf("RRSIG by unknown key %d", s.KeyTag))
		case !s.ValidityPeriod(now):
			errs = append(errs, fmt.Errorf("RRSIG by key %d outside its validity period", s.KeyTag))
		default:
			err := s.Verify(k, rrs)
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("RRSIG by key %d: %w", s.KeyTag, err))
		}
	}
	return errors.Join(errs...)
}

func keyByTag(keys []*dns.DNSKEY, tag uint16) *dns.DNSKEY {
	for _, k := range keys {
		if k.KeyTag() == tag {
			return k
		}
	}
	return nil
}

// finalCheck is the demo's own DANE client, which does not use daneroll:
// it validates each server's TLSA RRset from the DS down, makes a STARTTLS
// handshake and matches the served chain against every server's records
// and against what the validating resolver answers. It reports whether
// everything passed.
func (d *demo) finalCheck(ctx context.Context) bool {
	w, con := d.w, d.con
	ds := w.dns.DS()
	pass := true
	fail := func(format string, args ...any) {
		pass = false
		con.say("FAIL "+format, args...)
	}
	con.say("trust anchor: %s", rrLine(ds))
	ep, err := services.ParseEndpoint(w.endpoint())
	if err != nil {
		fail("%v", err)
		return false
	}
	res, err := services.Probe(ctx, ep, services.ProbeOptions{Timeout: 10 * time.Second})
	if err != nil {
		fail("STARTTLS: %v", err)
		return false
	}
	leaf := res.Chain[0]
	con.say("STARTTLS with %s: %s, leaf for %s, key 3 1 1 %s",
		ep.DialAddr(), tls.VersionName(res.Version), strings.Join(leaf.DNSNames, ","), res.LeafSPKI())
	now := time.Now()
	var first []dane.TLSA
	for i, addr := range w.dns.Addrs() {
		v, err := validateTLSA(ctx, addr, w.owner(), ds, now)
		if err != nil {
			fail("ns%d %s: %v", i+1, addr, err)
			continue
		}
		con.say("ns%d %s: DNSKEY RRset signed by KSK %d (matches the DS), TLSA RRset signed by key %d: secure",
			i+1, addr, v.ksk, v.zsk)
		for _, t := range v.records {
			con.say("      %s IN TLSA %s", w.owner(), t)
		}
		if i == 0 {
			first = v.records
		} else if !sameRecords(first, v.records) {
			fail("ns%d serves a different TLSA RRset from ns1", i+1)
		}
		r, err := dane.Verify(v.records, res.Chain, dane.VerifyOptions{SMTP: true, Names: []string{mailHost}, Now: now})
		if err != nil {
			fail("ns%d: the served chain does not match: %v", i+1, err)
			continue
		}
		con.say("      the served leaf matches %s", r.Matched[0])
	}

	// What a DANE client behind a validating resolver sees: the resolver
	// may still hold an older answer, which must match the served key too.
	addr := w.resolver.Addr()
	records, err := resolvedTLSA(ctx, addr, w.owner())
	if err != nil {
		fail("resolver %s: %v", addr, err)
		return pass
	}
	r, err := dane.Verify(records, res.Chain, dane.VerifyOptions{SMTP: true, Names: []string{mailHost}, Now: now})
	if err != nil {
		fail("resolver %s: the served chain does not match its answer: %v", addr, err)
		return pass
	}
	con.say("resolver %s: %d TLSA record(s) with the AD bit; the served leaf matches %s", addr, len(records), r.Matched[0])
	return pass
}

// resolvedTLSA asks a validating resolver for the TLSA records at owner, as
// a DANE client does (RFC 7672 §2.2): only an answer with the AD bit counts.
func resolvedTLSA(ctx context.Context, addr, owner string) ([]dane.TLSA, error) {
	m := new(dns.Msg)
	m.SetQuestion(owner, dns.TypeTLSA)
	m.SetEdns0(1232, true)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	switch {
	case err != nil:
		return nil, err
	case r.Rcode != dns.RcodeSuccess:
		return nil, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	case !r.AuthenticatedData:
		return nil, errors.New("answer without the AD bit: not validated")
	}
	var out []dane.TLSA
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TLSA); ok && strings.EqualFold(t.Hdr.Name, owner) {
			rec, err := dane.FromRR(t)
			if err != nil {
				return nil, err
			}
			out = append(out, rec)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no TLSA records")
	}
	return out, nil
}

func sameRecords(a, b []dane.TLSA) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			if x.Equal(y) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// historyCheck goes over everything every server has answered for the
// TLSA name since the demo began and everything the service has served: at
// no moment may the service have served a key while some answer a resolver
// could still hold lacked a record for it. It returns how many
// certificates and distinct keys were served, and the gaps found.
func (d *demo) historyCheck() (certs, keys int, gaps []string) {
	w := d.w
	now := time.Now()
	timeline := w.svc.Timeline()
	history := w.dns.History(w.owner(), dns.TypeTLSA)
	seen := map[string]bool{}
	for i, ch := range timeline {
		from, to := ch.At, now
		if i+1 < len(timeline) {
			to = timeline[i+1].At
		}
		certs++
		if !seen[ch.SPKI] {
			seen[ch.SPKI] = true
			keys++
		}
		for _, h := range history {
			end, until := cacheable(h, now)
			if !h.From.Before(to) || !from.Before(until) {
				continue // no resolver can hold this answer while the key was served
			}
			if !historyHas(h, ch.SPKI) {
				gaps = append(gaps, fmt.Sprintf("key %s served from %s to %s, but ns%d gave %s from %s to %s (cacheable until %s)",
					short(ch.SPKI), w.since(from), w.since(to), h.Server+1, describeServed(h), w.since(h.From), w.since(end), w.since(until)))
			}
		}
	}
	return certs, keys, gaps
}
