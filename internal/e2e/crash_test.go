package e2e

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/store"
)

func spkiHex(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// crashPoints runs scenario with daneroll killed by SIGKILL just before,
// then just after, every journal write of the run in turn — until a run
// finishes without reaching the failpoint — and after each kill lets the
// service restart (so it serves whatever is live), runs daneroll again to
// recover, and checks the invariants. It returns how many kills it made.
func crashPoints(t *testing.T, fresh func() *world, w *world, args []string, check func(*testing.T, *world)) int {
	kills := 0
	for _, when := range []string{"before", "after"} {
		for n := 1; ; n++ {
			if fresh != nil {
				w = fresh()
			}
			fp := fmt.Sprintf("%s:%d", when, n)
			r := w.daneroll(fp, args...)
			if !r.killed {
				if r.code != 0 {
					t.Fatalf("%s: daneroll %v failed:\n%s", fp, args, r.out)
				}
				check(t, w)
				break
			}
			kills++
			// A service may pick up the live set at any moment (a new
			// smtpd process, a restart): the worst case is right now.
			w.reloadAll()
			rec := w.daneroll("", "renew")
			if rec.code != 0 || rec.killed {
				t.Fatalf("%s: the run after the kill failed (exit %d):\n%s", fp, rec.code, rec.out)
			}
			w.reloadAll()
			t.Logf("%s: killed, recovered", fp)
			check(t, w)
			if t.Failed() {
				t.Fatalf("invariants broken after the kill at %s; recovery said:\n%s", fp, rec.out)
			}
		}
	}
	return kills
}

// invariants checks a world at rest: no transaction pending, the key
// files, the live set and the served key agree, exactly the wanted records
// are published everywhere, and at no instant so far was a key served
// while a resolver might have held an answer without its record.
func invariants(policy string) func(*testing.T, *world) {
	return func(t *testing.T, w *world) {
		t.Helper()
		for _, name := range w.certs {
			certInvariants(t, w, name, policy)
		}
	}
}

func certInvariants(t *testing.T, w *world, name, policy string) {
	t.Helper()
	s, err := store.OpenReadOnly(w.state)
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Txn *struct{ Kind, Step string } `json:"txn"`
	}
	if _, err := s.ReadJSON(store.JournalPath(name), &j); err != nil {
		t.Fatal(err)
	}
	if j.Txn != nil {
		t.Errorf("%s: a %s transaction is still pending at %s", name, j.Txn.Kind, j.Txn.Step)
	}
	current, next := w.keyIDsOf(name)
	live, err := s.Live(name)
	if err != nil || live == nil {
		t.Fatalf("%s: no live set: %v", name, err)
	}
	leaf, _ := live.Leaf()
	liveKey := spkiHex(leaf.PublicKey)
	if current == "" || current != liveKey {
		t.Errorf("%s: current key %q, live set key %q: a key was lost or not promoted", name, current, liveKey)
	}
	svc := w.lb.Service(serviceOf(name)).Server
	if served := svc.Served(); served != liveKey {
		t.Errorf("%s: the service serves %s, the live set holds %s", name, served, liveKey)
	}
	want := []string{current}
	switch policy {
	case "rollover":
		if next == "" || next == current {
			t.Errorf("%s: rollover without a distinct next key (%q)", name, next)
		}
		want = append(want, next)
	default:
		if next != "" && policy == "reuse" {
			t.Errorf("%s: reuse with a next key %s", name, next)
		}
	}
	if got := w.publishedFor(name); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("%s: published %v, want exactly %v: a stale or missing record", name, got, want)
	}
	m := new(dns.Msg)
	m.SetQuestion("_acme-challenge."+name+".example.test.", dns.TypeTXT)
	if r, err := dns.Exchange(m, w.dns.Primary()); err != nil {
		t.Fatal(err)
	} else if len(r.Answer) > 0 {
		t.Errorf("%s: dns-01 records left in the zone: %v", name, r.Answer)
	}
	cacheModel(t, w, name)
}

// cacheModel checks, over the whole history so far, that whenever the
// service of certificate name served a key, every answer any authoritative
// server gave for its TLSA name that a resolver could still have cached
// (given up to its TTL, or its negative TTL, after the server stopped
// giving it) held a record for that key (see dnstest.CacheGaps).
func cacheModel(t *testing.T, w *world, name string) {
	t.Helper()
	var served []dnstest.KeyServed
	timeline := w.lb.Service(serviceOf(name)).Server.Timeline()
	for i, ch := range timeline {
		k := dnstest.KeyServed{From: ch.At, SPKI: ch.SPKI}
		if i+1 < len(timeline) {
			k.To = timeline[i+1].At
		}
		served = append(served, k)
	}
	for _, g := range dnstest.CacheGaps(w.dns.History(w.ownerOf(name), dns.TypeTLSA), served, time.Now()) {
		t.Errorf("%s: %s", name, g.Describe(w.start))
	}
}

// TestCrashAtEveryStep kills daneroll at every journal write of every kind
// of transaction, for every key policy, and checks after each recovery that
// no served key ever lacked a record a resolver could see, no key was lost
// and no stale record remains.
func TestCrashAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts daneroll a few hundred times")
	}
	total := 0
	for _, policy := range []string{"reuse", "rollover", "fresh"} {
		t.Run(policy+"/issue", func(t *testing.T) {
			n := crashPoints(t, func() *world { return newWorld(t, policy, 1) }, nil, []string{"renew"}, invariants(policy))
			total += n
			t.Logf("%s issue: %d crash points", policy, n)
		})
		t.Run(policy+"/change", func(t *testing.T) {
			w := newWorld(t, policy, 1)
			w.mustRun("renew")
			args := []string{"renew", "--force"}
			if policy == "rollover" {
				// Wait until the next key is safe, as it would be after
				// days in service, then switch to it.
				time.Sleep(2100 * time.Millisecond)
				args = []string{"rekey", "mail"}
			}
			n := crashPoints(t, nil, w, args, invariants(policy))
			total += n
			t.Logf("%s %v: %d crash points", policy, args, n)
		})
	}
	// Two certificates changing keys in one run, their transactions
	// side by side (the default concurrency): a kill at any journal
	// write of either leaves both whole.
	t.Run("fresh/change/two at once", func(t *testing.T) {
		w := newWorldOf(t, "fresh", 1, "mail", "mx")
		w.mustRun("renew")
		n := crashPoints(t, nil, w, []string{"renew", "--force"}, invariants("fresh"))
		total += n
		t.Logf("two certificates, fresh renew --force: %d crash points", n)
	})
	t.Logf("crash points tried: %d", total)
}
