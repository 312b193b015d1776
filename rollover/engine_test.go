package rollover

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/internal/dnstest"
	"github.com/daneroll/daneroll/store"
)

func TestReuseIssueRenewKeepsKeyAndTouchesNoDNS(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	if st.Current == "" || st.Next != "" || st.Cert == nil || st.Cert.Key != st.Current {
		t.Fatalf("state after issue: %+v", st)
	}
	if got := w.svc.Served(); got != st.Current {
		t.Fatalf("service serves %s, want %s", got, st.Current)
	}
	if got := w.published(); !slices.Equal(got, []string{st.Current}) {
		t.Fatalf("published %v, want the current key's 3 1 1 record", got)
	}
	// The first key is served only once its records are safe: after the
	// hold, which the order may have used up.
	_, waits := w.rep.reset()
	if k := st.key(st.Current); len(waits) > 1 || k.Served.Before(k.SafeAt[w.owner()]) {
		t.Errorf("issuance waited %d times; key served at %v, safe at %v", len(waits), k.Served, k.SafeAt[w.owner()])
	}

	// A second run right after does nothing and says so.
	o := w.mustRenew(e, RenewOptions{}, "nothing")
	if !strings.Contains(o.Detail, "next renewal") {
		t.Errorf("nothing-to-do detail = %q", o.Detail)
	}

	serial := st.Cert.Serial
	before := len(w.dns.Queries())
	w.mustRenew(e, RenewOptions{Force: true}, "renewed")
	st2 := w.state()
	if st2.Current != st.Current || st2.Cert.Key != st.Current || st2.Cert.Serial == serial {
		t.Fatalf("renewal with reuse: key %s → %s, serial %s → %s", st.Current, st2.Current, serial, st2.Cert.Serial)
	}
	for _, q := range w.dns.Queries()[before:] {
		if q.Opcode == 5 && !strings.HasPrefix(q.Name, "_acme-challenge") { // dns.OpcodeUpdate
			if q.Request != nil && len(q.Request.Ns) > 0 && !strings.HasPrefix(q.Request.Ns[0].Header().Name, "_acme-challenge") {
				t.Errorf("a renewal with the same key changed DNS: %v", q.Request.Ns)
			}
		}
	}
	if got := w.published(); !slices.Equal(got, []string{st.Current}) {
		t.Errorf("published after renewal %v", got)
	}
	_, waits = w.rep.reset()
	if len(waits) != 0 {
		t.Errorf("a same-key renewal waited: %v", waits)
	}
}

func TestRolloverRekeyNeedsNoWait(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "rollover"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	if st.Current == "" || st.Next == "" || st.Current == st.Next {
		t.Fatalf("rollover keeps a current and a next key: %+v", st)
	}
	got := w.published()
	slices.Sort(got)
	want := []string{st.Current, st.Next}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("published %v, want current and next %v", got, want)
	}
	w.rep.reset()
	// The next key's records have been visible for longer than the hold
	// (2 × 1s) by the time the issuance is over; make sure of it.
	time.Sleep(2100 * time.Millisecond)

	ctx := context.Background()
	out, err := e.Rekey(ctx, "mail", false, RenewOptions{})
	if err != nil || out.Err != nil || out.Action != "rekeyed" {
		t.Fatalf("rekey: %+v, %v", out, err)
	}
	lines, waits := w.rep.reset()
	if len(waits) != 0 {
		t.Errorf("the switch to a long-published next key waited %v\n%s", waits, strings.Join(lines, "\n"))
	}
	st2 := w.state()
	if st2.Current != st.Next {
		t.Errorf("current key = %s, want the old next key %s", st2.Current, st.Next)
	}
	if st2.Next == "" || st2.Next == st.Next || st2.Next == st.Current {
		t.Errorf("no fresh next key: %s", st2.Next)
	}
	if w.svc.Served() != st.Next {
		t.Errorf("service serves %s, want %s", w.svc.Served(), st.Next)
	}
	got = w.published()
	slices.Sort(got)
	want = []string{st2.Current, st2.Next}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("published %v, want %v (the old key retired)", got, want)
	}
	if k := st2.key(st.Current); k == nil || k.Retired.IsZero() {
		t.Errorf("old key not marked retired: %+v", k)
	}
	if st2.RekeyRequested || st2.Txn != nil {
		t.Errorf("state left pending: %+v", st2)
	}
	// Nothing more to do.
	w.mustRenew(e, RenewOptions{}, "nothing")
}

