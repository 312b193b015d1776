package dnstest

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// rrKey names one RRset. Names are canonical (lower case, fully qualified).
type rrKey struct {
	name string
	t    uint16
}

// Zone is the unsigned data of the primary's zone as Cluster.Update hands it
// to its callback. Owner names are kept in lower case. The SOA serial is
// managed by the cluster: every committed change gets a new one.
//
// A Zone is only valid inside the Update callback.
type Zone struct {
	origin string
	// sets is copy-on-write: a slice stored here is never modified in place,
	// so versions can share slices with the Zone they were cloned from.
	sets    map[rrKey][]dns.RR
	changed bool
}

func newZone(origin string) *Zone {
	return &Zone{origin: origin, sets: make(map[rrKey][]dns.RR)}
}

func (z *Zone) clone() *Zone {
	c := &Zone{origin: z.origin, sets: make(map[rrKey][]dns.RR, len(z.sets))}
	for k, v := range z.sets {
		c.sets[k] = v
	}
	return c
}

// Origin is the zone apex, e.g. "example.test.".
func (z *Zone) Origin() string { return z.origin }

// Lookup returns copies of the records of type rrtype at name.
func (z *Zone) Lookup(name string, rrtype uint16) []dns.RR {
	return copyRRs(z.sets[rrKey{dns.CanonicalName(name), rrtype}])
}

// SOA returns a copy of the zone's SOA record.
func (z *Zone) SOA() *dns.SOA {
	return dns.Copy(z.soa()).(*dns.SOA)
}

func (z *Zone) soa() *dns.SOA {
	return z.sets[rrKey{z.origin, dns.TypeSOA}][0].(*dns.SOA)
}

// AddString parses zone-file lines (names relative to the origin, default
// TTL 3600) and adds the records.
func (z *Zone) AddString(lines ...string) error {
	rrs, err := parseRecords(z.origin, lines)
	if err != nil {
		return err
	}
	return z.Add(rrs...)
}

// Add adds records. Adding a record that exists (same owner, type and data)
// only sets the RRset's TTL; an RRset always has a single TTL, the one of the
// record added last (RFC 2181 §5.2). A SOA replaces the zone's SOA; a CNAME
// cannot share its name with other data.
func (z *Zone) Add(rrs ...dns.RR) error {
	for _, rr := range rrs {
		if err := z.checkRR(rr); err != nil {
			return err
		}
		if !z.add(rr) {
			return fmt.Errorf("dnstest: %s: a CNAME cannot share its name with other data", rr.Header().Name)
		}
	}
	return nil
}

// checkRR rejects records the zone cannot hold: names outside it, other
// classes, and the DNSSEC records the server makes itself.
func (z *Zone) checkRR(rr dns.RR) error {
	h := rr.Header()
	if !dns.IsSubDomain(z.origin, dns.CanonicalName(h.Name)) {
		return fmt.Errorf("dnstest: %s is outside zone %s", h.Name, z.origin)
	}
	if h.Class != dns.ClassINET {
		return fmt.Errorf("dnstest: %s: class %s, want IN", h.Name, dns.ClassToString[h.Class])
	}
	if generatedType(h.Rrtype) {
		return fmt.Errorf("dnstest: %s: %s records are made by the server", h.Name, dns.TypeToString[h.Rrtype])
	}
	if h.Rrtype == dns.TypeSOA && dns.CanonicalName(h.Name) != z.origin {
		return fmt.Errorf("dnstest: SOA at %s, want it at the apex %s", h.Name, z.origin)
	}
	return nil
}

// generatedType reports whether records of type t are made by the signer
// and never taken from zone data or updates.
func generatedType(t uint16) bool {
	switch t {
	case dns.TypeDNSKEY, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeNSEC3PARAM:
		return true
	}
	return false
}

// add adds one checked record and reports false when a CNAME conflict made
// it ignore the record (RFC 2136 §3.4.2.2).
func (z *Zone) add(rr dns.RR) bool {
	rr = dns.Copy(rr)
	h := rr.Header()
	h.Name = dns.CanonicalName(h.Name)
	k := rrKey{h.Name, h.Rrtype}
	if h.Rrtype == dns.TypeSOA {
		if old, ok := z.sets[k]; !ok || old[0].String() != rr.String() {
			z.sets[k] = []dns.RR{rr}
			z.changed = true
		}
		return true
	}
	hasCNAME := len(z.sets[rrKey{h.Name, dns.TypeCNAME}]) > 0
	if h.Rrtype == dns.TypeCNAME && !hasCNAME && len(z.typesAt(h.Name)) > 0 {
		return false
	}
	if h.Rrtype != dns.TypeCNAME && hasCNAME {
		return false
	}
	old := z.sets[k]
	set := make([]dns.RR, 0, len(old)+1)
	found := false
	for _, o := range old {
		if o.Header().Ttl != h.Ttl {
			o = dns.Copy(o)
			o.Header().Ttl = h.Ttl
			z.changed = true
		}
		if dns.IsDuplicate(o, rr) {
			found = true
		}
		set = append(set, o)
	}
	if !found {
		if h.Rrtype == dns.TypeCNAME {
			set = set[:0] // a name has at most one CNAME: the new one replaces it
		}
		set = append(set, rr)
		z.changed = true
	}
	z.sets[k] = set
	return true
}

