package dane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

const owner = "_25._tcp.mail.example.test."

func spkiOf(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// recordFor computes the record independently of RecordForSPKI, so the
// two check each other.
func recordFor(spki []byte, usage, matching uint8) *dns.TLSA {
	var data []byte
	switch matching {
	case 0:
		data = spki
	case 1:
		s := sha256.Sum256(spki)
		data = s[:]
	case 2:
		s := sha512.Sum512(spki)
		data = s[:]
	}
	return &dns.TLSA{
		Hdr:   dns.RR_Header{Name: owner, Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: 300},
		Usage: usage, Selector: 1, MatchingType: matching, Certificate: hex.EncodeToString(data),
	}
}

func TestRecordForSPKI(t *testing.T) {
	spki := spkiOf(t)
	for m := range uint8(3) {
		got := RecordForSPKI(strings.ToUpper(owner), 300, spki, 3, m)
		if !sameTLSA(got, recordFor(spki, 3, m)) || got.Hdr.Ttl != 300 || got.Hdr.Name != owner {
			t.Errorf("matching %d: %v", m, got)
		}
	}
}

func TestPlanRotation(t *testing.T) {
	current, next, old, stranger := spkiOf(t), spkiOf(t), spkiOf(t), spkiOf(t)
	published := []*dns.TLSA{recordFor(old, 3, 1), recordFor(current, 3, 1), recordFor(stranger, 3, 1)}
	wanted := []*dns.TLSA{recordFor(current, 3, 1), recordFor(next, 3, 1)}
	p := PlanOwner(owner, wanted, published, KeySets{
		Protected: [][]byte{current, next},
		Owned:     [][]byte{current, next, old},
	})
	if len(p.Add) != 1 || !MatchesSPKI(p.Add[0], next) {
		t.Errorf("add = %v, want the next key's record", p.Add)
	}
	if len(p.Delete) != 1 || !MatchesSPKI(p.Delete[0], old) {
		t.Errorf("delete = %v, want the old key's record", p.Delete)
	}
	if len(p.Foreign) != 1 || !MatchesSPKI(p.Foreign[0], stranger) {
		t.Errorf("foreign = %v", p.Foreign)
	}
	if len(p.Keep) != 1 || !MatchesSPKI(p.Keep[0], current) {
		t.Errorf("keep = %v", p.Keep)
	}
}

// TestPlanProperties checks the planner's rules over random published sets:
// records of protected keys survive, foreign records are untouched, nothing
// already published is added, and applying the plan yields every wanted
// record.
func TestPlanProperties(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	var pool [][]byte
	for range 8 {
		pool = append(pool, spkiOf(t))
	}
	for iter := range 3000 {
		// Partition the pool: protected ⊆ owned; the rest are strangers.
		perm := rng.Perm(len(pool))
		nOwned := rng.IntN(len(pool) + 1)
		nProt := rng.IntN(nOwned + 1)
		var keys KeySets
		for i, idx := range perm[:nOwned] {
			keys.Owned = append(keys.Owned, pool[idx])
			if i < nProt {
				keys.Protected = append(keys.Protected, pool[idx])
			}
		}
		var wanted, published []*dns.TLSA
		for _, spki := range keys.Protected {
			if rng.IntN(4) > 0 {
				wanted = append(wanted, recordFor(spki, 3, 1))
			}
		}
		for range rng.IntN(10) {
			spki := pool[rng.IntN(len(pool))]
			rr := recordFor(spki, uint8(rng.IntN(4)), uint8(rng.IntN(3)))
			published = append(published, rr)
			if rng.IntN(5) == 0 { // duplicates happen (API quirks, retried creates)
				published = append(published, rr)
			}
		}
		p := PlanOwner(owner, wanted, published, keys)

		for _, d := range p.Delete {
			if matchesAny(d, keys.Protected) {
				t.Fatalf("iter %d: deletes %v, which matches a protected key", iter, d)
			}
			if containsTLSA(wanted, d) {
				t.Fatalf("iter %d: deletes wanted record %v", iter, d)
			}
			if !matchesAny(d, keys.Owned) {
				t.Fatalf("iter %d: deletes foreign record %v", iter, d)
			}
			if !containsTLSA(published, d) {
				t.Fatalf("iter %d: deletes unpublished record %v", iter, d)
			}
		}
		for _, a := range p.Add {
			if containsTLSA(published, a) {
				t.Fatalf("iter %d: adds %v, which is already published", iter, a)
			}
		}
		for i, a := range p.Add {
			for _, b := range p.Add[i+1:] {
				if sameTLSA(a, b) {
					t.Fatalf("iter %d: adds %v twice", iter, a)
				}
			}
		}
		// Applying the plan: every wanted record is there, every protected
		// and every foreign record is still there.
		var after []*dns.TLSA
		for _, rr := range published {
			if !containsTLSA(p.Delete, rr) {
				after = append(after, rr)
			}
		}
		after = append(after, p.Add...)
		for _, w := range wanted {
			if !containsTLSA(after, w) {
				t.Fatalf("iter %d: wanted %v missing after the plan", iter, w)
			}
		}
		for _, rr := range published {
			if (matchesAny(rr, keys.Protected) || !matchesAny(rr, keys.Owned)) && !containsTLSA(after, rr) {
				t.Fatalf("iter %d: %v lost", iter, rr)
			}
		}
		// Every published record is classified exactly once.
		if n := len(p.Keep) + len(p.Foreign) + countDistinctIn(published, p.Delete); n != len(published) {
			t.Fatalf("iter %d: %d published, classified %d", iter, len(published), n)
		}
	}
}

func countDistinctIn(published, del []*dns.TLSA) int {
	n := 0
	for _, rr := range published {
		if containsTLSA(del, rr) {
			n++
		}
	}
	return n
}

func TestMatchesSPKI(t *testing.T) {
	spki, other := spkiOf(t), spkiOf(t)
	for m := range uint8(3) {
		if !MatchesSPKI(recordFor(spki, 3, m), spki) {
			t.Errorf("matching type %d: no match", m)
		}
		if MatchesSPKI(recordFor(spki, 3, m), other) {
			t.Errorf("matching type %d: matches another key", m)
		}
	}
	full := recordFor(spki, 3, 1)
	full.Selector = 0
	if MatchesSPKI(full, spki) {
		t.Error("a selector-0 record matched a bare key")
	}
}