func TestFreshPublishesAndHoldsBeforeServing(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "fresh", ttl: 2})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	w.rep.reset()
	w.mustRenew(e, RenewOptions{Force: true}, "rekeyed")
	st2 := w.state()
	if st2.Current == st.Current || st2.Next != "" {
		t.Fatalf("fresh renewal: current %s → %s, next %q", st.Current, st2.Current, st2.Next)
	}
	lines, waits := w.rep.reset()
	// The hold is 2 × the largest TTL (the records' 2 s) from the
	// confirmation; the order runs during it, so what is left to wait
	// after the order is less, and the key is served only after it.
	k := st2.key(st2.Current)
	safe := k.SafeAt[w.owner()]
	if len(waits) > 1 || len(waits) == 1 && waits[0] > 4*time.Second+500*time.Millisecond {
		t.Errorf("hold waits %v, want at most one of at most 4s\n%s", waits, strings.Join(lines, "\n"))
	}
	if k.Served.Before(safe) {
		t.Errorf("key served at %v, before its records were safe at %v", k.Served, safe)
	}
	// The new key's record went out before the certificate was ordered,
	// the order before the end of the hold, and the old record was deleted
	// only after the verify.
	order := []string{"publish: add", "confirm: all", "obtain: ordering", "deploy: set", "verify: 1 endpoint", "retire: delete"}
	at := 0
	for _, l := range lines {
		if at < len(order) && strings.HasPrefix(l, order[at]) {
			at++
		}
	}
	if at != len(order) {
		t.Errorf("steps out of order (matched %d of %v):\n%s", at, order, strings.Join(lines, "\n"))
	}
	if got := w.published(); !slices.Equal(got, []string{st2.Current}) {
		t.Errorf("published %v, want only the new key", got)
	}
}

func TestVerifyFailureRollsBack(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "fresh"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	// The reload command now does nothing: the service keeps serving the
	// old certificate, so the verify after the switch must fail.
	svc := w.cfg.Services["smtp"]
	svc.Reload = []string{"true"}
	w.cfg.Services["smtp"] = svc
	e = w.engineWait(nil, 2*time.Second)
	o := w.renew(e, RenewOptions{Force: true})
	var rb *RolledBackError
	if !errors.As(o.Err, &rb) || !rb.Reverted || rb.To != st.LiveSet {
		t.Fatalf("outcome %+v, want a rollback to set %s", o, st.LiveSet)
	}
	if msg := o.Err.Error(); !strings.Contains(msg, "rolled back to set "+st.LiveSet) || !strings.Contains(msg, "TLSA records kept") {
		t.Errorf("message %q", msg)
	}
	st2 := w.state()
	if st2.LiveSet != st.LiveSet || st2.Txn != nil || st2.LastFailure == "" {
		t.Errorf("after rollback: live %s (want %s), txn %+v, last failure %q", st2.LiveSet, st.LiveSet, st2.Txn, st2.LastFailure)
	}
	if id, _ := w.store.LiveID("mail"); id != st.LiveSet {
		t.Errorf("live symlink points at %s", id)
	}
	// Both keys' records stay: the new key may be tried again.
	if got := w.published(); len(got) != 2 || !slices.Contains(got, st.Current) || !slices.Contains(got, st2.Next) {
		t.Errorf("published %v, want the current key's and the next key's", got)
	}
	// With the reload fixed, the next run uses the same, already safe,
	// next key without waiting.
	svc.Reload = []string{"kill", "-HUP", strconv.Itoa(os.Getpid())}
	w.cfg.Services["smtp"] = svc
	e = w.engine(nil)
	w.rep.reset()
	w.mustRenew(e, RenewOptions{Force: true}, "rekeyed")
	if _, waits := w.rep.reset(); len(waits) != 0 {
		t.Errorf("waited %v for a key whose records were already safe", waits)
	}
	if got := w.state().Current; got != st2.Next {
		t.Errorf("current = %s, want the key from the failed attempt %s", got, st2.Next)
	}
}

