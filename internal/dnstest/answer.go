package dnstest

import (
	"github.com/miekg/dns"
)

// result is a query's answer before it becomes a message.
type result struct {
	rcode  int
	aa     bool
	answer []dns.RR
	ns     []dns.RR
	extra  []dns.RR
}

// resolve answers one question from v as an authoritative server does.
// Records are copies, free for the caller to change and pack.
func (v *version) resolve(qname string, qtype uint16, do bool) result {
	origin := v.data.origin
	qname = dns.CanonicalName(qname)
	do = do && v.sigs != nil // DNSSEC records only from a signed zone
	if !dns.IsSubDomain(origin, qname) {
		return result{rcode: dns.RcodeRefused}
	}
	if cut := v.cutFor(qname); cut != "" && (qname != cut || qtype != dns.TypeDS) {
		return v.referral(cut, do)
	}

	r := result{rcode: dns.RcodeSuccess, aa: true}
	if qtype == dns.TypeANY {
		for k := range v.sets {
			if k.name == qname {
				r.answer = append(r.answer, v.rrset(k, do)...)
			}
		}
	} else {
		r.answer = v.rrset(rrKey{qname, qtype}, do)
	}
	if len(r.answer) == 0 && qtype != dns.TypeCNAME {
		// A resolver follows the CNAME; its target is not added here.
		r.answer = v.rrset(rrKey{qname, dns.TypeCNAME}, do)
	}
	if len(r.answer) > 0 {
		if qtype == dns.TypeNS && qname == origin {
			r.extra = v.glue(qname)
		}
		return r
	}

	r.ns = v.negativeSOA(do)
	if v.exists[qname] {
		// NODATA. An empty non-terminal has no NSEC of its own: the one
		// before it, whose next name is below it, proves it has no data.
		if do {
			r.ns = append(r.ns, v.rrset(rrKey{v.covering(qname), dns.TypeNSEC}, true)...)
		}
		return r
	}
	r.rcode = dns.RcodeNameError
	if do {
		cover := v.covering(qname)
		r.ns = append(r.ns, v.rrset(rrKey{cover, dns.TypeNSEC}, true)...)
		// No wildcard at the closest encloser could have answered either.
		ce := parent(qname)
		for !v.exists[ce] {
			ce = parent(ce)
		}
		if wc := v.covering("*." + ce); wc != cover {
			r.ns = append(r.ns, v.rrset(rrKey{wc, dns.TypeNSEC}, true)...)
		}
	}
	return r
}

// referral points at the servers of the child zone at cut. It is not
// authoritative; when signed it carries the DS, or the NSEC proving there
// is none.
func (v *version) referral(cut string, do bool) result {
	r := result{rcode: dns.RcodeSuccess, ns: v.rrset(rrKey{cut, dns.TypeNS}, false)}
	if do {
		if ds := v.rrset(rrKey{cut, dns.TypeDS}, true); len(ds) > 0 {
			r.ns = append(r.ns, ds...)
		} else {
			r.ns = append(r.ns, v.rrset(rrKey{cut, dns.TypeNSEC}, true)...)
		}
	}
	r.extra = v.glue(cut)
	return r
}

// glue returns the addresses in this zone of the name servers at name.
func (v *version) glue(name string) []dns.RR {
	var out []dns.RR
	for _, rr := range v.sets[rrKey{name, dns.TypeNS}] {
		target := dns.CanonicalName(rr.(*dns.NS).Ns)
		if !dns.IsSubDomain(v.data.origin, target) {
			continue
		}
		out = append(out, copyRRs(v.sets[rrKey{target, dns.TypeA}])...)
		out = append(out, copyRRs(v.sets[rrKey{target, dns.TypeAAAA}])...)
	}
	return out
}

// rrset returns copies of the RRset k and, when do is set, its RRSIGs.
func (v *version) rrset(k rrKey, do bool) []dns.RR {
	out := copyRRs(v.sets[k])
	if do && len(out) > 0 {
		out = append(out, copyRRs(v.sigs[k])...)
	}
	return out
}

// negativeSOA is the SOA for the authority section of a negative answer,
// with the TTL a resolver may cache the denial for (RFC 2308 §3): the
// smaller of the SOA's TTL and its MINIMUM.
func (v *version) negativeSOA(do bool) []dns.RR {
	rrs := v.rrset(rrKey{v.data.origin, dns.TypeSOA}, do)
	ttl := negTTL(rrs[0].(*dns.SOA))
	for _, rr := range rrs {
		rr.Header().Ttl = ttl
	}
	return rrs
}

func negTTL(soa *dns.SOA) uint32 { return min(soa.Hdr.Ttl, soa.Minttl) }

// soa returns the version's SOA record (shared, read-only).
func (v *version) soa() *dns.SOA { return v.data.soa() }
