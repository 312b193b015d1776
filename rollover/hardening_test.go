package rollover

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/internal/pebbletest"
	"github.com/daneroll/daneroll/store"
)

// A current key file that no longer holds the served key (restored from a
// backup, replaced by hand) makes the next renewal a key change: its
// records are published and held before it is served, and the served key's
// record goes only after the verify.
func TestReplacedCurrentKeyIsPublishedAndHeld(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse", ttl: 2})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	restored, err := acme.GenerateKey("ec256")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.store.WriteKey("mail", store.Current, restored); err != nil {
		t.Fatal(err)
	}
	restoredID, _, _ := keyID(restored.Public())
	w.rep.reset()
	o := w.mustRenew(e, RenewOptions{Force: true}, "rekeyed")
	if !strings.Contains(o.Detail, "not the served key") {
		t.Errorf("detail %q does not say why the key changes", o.Detail)
	}
	lines, waits := w.rep.reset()
	if len(waits) != 1 || waits[0] < 3*time.Second {
		t.Errorf("holds %v, want one of about 2 × 2s before serving the restored key\n%s", waits, strings.Join(lines, "\n"))
	}
	order := []string{"publish: add", "hold", "deploy: set", "verify: 1 endpoint", "retire: delete"}
	if at := matchOrder(lines, order); at != len(order) {
		t.Errorf("steps out of order (matched %d of %v):\n%s", at, order, strings.Join(lines, "\n"))
	}
	st2 := w.state()
	if st2.Current != restoredID || st2.Cert.Key != restoredID || w.svc.Served() != restoredID {
		t.Errorf("current %s, live %s, served %s; want the restored key %s", short(st2.Current), short(st2.Cert.Key), short(w.svc.Served()), short(restoredID))
	}
	if got := w.published(); !slices.Equal(got, []string{restoredID}) {
		t.Errorf("published %v, want only the restored key (%s retired)", got, short(st.Current))
	}
	w.mustRenew(e, RenewOptions{}, "nothing")
}

// matchOrder returns how many of the prefixes in order appear in lines, in
// that order.
func matchOrder(lines, order []string) int {
	at := 0
	for _, l := range lines {
		if at < len(order) && strings.HasPrefix(l, order[at]) {
			at++
		}
	}
	return at
}

// An internationalized name is ordered, issued and compared in its A-label
// form: a second run has nothing to do (it used to renew on every run).
func TestIDNNamesDoNotRenewEveryRun(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse", domains: []string{"Bücher.example.test", "mail.example.test"}})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	if got := w.state().Cert.Domains; !slices.Contains(got, "xn--bcher-kva.example.test") {
		t.Fatalf("certificate names %v", got)
	}
	w.mustRenew(e, RenewOptions{}, "nothing")
}

