package dnstest

import (
	"github.com/miekg/dns"
)

// update applies an RFC 2136 UPDATE request and returns the rcode. key is
// the canonical name of the TSIG key that signed it (verified), or "".
func (c *Cluster) update(s *server, r *dns.Msg, key string) int {
	zone := r.Question[0]
	if zone.Qtype != dns.TypeSOA {
		return dns.RcodeFormatError
	}
	if zone.Qclass != dns.ClassINET || dns.CanonicalName(zone.Name) != c.origin {
		return dns.RcodeNotAuth
	}
	if s.index != 0 {
		// BIND on a secondary without allow-update-forwarding.
		return dns.RcodeRefused
	}
	if len(c.tsig) > 0 && key == "" {
		return dns.RcodeRefused
	}

	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	z := c.latest().data.clone()
	if rc := checkPrereqs(z, r.Answer); rc != dns.RcodeSuccess {
		return rc
	}
	if rc := c.prescan(r.Ns, key); rc != dns.RcodeSuccess {
		return rc
	}
	for _, rr := range r.Ns {
		apply(z, rr)
	}
	if !z.changed {
		return dns.RcodeSuccess
	}
	v, err := c.commit(z)
	if err != nil {
		c.log.Error("dnstest: update", "zone", c.origin, "err", err)
		return dns.RcodeServerFailure
	}
	c.log.Debug("dnstest: updated", "zone", c.origin, "serial", v.serial, "key", key)
	return dns.RcodeSuccess
}

// checkPrereqs checks the prerequisite section (RFC 2136 §3.2) against z.
func checkPrereqs(z *Zone, prereqs []dns.RR) int {
	want := make(map[rrKey][]dns.RR)
	for _, rr := range prereqs {
		h := rr.Header()
		name := dns.CanonicalName(h.Name)
		k := rrKey{name, h.Rrtype}
		if h.Ttl != 0 {
			return dns.RcodeFormatError
		}
		if !dns.IsSubDomain(z.origin, name) {
			return dns.RcodeNotZone
		}
		switch h.Class {
		case dns.ClassANY:
			if h.Rdlength != 0 {
				return dns.RcodeFormatError
			}
			if h.Rrtype == dns.TypeANY && len(z.typesAt(name)) == 0 {
				return dns.RcodeNameError
			}
			if h.Rrtype != dns.TypeANY && len(z.sets[k]) == 0 {
				return dns.RcodeNXRrset
			}
		case dns.ClassNONE:
			if h.Rdlength != 0 {
				return dns.RcodeFormatError
			}
			if h.Rrtype == dns.TypeANY && len(z.typesAt(name)) > 0 {
				return dns.RcodeYXDomain
			}
			if h.Rrtype != dns.TypeANY && len(z.sets[k]) > 0 {
				return dns.RcodeYXRrset
			}
		case dns.ClassINET:
			if !containsRR(want[k], rr) {
				want[k] = append(want[k], rr)
			}
		default:
			return dns.RcodeFormatError
		}
	}
	for k, rrs := range want {
		if !sameRRset(z.sets[k], rrs) {
			return dns.RcodeNXRrset
		}
	}
	return dns.RcodeSuccess
}

// prescan checks the update section before anything changes (RFC 2136
// §3.4.1), and the update policy.
func (c *Cluster) prescan(updates []dns.RR, key string) int {
	for _, rr := range updates {
		h := rr.Header()
		name := dns.CanonicalName(h.Name)
		if !dns.IsSubDomain(c.origin, name) {
			return dns.RcodeNotZone
		}
		switch h.Class {
		case dns.ClassINET:
			if metaType(h.Rrtype) {
				return dns.RcodeFormatError
			}
		case dns.ClassANY:
			if h.Ttl != 0 || h.Rdlength != 0 || (metaType(h.Rrtype) && h.Rrtype != dns.TypeANY) {
				return dns.RcodeFormatError
			}
		case dns.ClassNONE:
			if h.Ttl != 0 || metaType(h.Rrtype) {
				return dns.RcodeFormatError
			}
		default:
			return dns.RcodeFormatError
		}
		if generatedType(h.Rrtype) {
			// BIND: explicit DNSSEC record updates are not supported in
			// secure zones.
			return dns.RcodeRefused
		}
		if c.policy != nil && !c.policy(key, name, h.Rrtype) {
			return dns.RcodeRefused
		}
	}
	return dns.RcodeSuccess
}

// apply makes one checked update (RFC 2136 §3.4.2).
func apply(z *Zone, rr dns.RR) {
	h := rr.Header()
	name := dns.CanonicalName(h.Name)
	switch h.Class {
	case dns.ClassINET:
		if h.Rrtype == dns.TypeSOA {
			// A SOA replaces the zone's only when its serial is later.
			if soa, ok := rr.(*dns.SOA); ok && name == z.origin && int32(soa.Serial-z.soa().Serial) > 0 {
				z.add(rr)
			}
			return
		}
		z.add(rr) // a CNAME conflict is ignored, as the RFC says
	case dns.ClassANY:
		if h.Rrtype == dns.TypeANY {
			z.RemoveName(name)
		} else {
			z.RemoveRRset(name, h.Rrtype)
		}
	case dns.ClassNONE:
		z.Remove(rr)
	}
}

// metaType reports whether t is a query or meta type that never names
// stored records.
func metaType(t uint16) bool {
	switch t {
	case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB,
		dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY:
		return true
	}
	return false
}

func containsRR(rrs []dns.RR, rr dns.RR) bool {
	for _, x := range rrs {
		if dns.IsDuplicate(x, rr) {
			return true
		}
	}
	return false
}
