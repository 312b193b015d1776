package dane

import (
	"bytes"
	"encoding/hex"
	"strings"

	"github.com/miekg/dns"
)

// KeySets classify keys (by their DER SubjectPublicKeyInfo) for planning.
type KeySets struct {
	// Protected keys are served now or may be soon: the current key, the
	// next key, the key of the live certificate set. A record that matches
	// one of them is never deleted.
	Protected [][]byte
	// Owned keys are every key daneroll has managed for the certificate,
	// protected or retired. Records matching no owned key belong to
	// someone else and are left alone.
	Owned [][]byte
}

// OwnerPlan is the change at one owner name.
type OwnerPlan struct {
	Owner string
	// Add are wanted records that are not published.
	Add []*dns.TLSA
	// Delete are published records of retired keys.
	Delete []*dns.TLSA
	// Keep are published records that stay: wanted ones, and any other
	// record matching a protected key.
	Keep []*dns.TLSA
	// Foreign are published records of keys daneroll does not know; they
	// are never touched.
	Foreign []*dns.TLSA
}

// Empty reports whether the plan changes nothing.
func (p *OwnerPlan) Empty() bool { return len(p.Add) == 0 && len(p.Delete) == 0 }

// PlanOwner compares the wanted records at owner with the published ones.
//
// The rules, each of which a field bug once broke: a record matching a
// protected key is never deleted, whatever else is true of it; a record
// already published is never added again; a record matching no key daneroll
// knows is never touched; and nothing is replaced in place — additions and
// deletions are separate records.
func PlanOwner(owner string, wanted, published []*dns.TLSA, keys KeySets) OwnerPlan {
	p := OwnerPlan{Owner: strings.ToLower(dns.Fqdn(owner))}
	for _, w := range wanted {
		if !containsTLSA(published, w) && !containsTLSA(p.Add, w) {
			p.Add = append(p.Add, w)
		}
	}
	for _, pub := range published {
		switch {
		case containsTLSA(wanted, pub), matchesAny(pub, keys.Protected):
			p.Keep = append(p.Keep, pub)
		case matchesAny(pub, keys.Owned):
			if !containsTLSA(p.Delete, pub) {
				p.Delete = append(p.Delete, pub)
			}
		default:
			p.Foreign = append(p.Foreign, pub)
		}
	}
	return p
}

func containsTLSA(set []*dns.TLSA, rr *dns.TLSA) bool {
	for _, x := range set {
		if sameTLSA(x, rr) {
			return true
		}
	}
	return false
}

// sameTLSA compares owner, parameters and data; not the TTL.
func sameTLSA(a, b *dns.TLSA) bool {
	return strings.EqualFold(a.Hdr.Name, b.Hdr.Name) && a.Usage == b.Usage && a.Selector == b.Selector &&
		a.MatchingType == b.MatchingType && strings.EqualFold(a.Certificate, b.Certificate)
}

func matchesAny(rr *dns.TLSA, spkis [][]byte) bool {
	for _, spki := range spkis {
		if MatchesSPKI(rr, spki) {
			return true
		}
	}
	return false
}

// RecordForSPKI makes the selector-1 TLSA record for a key, given as its DER
// SubjectPublicKeyInfo.
func RecordForSPKI(owner string, ttl uint32, spki []byte, usage, matching uint8) *dns.TLSA {
	return &dns.TLSA{
		Hdr:          dns.RR_Header{Name: strings.ToLower(dns.Fqdn(owner)), Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: ttl},
		Usage:        usage,
		Selector:     1,
		MatchingType: matching,
		Certificate:  hex.EncodeToString(mustDigest(spki, matching)),
	}
}

// mustDigest is digest for the matching types a configuration can name.
func mustDigest(b []byte, matching uint8) []byte {
	d, _ := digest(b, matching)
	return d
}

// MatchesSPKI reports whether a selector-1 record's association data is the
// given SubjectPublicKeyInfo under the record's matching type. Selector-0
// records (a whole certificate) never match a bare key.
func MatchesSPKI(rr *dns.TLSA, spki []byte) bool {
	if rr.Selector != 1 {
		return false
	}
	want, err := hex.DecodeString(rr.Certificate)
	if err != nil {
		return false
	}
	got, err := digest(spki, rr.MatchingType)
	return err == nil && bytes.Equal(got, want)
}