// Moving from one ACME directory to another (staging to production) renews
// from the new CA, without naming the old CA's certificate in "replaces",
// which the new CA refuses; and when daneroll does not know which CA issued
// the live certificate, a refused "replaces" is dropped and the order made
// again.
func TestDirectoryChangeRenewsFromTheNewCA(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	st := w.state()
	if st.Issuers[st.LiveSet] != w.pebble.Directory {
		t.Fatalf("issuers %v, want set %s from %s", st.Issuers, st.LiveSet, w.pebble.Directory)
	}
	other, err := pebbletest.Start(context.Background(), pebbletest.Options{
		Dir: filepath.Join(w.dir, "pebble2"), Binary: pebbleBin, DNSServer: w.dns.Primary()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	w.cfg.ACME.Directory = other.Directory
	w.cfg.ACME.CARoots = append(w.cfg.ACME.CARoots, other.RootsFile)
	o := w.mustRenew(w.engine(nil), RenewOptions{}, "renewed")
	if !strings.Contains(o.Detail, "[acme] directory is now "+other.Directory) {
		t.Errorf("detail %q", o.Detail)
	}
	st2 := w.state()
	if st2.Issuers[st2.LiveSet] != other.Directory || st2.Current != st.Current {
		t.Errorf("after the move: set %s from %q, key %s (was %s)", st2.LiveSet, st2.Issuers[st2.LiveSet], short(st2.Current), short(st.Current))
	}
	w.mustRenew(w.engine(nil), RenewOptions{}, "nothing")

	// Back to the first CA, with a journal that does not say who issued
	// the live set (as journals written before daneroll recorded it).
	j := w.state()
	j.Issuers = nil
	if err := w.store.WriteJSON(store.JournalPath("mail"), j); err != nil {
		t.Fatal(err)
	}
	w.cfg.ACME.Directory = w.pebble.Directory
	w.mustRenew(w.engine(nil), RenewOptions{Force: true}, "renewed")
	if st3 := w.state(); st3.Issuers[st3.LiveSet] != w.pebble.Directory {
		t.Errorf("issuers %v", st3.Issuers)
	}
}

// A reload that fails makes the deploy roll back; switching back runs the
// same failing command again. The message says what is true: the old set
// is live and its key served (the service never loaded the new files), the
// reload still fails.
func TestRollbackAfterAFailedReloadSaysWhatIsTrue(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "fresh"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	st := w.state()
	svc := w.cfg.Services["smtp"]
	svc.Reload = []string{"sh", "-c", "echo 'postfix/postfix-script: fatal: the Postfix mail system is not running' >&2; exit 1"}
	w.cfg.Services["smtp"] = svc
	o := w.renew(w.engine(nil), RenewOptions{Force: true})
	var rb *RolledBackError
	if !errors.As(o.Err, &rb) || !rb.Reverted || rb.ReloadErr == nil || rb.ProbeErr != nil {
		t.Fatalf("outcome %+v (%#v)", o, rb)
	}
	msg := o.Err.Error()
	for _, want := range []string{"switched back to set " + st.LiveSet, "the old key is served again", "reloading still fails", "TLSA records kept"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "failed as well") {
		t.Errorf("message %q says switching back failed", msg)
	}
	if w.svc.Served() != st.Current {
		t.Errorf("serving %s, want the old key %s", short(w.svc.Served()), short(st.Current))
	}
	if id, _ := w.store.LiveID("mail"); id != st.LiveSet {
		t.Errorf("live set %s, want %s", id, st.LiveSet)
	}
}

// A step that fails leaves its error in the journal for status, and a
// later step that succeeds clears it.
func TestPendingTransactionKeepsItsError(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	w.pebble.Close()
	o := w.renew(e, RenewOptions{Force: true})
	if o.Err == nil {
		t.Fatal("renewal without a CA succeeded")
	}
	txn := w.state().Txn
	if txn == nil || txn.Step != StepObtain || !strings.Contains(txn.Error, "acme") || txn.ErrorAt.IsZero() {
		t.Fatalf("journal %+v, want the obtain step with its error", txn)
	}
	ss, err := e.Status(context.Background(), nil)
	if err != nil || ss[0].Pending == nil || ss[0].Pending.Error != txn.Error {
		t.Errorf("status %+v, %v: want the pending error", ss, err)
	}
}

// A run killed during dns-01 leaves its challenge record in the zone; the
// journal names it, and the next run removes it before ordering again.
func TestLeftoverChallengeRecordsAreRemoved(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	const leftover = `_acme-challenge.mail.example.test. 60 IN TXT "left-by-a-killed-run"`
	if err := w.dns.Update(func(z *dnstest.Zone) error { return z.AddString(leftover) }); err != nil {
		t.Fatal(err)
	}
	// The journal as a run killed inside the order left it.
	st := w.state()
	st.Txn = &Txn{Kind: KindRenew, Step: StepObtain, Reason: "renewal forced (--force)", Started: time.Now(),
		Target: st.Current, Previous: st.Current, PrevSet: st.LiveSet, Challenges: []string{leftover}}
	if err := w.store.WriteJSON(store.JournalPath("mail"), st); err != nil {
		t.Fatal(err)
	}
	w.mustRenew(e, RenewOptions{}, "renewed")
	m := new(dns.Msg)
	m.SetQuestion("_acme-challenge.mail.example.test.", dns.TypeTXT)
	r, err := dns.Exchange(m, w.dns.Primary())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 0 {
		t.Errorf("challenge records left in the zone: %v", r.Answer)
	}
	if w.state().Txn != nil {
		t.Error("transaction still pending")
	}
}

// Verify judges each endpoint by the records a DANE client of it finds: at
// the probe's own owner name, from the validating resolver. A typo in tlsa
// used to pass ("the endpoints match their TLSA records") while clients of
// the probed port found no record.
func TestVerifyLooksWhereADANEClientLooks(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "fresh"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	st := w.state()
	// The operator mistypes the port: the new key's records go to
	// _1._tcp, the service's clients look at its own port.
	w.cfg.Certificates[0].TLSA = []string{"_1._tcp.mail.example.test"}
	o := w.renew(w.engine(nil), RenewOptions{Force: true})
	var rb *RolledBackError
	if !errors.As(o.Err, &rb) || !rb.Reverted {
		t.Fatalf("key change with a mistyped tlsa name: %+v, want a rollback", o)
	}
	if msg := o.Err.Error(); !strings.Contains(msg, "_"+w.port+"._tcp.mail.example.test") {
		t.Errorf("message %q does not name where clients look", msg)
	}
	if w.svc.Served() != st.Current {
		t.Errorf("serving %s, want the old key %s back", short(w.svc.Served()), short(st.Current))
	}
}

// No records at all where the probe looks: a first issuance fails instead
// of reporting success.
func TestVerifyFailsWithoutRecordsAtTheProbe(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	w.cfg.Certificates[0].TLSA = []string{"_18434._tcp.mail.example.test"}
	o := w.renew(w.engine(nil), RenewOptions{})
	if o.Err == nil {
		t.Fatalf("issuance with records at the wrong name succeeded: %+v", o)
	}
	want := "no TLSA records at _" + w.port + "._tcp.mail.example.test, where a DANE client of this endpoint looks (it is not among the certificate's tlsa names: _18434._tcp.mail.example.test)"
	if !strings.Contains(o.Err.Error(), want) {
		t.Errorf("error %q lacks %q", o.Err, want)
	}
}

// A TTL far beyond what any resolver caches (on a record of someone else's
// at the name) must not hold the certificate for years: a TTL with the top
// bit set counts as zero (RFC 2181 §8), any other is capped at what
// resolvers cache at most, and a hold longer than max_hold is an error, not
// a wait.
func TestAbsurdTTLIsRefusedNotWaitedFor(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	topBit := w.owner() + " 4294967295 IN TLSA 3 1 1 " + strings.Repeat("ab", 32)
	if err := w.dns.Update(func(z *dnstest.Zone) error { return z.AddString(topBit) }); err != nil {
		t.Fatal(err)
	}
	o := w.renew(w.engine(nil), RenewOptions{NoWait: true})
	if o.Action != "waiting" || time.Until(o.ResumeAt) > time.Minute {
		t.Fatalf("outcome %+v: a TTL of 2^32-1 (top bit set) must count as zero, not 272 years", o)
	}

	w = newWorld(t, worldOptions{policy: "reuse"})
	huge := w.owner() + " 2147483647 IN TLSA 3 1 1 " + strings.Repeat("cd", 32)
	if err := w.dns.Update(func(z *dnstest.Zone) error { return z.AddString(huge) }); err != nil {
		t.Fatal(err)
	}
	o = w.renew(w.engine(nil), RenewOptions{NoWait: true})
	if o.Err == nil || !strings.Contains(o.Err.Error(), "longer than max_hold (7d)") {
		t.Fatalf("outcome %+v, want the hold refused", o)
	}
	var h interface{ Hint() string }
	if !errors.As(o.Err, &h) || !strings.Contains(h.Hint(), "max_hold") {
		t.Errorf("no hint: %v", o.Err)
	}
	if id, _ := w.store.LiveID("mail"); id != "" {
		t.Error("a certificate went live")
	}
	// With a limit that allows the capped TTL's hold (2 × 7 days), the
	// wait is that long and no longer: not 136 years.
	w.cfg.DNS.MaxHold.Duration = 15 * 24 * time.Hour
	o = w.renew(w.engine(nil), RenewOptions{NoWait: true})
	if left := time.Until(o.ResumeAt); o.Action != "waiting" || left > 14*24*time.Hour+time.Minute || left < 13*24*time.Hour {
		t.Errorf("outcome %+v, want a wait of 14 days", o)
	}
}

// The usual bootstrap: the service cannot start before its first
// certificate exists, so the first reload fails. The run says what to do
// next instead of reporting a broken deploy, and the next run finishes.
func TestFirstIssuanceWithServicesNotRunningYet(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	svc := w.cfg.Services["smtp"]
	hup := svc.Reload
	svc.Reload = []string{"sh", "-c", "echo 'nginx.service is not active, cannot reload.' >&2; exit 1"}
	w.cfg.Services["smtp"] = svc
	o := w.renew(w.engine(nil), RenewOptions{})
	if o.Err != nil || o.Action != "waiting" || !o.ResumeAt.IsZero() {
		t.Fatalf("outcome %+v, want waiting for the operator", o)
	}
	for _, want := range []string{"the first certificate is live in " + w.store.LiveDir("mail"), "not active", "start them now, then run daneroll renew again"} {
		if !strings.Contains(o.Detail, want) {
			t.Errorf("detail %q lacks %q", o.Detail, want)
		}
	}
	if st := w.state(); st.Txn == nil || st.Txn.Step != StepDeploy || st.LastFailure != "" {
		t.Errorf("journal %+v", st.Txn)
	}
	// The operator starts the service; the next run checks it and finishes.
	svc.Reload = hup
	w.cfg.Services["smtp"] = svc
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	if w.svc.Served() != w.state().Current {
		t.Error("the service does not serve the issued key")
	}
}

// status says what needs a person: a served key whose record some
// authoritative servers lack, a certificate in its renewal window whose
// last attempt failed.
func TestStatusAttention(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	ctx := context.Background()
	ss, err := e.Status(ctx, nil)
	if err != nil || len(ss[0].Attention) != 0 {
		t.Fatalf("attention right after issuance: %v %v", ss[0].Attention, err)
	}
	w.dns.Freeze(2)
	ours := w.owner() + " 1 IN TLSA 3 1 1 " + st.Current
	if err := w.dns.Update(func(z *dnstest.Zone) error {
		rr, _ := dns.NewRR(ours)
		z.Remove(rr)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.LastFailure = "renew: obtain: the CA answered 500"
	st.Renewal.At = time.Now().Add(-time.Hour)
	if err := w.store.WriteJSON(store.JournalPath("mail"), st); err != nil {
		t.Fatal(err)
	}
	ss, err = w.engine(nil).Status(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(ss[0].Attention, "\n")
	for _, want := range []string{"is visible on 1 of 3 authoritative servers", "inside its renewal window since", "the CA answered 500"} {
		if !strings.Contains(text, want) {
			t.Errorf("attention %q lacks %q", text, want)
		}
	}
}
