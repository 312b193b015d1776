package dnstest

import (
	"crypto"
	"crypto/ecdsa"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Signatures are valid from an hour before signing (clock skew) for 30 days,
// and made again when an RRset changes or its signature has less than a
// quarter of that left, as BIND does with sig-validity-interval.
const (
	sigBackdate = time.Hour
	sigValidity = 30 * 24 * time.Hour
	sigRefresh  = sigValidity / 4
)

// signer holds the zone's keys: a KSK that signs the DNSKEY RRset and a ZSK
// that signs everything else, both ECDSAP256SHA256.
type signer struct {
	origin   string
	ksk, zsk *dns.DNSKEY
	kskKey   crypto.Signer
	zskKey   crypto.Signer
}

func newSigner(origin string) (*signer, error) {
	s := &signer{origin: origin}
	var err error
	if s.ksk, s.kskKey, err = newKey(origin, dns.ZONE|dns.SEP); err != nil {
		return nil, err
	}
	if s.zsk, s.zskKey, err = newKey(origin, dns.ZONE); err != nil {
		return nil, err
	}
	return s, nil
}

func newKey(origin string, flags uint16) (*dns.DNSKEY, crypto.Signer, error) {
	k := &dns.DNSKEY{
		Hdr:       dns.RR_Header{Name: origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
		Flags:     flags,
		Protocol:  3,
		Algorithm: dns.ECDSAP256SHA256,
	}
	priv, err := k.Generate(256)
	if err != nil {
		return nil, nil, fmt.Errorf("dnstest: generate DNSSEC key: %w", err)
	}
	return k, priv.(*ecdsa.PrivateKey), nil
}

// dnskeys returns the DNSKEY RRset with the given TTL.
func (s *signer) dnskeys(ttl uint32) []dns.RR {
	out := []dns.RR{dns.Copy(s.ksk), dns.Copy(s.zsk)}
	for _, k := range out {
		k.Header().Ttl = ttl
	}
	return out
}

func (s *signer) sign(rrs []dns.RR, now time.Time) (dns.RR, error) {
	key, priv := s.zsk, s.zskKey
	if rrs[0].Header().Rrtype == dns.TypeDNSKEY {
		key, priv = s.ksk, s.kskKey
	}
	sig := &dns.RRSIG{
		Hdr:        dns.RR_Header{Ttl: rrs[0].Header().Ttl},
		Algorithm:  key.Algorithm,
		Inception:  uint32(now.Add(-sigBackdate).Unix()),
		Expiration: uint32(now.Add(sigValidity).Unix()),
		KeyTag:     key.KeyTag(),
		SignerName: s.origin,
	}
	if err := sig.Sign(priv, rrs); err != nil {
		return nil, fmt.Errorf("dnstest: sign %s %s: %w", rrs[0].Header().Name, dns.TypeToString[rrs[0].Header().Rrtype], err)
	}
	return sig, nil
}

// A version is one serial of the zone as served. It is never changed once
// made, so servers read it without locks.
type version struct {
	serial  uint32
	created time.Time
	// data is the unsigned zone the next change starts from.
	data *Zone
	// sets is what is served: data plus DNSKEY and NSEC when signed.
	sets map[rrKey][]dns.RR
	// sigs holds the RRSIGs over sets[k], fps the text of sets[k] when it
	// was signed, so the next version can keep signatures of RRsets that
	// did not change.
	sigs map[rrKey][]dns.RR
	fps  map[rrKey]string
	// exists holds every name with records and every ancestor of one up to
	// the apex (empty non-terminals exist too).
	exists map[string]bool
	// cuts holds the delegation points below the apex.
	cuts map[string]bool
	// chain holds the NSEC owner names in canonical order (signed zones).
	chain []string
}

// buildVersion makes the served form of z under serial. prev, when not nil,
// lends its signatures for RRsets that did not change.
func buildVersion(z *Zone, serial uint32, now time.Time, s *signer, prev *version) (*version, error) {
	data := z.clone()
	soaKey := rrKey{data.origin, dns.TypeSOA}
	soa := dns.Copy(data.soa()).(*dns.SOA)
	soa.Serial = serial
	data.sets[soaKey] = []dns.RR{soa}

	v := &version{
		serial:  serial,
		created: now,
		data:    data,
		sets:    data.clone().sets,
		exists:  make(map[string]bool),
		cuts:    make(map[string]bool),
	}
	for k := range v.sets {
		for n := k.name; ; n = parent(n) {
			v.exists[n] = true
			if n == data.origin {
				break
			}
		}
		if k.t == dns.TypeNS && k.name != data.origin {
			v.cuts[k.name] = true
		}
	}
	if s == nil {
		return v, nil
	}

	v.sets[rrKey{data.origin, dns.TypeDNSKEY}] = s.dnskeys(soa.Hdr.Ttl)
	v.buildChain(min(soa.Hdr.Ttl, soa.Minttl))

	v.sigs = make(map[rrKey][]dns.RR)
	v.fps = make(map[rrKey]string)
	for k, rrs := range v.sets {
		if !v.authoritative(k) {
			continue
		}
		fp := fingerprint(rrs)
		v.fps[k] = fp
		if prev != nil && prev.fps[k] == fp && fresh(prev.sigs[k], now) {
			v.sigs[k] = prev.sigs[k]
			continue
		}
		sig, err := s.sign(rrs, now)
		if err != nil {
			return nil, err
		}
		v.sigs[k] = []dns.RR{sig}
	}
	return v, nil
}

// buildChain adds the NSEC records: one per authoritative name (delegation
// points included, names below them not), in canonical order, the last one
// pointing back to the apex.
func (v *version) buildChain(ttl uint32) {
	types := make(map[string][]uint16)
	for k := range v.sets {
		if v.authoritative(k) || (k.t == dns.TypeNS && v.cuts[k.name] && v.cutFor(k.name) == k.name) {
			types[k.name] = append(types[k.name], k.t)
		}
	}
	for name := range types {
		v.chain = append(v.chain, name)
	}
	sort.Slice(v.chain, func(i, j int) bool { return canonicalCompare(v.chain[i], v.chain[j]) < 0 })
	for i, name := range v.chain {
		bitmap := append(types[name], dns.TypeNSEC, dns.TypeRRSIG)
		slices.Sort(bitmap)
		v.sets[rrKey{name, dns.TypeNSEC}] = []dns.RR{&dns.NSEC{
			Hdr:        dns.RR_Header{Name: name, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: ttl},
			NextDomain: v.chain[(i+1)%len(v.chain)],
			TypeBitMap: bitmap,
		}}
	}
}

// authoritative reports whether the zone is authoritative for RRset k: not
// below a delegation point, and at one only its DS and NSEC.
func (v *version) authoritative(k rrKey) bool {
	if cut := v.cutFor(k.name); cut != "" {
		return cut == k.name && (k.t == dns.TypeDS || k.t == dns.TypeNSEC)
	}
	return true
}

// cutFor returns the delegation point at or above name (the one nearest the
// apex), or "" when name is in the zone's authoritative data.
func (v *version) cutFor(name string) string {
	if len(v.cuts) == 0 {
		return ""
	}
	cut := ""
	for n := name; n != v.data.origin && n != "."; n = parent(n) {
		if v.cuts[n] {
			cut = n
		}
	}
	return cut
}

// fresh reports whether every signature in sigs stays valid for longer
// than sigRefresh.
func fresh(sigs []dns.RR, now time.Time) bool {
	if len(sigs) == 0 {
		return false
	}
	for _, s := range sigs {
		if int64(s.(*dns.RRSIG).Expiration)-now.Unix() < int64(sigRefresh/time.Second) {
			return false
		}
	}
	return true
}

// fingerprint is the text of an RRset, independent of record order.
func fingerprint(rrs []dns.RR) string {
	lines := make([]string, len(rrs))
	for i, rr := range rrs {
		lines[i] = rr.String()
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// covering returns the NSEC owner that covers name: the last chain name
// that sorts before it.
func (v *version) covering(name string) string {
	i := sort.Search(len(v.chain), func(i int) bool { return canonicalCompare(v.chain[i], name) > 0 })
	if i == 0 {
		return v.chain[len(v.chain)-1]
	}
	return v.chain[i-1]
}