func TestNoWaitSavesAndResumes(t *testing.T) {
	// A hold (2 × 5 s) longer than the order, which runs during it.
	w := newWorld(t, worldOptions{policy: "reuse", ttl: 5})
	e := w.engine(nil)
	o := w.mustRenew(e, RenewOptions{NoWait: true}, "waiting")
	if o.ResumeAt.IsZero() || time.Until(o.ResumeAt) > 11*time.Second || !strings.Contains(o.Detail, "resolvers may cache") {
		t.Fatalf("outcome %+v", o)
	}
	if st := w.state(); st.Txn == nil || st.Txn.NewSet == "" {
		t.Fatalf("the certificate was not ordered during the hold: %+v", st.Txn)
	}
	if st := w.state(); st.Txn == nil || st.Txn.Step != StepHold {
		t.Fatalf("journal: %+v", st.Txn)
	}
	if _, err := w.store.LiveID("mail"); err != nil {
		t.Fatal(err)
	}
	if id, _ := w.store.LiveID("mail"); id != "" {
		t.Fatalf("a certificate went live during the hold")
	}
	// Too early: still waiting, nothing published twice.
	w.mustRenew(e, RenewOptions{NoWait: true}, "waiting")
	time.Sleep(time.Until(o.ResumeAt) + 100*time.Millisecond)
	w.mustRenew(e, RenewOptions{NoWait: true}, "issued")
	if w.svc.Served() != w.state().Current {
		t.Error("service does not serve the issued key")
	}
}

func TestSecondRunWhileLockedChangesNothing(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	lock, err := w.store.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	_, err = w.engine(nil).Renew(context.Background(), nil, RenewOptions{})
	var le *store.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("err = %v, want the lock holder's pid", err)
	}
	if _, err := os.Stat(filepath.Join(w.cfg.StateDir, "journal")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the locked-out run wrote a journal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.cfg.StateDir, "keys")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the locked-out run made keys: %v", err)
	}
}

func TestCAFailureLeavesLiveSetAndResumes(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	live, _ := w.store.Live("mail")
	w.pebble.Close()
	o := w.renew(e, RenewOptions{Force: true})
	if o.Err == nil || !strings.Contains(o.Err.Error(), "obtain") || strings.Contains(o.Err.Error(), "\n") {
		t.Fatalf("outcome %+v, want a one-line obtain failure", o)
	}
	after, _ := w.store.Live("mail")
	if after.ID != live.ID || !bytes.Equal(after.Cert, live.Cert) || !bytes.Equal(after.Key, live.Key) {
		t.Error("a failed order changed the live set")
	}
	if w.svc.Served() != st.Current {
		t.Error("the service changed key")
	}
	if j := w.state().Txn; j == nil || j.Step != StepObtain {
		t.Errorf("journal after the failure: %+v, want the renewal kept at obtain", j)
	}
}

// offsetClock is the wall clock shifted.
type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time { return time.Now().Add(c.d) }
func (c offsetClock) Sleep(ctx context.Context, d time.Duration) error {
	return RealClock{}.Sleep(ctx, d)
}

func TestEmergencyRekeyRefusedUntilSafe(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "rollover"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	st := w.state()
	// An hour earlier, the next key's records had not been visible long
	// enough (they did not exist).
	_, err := w.engine(offsetClock{-time.Hour}).Rekey(context.Background(), "mail", true, RenewOptions{})
	if err == nil || !strings.Contains(err.Error(), "refusing an emergency switch") || !strings.Contains(err.Error(), "resolvers may cache older answers until") {
		t.Fatalf("err = %v", err)
	}
	var h interface{ Hint() string }
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), "without --emergency") {
		t.Errorf("no hint: %v", err)
	}
	if w.state().Current != st.Current || w.svc.Served() != st.Current {
		t.Fatal("a refused emergency changed the key")
	}
	// Now it is safe: the switch happens at once.
	time.Sleep(2100 * time.Millisecond)
	out, err := w.engine(nil).Rekey(context.Background(), "mail", true, RenewOptions{})
	if err != nil || out.Err != nil || w.svc.Served() != st.Next {
		t.Fatalf("emergency rekey: %+v %v; serving %s, want %s", out, err, w.svc.Served(), st.Next)
	}
}

func TestRepairAndForeignRecords(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	foreign := w.owner() + " 60 IN TLSA 3 1 1 " + strings.Repeat("ab", 32)
	ours := w.owner() + " 60 IN TLSA 3 1 1 " + st.Current
	if err := w.dns.Update(func(z *dnstest.Zone) error {
		rr, _ := dns.NewRR(ours)
		z.Remove(rr)
		return z.AddString(foreign)
	}); err != nil {
		t.Fatal(err)
	}
	o := w.mustRenew(e, RenewOptions{}, "repaired records")
	if !strings.Contains(o.Detail, "records missing") {
		t.Errorf("detail %q", o.Detail)
	}
	got := w.published()
	if !slices.Contains(got, st.Current) || !slices.Contains(got, strings.Repeat("ab", 32)) || len(got) != 2 {
		t.Errorf("published %v: want ours repaired and the foreign record left alone", got)
	}
	w.mustRenew(e, RenewOptions{}, "nothing")
}