// Remove removes the record equal to rr (owner, type and data; TTL and
// class are ignored) and reports whether there was one. The SOA and the
// apex's last NS record cannot be removed.
func (z *Zone) Remove(rr dns.RR) bool {
	want := dns.Copy(rr)
	wh := want.Header()
	wh.Name = dns.CanonicalName(wh.Name)
	wh.Class = dns.ClassINET
	k := rrKey{wh.Name, wh.Rrtype}
	old := z.sets[k]
	if k.t == dns.TypeSOA || (k.name == z.origin && k.t == dns.TypeNS && len(old) <= 1) {
		return false
	}
	for i, o := range old {
		if dns.IsDuplicate(o, want) {
			z.setRRset(k, slices.Concat(old[:i], old[i+1:]))
			return true
		}
	}
	return false
}

// RemoveRRset removes every record of type rrtype at name. The apex's SOA
// and NS RRsets cannot be removed.
func (z *Zone) RemoveRRset(name string, rrtype uint16) {
	k := rrKey{dns.CanonicalName(name), rrtype}
	if k.name == z.origin && (k.t == dns.TypeSOA || k.t == dns.TypeNS) {
		return
	}
	z.setRRset(k, nil)
}

// RemoveName removes every RRset at name (at the apex: all but SOA and NS).
func (z *Zone) RemoveName(name string) {
	name = dns.CanonicalName(name)
	for _, t := range z.typesAt(name) {
		z.RemoveRRset(name, t)
	}
}

func (z *Zone) setRRset(k rrKey, rrs []dns.RR) {
	if len(rrs) == 0 {
		if _, ok := z.sets[k]; ok {
			delete(z.sets, k)
			z.changed = true
		}
		return
	}
	z.sets[k] = rrs
	z.changed = true
}

// typesAt returns the types with records at name, sorted.
func (z *Zone) typesAt(name string) []uint16 {
	var ts []uint16
	for k := range z.sets {
		if k.name == name {
			ts = append(ts, k.t)
		}
	}
	slices.Sort(ts)
	return ts
}

// parseRecords reads zone-file lines relative to origin.
func parseRecords(origin string, lines []string) ([]dns.RR, error) {
	zp := dns.NewZoneParser(strings.NewReader(strings.Join(lines, "\n")+"\n"), origin, "")
	zp.SetDefaultTTL(3600)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("dnstest: records: %w", err)
	}
	return rrs, nil
}

func copyRRs(rrs []dns.RR) []dns.RR {
	if rrs == nil {
		return nil
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

// sameRRset reports whether a and b hold the same records, ignoring order
// and TTL.
func sameRRset(a, b []dns.RR) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !containsRR(b, x) {
			return false
		}
	}
	return true
}

// canonicalCompare orders names as RFC 4034 §6.1 does: label by label from
// the right, each label compared as lower-cased octets.
func canonicalCompare(a, b string) int {
	la, lb := wireLabels(a), wireLabels(b)
	for i, j := len(la)-1, len(lb)-1; i >= 0 && j >= 0; i, j = i-1, j-1 {
		if c := bytes.Compare(la[i], lb[j]); c != 0 {
			return c
		}
	}
	return len(la) - len(lb)
}

// wireLabels returns the lower-cased wire-format labels of name, so escapes
// such as "\." and "\065" compare by the octets they stand for.
func wireLabels(name string) [][]byte {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		// Names reaching here were parsed or packed before; fall back to
		// the text so the order stays total.
		return [][]byte{[]byte(dns.CanonicalName(name))}
	}
	buf = buf[:n]
	for i, c := range buf {
		if 'A' <= c && c <= 'Z' {
			buf[i] = c + 'a' - 'A'
		}
	}
	var labels [][]byte
	for off := 0; off < len(buf) && buf[off] != 0; off += int(buf[off]) + 1 {
		labels = append(labels, buf[off+1:off+1+int(buf[off])])
	}
	return labels
}

// parent returns the name one label up, "." for a top-level name.
func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[i:]
}