func TestKeyTypeChangeIsAHeldKeyChange(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "rollover"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	st := w.state()
	// A dry run says what would happen and changes nothing, the next
	// key file included.
	w.cfg.Certificates[0].KeyType = "rsa2048"
	before, _ := os.ReadFile(w.store.KeyPath("mail", store.Next))
	o := w.renew(w.engine(nil), RenewOptions{DryRun: true})
	if o.Action != "would rekey" || !strings.Contains(o.Detail, "key_type changed to rsa2048") {
		t.Fatalf("dry run: %+v", o)
	}
	if after, _ := os.ReadFile(w.store.KeyPath("mail", store.Next)); !bytes.Equal(before, after) {
		t.Fatal("a dry run changed the next key")
	}
	w.rep.reset()
	w.mustRenew(w.engine(nil), RenewOptions{}, "rekeyed")
	st2 := w.state()
	k, err := w.store.ReadKey("mail", store.Current)
	if err != nil || acme.KeyTypeOf(k) != "rsa2048" {
		t.Fatalf("current key type %q, %v", acme.KeyTypeOf(k), err)
	}
	if st2.Current == st.Next {
		t.Error("switched to the old next key, which has the old key type")
	}
	if _, waits := w.rep.reset(); len(waits) != 1 {
		t.Errorf("a key nobody has seen before was served without a hold (%d waits)", len(waits))
	}
	nk, err := w.store.ReadKey("mail", store.Next)
	if err != nil || acme.KeyTypeOf(nk) != "rsa2048" {
		t.Errorf("next key type %q, %v", acme.KeyTypeOf(nk), err)
	}
	got := w.published()
	slices.Sort(got)
	want := []string{st2.Current, st2.Next}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("published %v, want %v: the old keys' records retired", got, want)
	}
}

func TestARIWindowTriggersRenewal(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	e := w.engine(nil)
	w.mustRenew(e, RenewOptions{}, "issued")
	st := w.state()
	if st.Renewal == nil || st.Renewal.Window == nil || !strings.Contains(st.Renewal.Reason, "ARI") {
		t.Fatalf("schedule after issuance: %+v", st.Renewal)
	}
	if !st.Renewal.At.After(time.Now()) || st.Renewal.At.Before(st.Renewal.Window.Start) || st.Renewal.At.After(st.Renewal.Window.End) {
		t.Errorf("renewal time %v not in the window %v", st.Renewal.At, st.Renewal.Window)
	}
	// The CA moves the window into the past (as after a mass revocation):
	// the next run sees it — once its Retry-After allows a new look — and
	// renews, sending "replaces".
	live, _ := w.store.Live("mail")
	start, end := time.Now().Add(-2*time.Hour).Truncate(time.Second), time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := w.pebble.SetRenewalWindow(context.Background(), live.Cert, start, end); err != nil {
		t.Fatal(err)
	}
	w.mustRenew(e, RenewOptions{}, "nothing") // the CA's Retry-After has not passed yet
	later := offsetClock{7 * time.Hour}
	o := w.mustRenew(w.engine(later), RenewOptions{}, "renewed")
	if !strings.Contains(o.Detail, "renewal window") || !strings.Contains(o.Detail, start.UTC().Format(time.RFC3339)) {
		t.Errorf("renewal reason %q does not name the CA's window", o.Detail)
	}
	st2 := w.state()
	if st2.Cert.Serial == st.Cert.Serial || st2.Current != st.Current {
		t.Errorf("serial %s → %s, key %s → %s", st.Cert.Serial, st2.Cert.Serial, st.Current, st2.Current)
	}
}

func TestDryRunDoesNotContactTheCA(t *testing.T) {
	w := newWorld(t, worldOptions{policy: "reuse"})
	w.mustRenew(w.engine(nil), RenewOptions{}, "issued")
	accounts := filepath.Join(w.cfg.StateDir, "accounts")
	if err := os.RemoveAll(accounts); err != nil {
		t.Fatal(err)
	}
	w.pebble.Close() // a dry run must not need the CA at all
	before, _ := os.ReadFile(filepath.Join(w.cfg.StateDir, store.JournalPath("mail")))
	o := w.renew(w.engine(nil), RenewOptions{DryRun: true, Force: true})
	if o.Action != "would renew" || o.Err != nil {
		t.Fatalf("dry run: %+v", o)
	}
	if _, err := os.Stat(accounts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dry run created an ACME account: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(w.cfg.StateDir, store.JournalPath("mail"))); !bytes.Equal(before, after) {
		t.Error("a dry run changed the journal")
	}
}
