package rollover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/store"
)

// sequence lists the steps of each kind of transaction.
func sequence(kind string, tlsa bool) []string {
	var s []string
	switch kind {
	case KindIssue:
		// The order runs while the hold does: the hold counts from the
		// confirmation, and nothing is served before it ends.
		s = []string{StepPlan, StepPublish, StepConfirm, StepObtain, StepHold, StepDeploy, StepVerify, StepRetire, StepCleanup}
	case KindRenew:
		s = []string{StepPlan, StepPublish, StepConfirm, StepObtain, StepDeploy, StepVerify, StepRetire, StepCleanup}
	case KindRekey:
		s = []string{StepPlan, StepPublish, StepConfirm, StepObtain, StepHold, StepDeploy, StepVerify, StepPromote, StepRetire, StepCleanup}
	case KindPublishNext:
		s = []string{StepPlan, StepPublish, StepConfirm}
	case KindRepair:
		s = []string{StepPlan, StepPublish, StepConfirm, StepRetire, StepCleanup}
	case KindPrune:
		// Planned, with its probes, before the journal is written.
		return []string{StepRetire, StepCleanup, StepDone}
	}
	if !tlsa {
		var keep []string
		for _, step := range s {
			switch step {
			case StepPublish, StepConfirm, StepHold, StepRetire, StepCleanup:
			default:
				keep = append(keep, step)
			}
		}
		s = keep
	}
	return append(s, StepDone)
}

func nextStep(kind, step string, tlsa bool) string {
	seq := sequence(kind, tlsa)
	for i, s := range seq {
		if s == step && i+1 < len(seq) {
			return seq[i+1]
		}
	}
	return StepDone
}

// waitError is returned by a step that must wait and was told not to.
type waitError struct {
	until time.Time
	what  string
}

func (w *waitError) Error() string { return "waiting: " + w.what }
func (w *waitError) Unwrap() error { return ErrWaiting }

// runOne decides what a certificate needs and carries it out.
func (e *Engine) runOne(ctx context.Context, c *config.Certificate, opts RenewOptions, why string) Outcome {
	release, err := e.busy(ctx)
	if err != nil {
		return Outcome{Name: c.Name, Action: "failed", Err: err}
	}
	st, out, ok := e.start(ctx, c, opts)
	release()
	if !ok {
		return out
	}
	return e.advance(ctx, c, st, opts)
}

// start loads the certificate's state and, without a pending transaction,
// decides what is due and journals it. It reports false with the outcome
// when there is nothing to advance.
func (e *Engine) start(ctx context.Context, c *config.Certificate, opts RenewOptions) (*State, Outcome, bool) {
	st, err := e.load(c)
	if err != nil {
		return nil, Outcome{Name: c.Name, Action: "failed", Err: err}, false
	}
	if st.Txn == nil {
		d, err := e.decide(ctx, c, st, opts.Force)
		if err != nil {
			return nil, Outcome{Name: c.Name, Action: "failed", Err: err}, false
		}
		if d.kind == "" {
			if err := e.save(c, st); err != nil {
				return nil, Outcome{Name: c.Name, Action: "failed", Err: err}, false
			}
			return nil, Outcome{Name: c.Name, Action: "nothing", Detail: d.reason}, false
		}
		st.Txn = &Txn{Kind: d.kind, Step: StepPlan, Reason: d.reason, Started: e.clock.Now()}
		if err := e.save(c, st); err != nil {
			return nil, Outcome{Name: c.Name, Action: "failed", Err: err}, false
		}
		e.rep.Progress(c.Name, "start", fmt.Sprintf("%s: %s", d.kind, d.reason))
	} else {
		e.rep.Progress(c.Name, "resume", fmt.Sprintf("resuming %s at step %s", st.Txn.Kind, st.Txn.Step))
	}
	return st, Outcome{}, true
}

// advance takes steps until the transaction is done, must wait, or fails.
func (e *Engine) advance(ctx context.Context, c *config.Certificate, st *State, opts RenewOptions) Outcome {
	tlsa := len(c.TLSA) > 0
	kind := st.Txn.Kind
	for st.Txn.Step != StepDone {
		step := st.Txn.Step
		start := e.clock.Now()
		err := e.stepAtWork(ctx, c, st, opts)
		var (
			w  *waitError
			bs *bootstrapError
		)
		switch {
		case errors.As(err, &w):
			if serr := e.save(c, st); serr != nil {
				return Outcome{Name: c.Name, Action: "failed", Err: serr}
			}
			return Outcome{Name: c.Name, Action: "waiting", Detail: w.what, ResumeAt: w.until}
		case errors.As(err, &bs):
			if serr := e.save(c, st); serr != nil {
				return Outcome{Name: c.Name, Action: "failed", Err: serr}
			}
			return Outcome{Name: c.Name, Action: "waiting", Detail: bs.msg}
		case err != nil && ctx.Err() != nil:
			// Interrupted (Ctrl-C, SIGTERM): the step is redone next time.
			if serr := e.save(c, st); serr != nil {
				return Outcome{Name: c.Name, Action: "failed", Err: serr}
			}
			return Outcome{Name: c.Name, Action: "failed", Err: &HintError{
				Err:    fmt.Errorf("%s: interrupted at step %s of %s; the state is saved", c.Name, step, kind),
				Advice: "run daneroll renew again to continue where it stopped",
			}}
		case err != nil:
			var rb *RolledBackError
			if errors.As(err, &rb) {
				st.LastFailure = err.Error()
				if rb.To != "" {
					// Back where it started: the next run decides
					// afresh. (With nothing to go back to, the next run
					// verifies again instead.)
					st.Txn = nil
				}
			}
			if st.Txn != nil {
				// What stops the transaction, for status to show until a
				// later run gets past it.
				st.Txn.Error, st.Txn.ErrorAt = err.Error(), e.clock.Now()
			}
			if serr := e.save(c, st); serr != nil {
				err = errors.Join(err, serr)
			}
			return Outcome{Name: c.Name, Action: "failed", Err: fmt.Errorf("%s: %s: %w", c.Name, step, err)}
		}
		e.log.Debug("step done", "cert", c.Name, "step", step, "took", e.clock.Now().Sub(start))
		st.Txn.Step = nextStep(kind, step, tlsa)
		st.Txn.Error, st.Txn.ErrorAt = "", time.Time{}
		if err := e.save(c, st); err != nil {
			return Outcome{Name: c.Name, Action: "failed", Err: err}
		}
	}
	return e.finish(ctx, c, st)
}

// finish closes a transaction and schedules the next renewal.
func (e *Engine) finish(ctx context.Context, c *config.Certificate, st *State) Outcome {
	txn := st.Txn
	st.Txn = nil
	if txn.Kind == KindRekey {
		st.RekeyRequested = false
	}
	st.LastFailure = ""
	if st.CurrentSince.IsZero() && st.LiveSet != "" {
		st.CurrentSince = e.clock.Now()
	}
	if txn.Kind != KindPrune {
		e.schedule(ctx, c, st, true)
	}
	// Note the files as this transaction leaves them, so that the next run
	// with nothing to do reads and writes nothing.
	e.restamp(c, st)
	if c.KeepSets > 0 && txn.NewSet != "" {
		// The archive grew: cut it back to keep_sets, never removing the
		// live set or the one a rollback would switch back to. A failure
		// here leaves sets behind, nothing worse; the transaction is done.
		removed, err := e.st.PruneSets(c.Name, c.KeepSets, st.LiveSet, txn.PrevSet, txn.NewSet)
		st.forgetSets(removed)
		if len(removed) > 0 {
			e.rep.Progress(c.Name, "archive", fmt.Sprintf("removed set(s) %s (keep_sets = %d)", strings.Join(removed, ", "), c.KeepSets))
		}
		if err != nil {
			e.log.Warn("cannot prune the archive", "cert", c.Name, "keep_sets", c.KeepSets, "err", err)
		}
	}
	if err := e.save(c, st); err != nil {
		return Outcome{Name: c.Name, Action: "failed", Err: err}
	}
	action := map[string]string{
		KindIssue: "issued", KindRenew: "renewed", KindRekey: "rekeyed",
		KindPublishNext: "published next key", KindRepair: "repaired records", KindPrune: "pruned",
	}[txn.Kind]
	detail := txn.Reason
	if txn.Kind == KindPrune {
		return Outcome{Name: c.Name, Action: action, Detail: fmt.Sprintf("removed %d stale record(s), confirmed gone from every authoritative server", len(txn.Prune))}
	}
	if st.Cert != nil && txn.Kind != KindPublishNext && txn.Kind != KindRepair {
		detail = fmt.Sprintf("%s; key %s, valid until %s", txn.Reason, short(st.Cert.Key), st.Cert.NotAfter.Format(time.RFC3339))
	}
	if st.Renewal != nil {
		detail += fmt.Sprintf("; next renewal %s", st.Renewal.At.UTC().Format(time.RFC3339))
	}
	return Outcome{Name: c.Name, Action: action, Detail: detail}
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}

// stepAtWork takes the step with a place among the certificates doing
// work, except a hold: a certificate that waits gives its place to one that
// works, so that holds overlap whatever the concurrency.
func (e *Engine) stepAtWork(ctx context.Context, c *config.Certificate, st *State, opts RenewOptions) error {
	if st.Txn.Step == StepHold {
		return e.step(ctx, c, st, opts)
	}
	release, err := e.busy(ctx)
	if err != nil {
		return err
	}
	defer release()
	return e.step(ctx, c, st, opts)
}

// step carries out the transaction's current step.
func (e *Engine) step(ctx context.Context, c *config.Certificate, st *State, opts RenewOptions) error {
	switch st.Txn.Step {
	case StepPlan:
		return e.plan(ctx, c, st)
	case StepPublish:
		return e.publish(ctx, c, st)
	case StepConfirm:
		return e.confirm(ctx, c, st, opts, false)
	case StepHold:
		return e.hold(ctx, c, st, opts)
	case StepObtain:
		return e.obtain(ctx, c, st)
	case StepDeploy:
		return e.deploy(ctx, c, st)
	case StepVerify:
		return e.verify(ctx, c, st)
	case StepPromote:
		return e.promote(c, st)
	case StepRetire:
		if st.Txn.Kind == KindPrune {
			return e.pruneRecords(ctx, c, st)
		}
		return e.retire(ctx, c, st)
	case StepCleanup:
		return e.confirm(ctx, c, st, opts, true)
	}
	return fmt.Errorf("unknown step %q in the journal", st.Txn.Step)
}

// plan makes sure the keys the transaction needs exist, and records what
// resolvers may be caching before anything is published.
func (e *Engine) plan(ctx context.Context, c *config.Certificate, st *State) error {
	now := e.clock.Now()
	txn := st.Txn
	ensure := func(slot string) (string, error) {
		if id := st.slot(slot); id != "" {
			return id, nil
		}
		k, err := acme.GenerateKey(c.KeyType)
		if err != nil {
			return "", err
		}
		if err := e.st.WriteKey(c.Name, slot, k); err != nil {
			return "", err
		}
		ki, err := st.adopt(k.Public(), now)
		if err != nil {
			return "", err
		}
		st.setSlot(slot, ki.ID)
		e.rep.Progress(c.Name, "plan", fmt.Sprintf("generated %s key %s (%s)", slot, short(ki.ID), c.KeyType))
		return ki.ID, nil
	}
	// A live certificate whose key file went missing: its key is the
	// current key (the archive keeps it).
	if st.Current == "" && st.LiveSet != "" {
		if err := e.restoreCurrent(c, st); err != nil {
			return err
		}
	}
	var err error
	switch txn.Kind {
	case KindIssue:
		txn.Target, err = ensure(store.Current)
		if err == nil && c.KeyPolicy == config.PolicyRollover {
			_, err = ensure(store.Next)
		}
	case KindRenew, KindRepair:
		txn.Target, err = ensure(store.Current)
	case KindRekey:
		if served := st.servedKey(); st.Current != "" && served != "" && st.Current != served {
			// The current key file holds a key that is not served
			// (see rekeyDue): that key is the one to change to.
			txn.Target = st.Current
			break
		}
		if err := e.dropStaleNext(c, st); err != nil {
			return err
		}
		txn.Target, err = ensure(store.Next)
	case KindPublishNext:
		txn.Target = st.Current
		_, err = ensure(store.Next)
	}
	if err != nil {
		return err
	}
	txn.Previous = st.servedKey()
	txn.PrevSet = st.LiveSet
	if len(c.TLSA) == 0 {
		return nil
	}
	// What may resolvers hold from before the change? The old RRsets'
	// TTLs, and the negative TTL where there was no RRset.
	d, err := e.dns(c)
	if err != nil {
		return err
	}
	rep, err := d.Confirmer.Check(ctx, e.wants(c, st, nil))
	if err != nil {
		return err
	}
	txn.HoldTTL = dane.CachedTTL(rep, true)
	for _, z := range rep.Unsigned() {
		e.log.Warn("zone is not DNSSEC-signed: DANE-validating clients ignore its TLSA records", "cert", c.Name, "zone", z)
	}
	return nil
}

func (st *State) slot(slot string) string {
	if slot == store.Current {
		return st.Current
	}
	return st.Next
}

func (st *State) setSlot(slot, id string) {
	if slot == store.Current {
		st.Current = id
	} else {
		st.Next = id
	}
}

// restoreCurrent writes the live set's key back as the current key.
func (e *Engine) restoreCurrent(c *config.Certificate, st *State) error {
	set, err := e.st.Set(c.Name, st.LiveSet)
	if err != nil {
		return err
	}
	k, err := store.ParseKey(set.Key)
	if err != nil {
		return err
	}
	if err := e.st.WriteKey(c.Name, store.Current, k); err != nil {
		return err
	}
	st.Current = st.Cert.Key
	e.log.Warn("current key file was missing; restored it from the live set", "cert", c.Name, "key", st.Current)
	return nil
}

// wantedKeys are the keys whose records must be published: every key that
// is served or may be soon.
func (e *Engine) wantedKeys(st *State) []*KeyInfo {
	var out []*KeyInfo
	for _, id := range st.protectedKeys() {
		if k := st.key(id); k != nil {
			out = append(out, k)
		}
	}
	return out
}

// records returns the records for keys at every configured owner name.
func records(c *config.Certificate, keys []*KeyInfo) map[string][]*dns.TLSA {
	out := map[string][]*dns.TLSA{}
	for _, owner := range c.TLSA {
		fq := dns.Fqdn(owner)
		out[fq] = nil
		for _, k := range keys {
			for _, p := range c.TLSAParams {
				u, _, m := config.ParseTLSAParams(p)
				out[fq] = append(out[fq], dane.RecordForSPKI(fq, uint32(c.TLSATTL), k.SPKI, u, m))
			}
		}
	}
	return out
}

// wants turns wanted and unwanted records into confirmation targets.
func (e *Engine) wants(c *config.Certificate, st *State, absent map[string][]*dns.TLSA) []dane.Want {
	present := records(c, e.wantedKeys(st))
	owners := fqdns(c.TLSA)
	for owner := range absent {
		if !slices.Contains(owners, owner) {
			owners = append(owners, owner)
		}
	}
	slices.Sort(owners[len(c.TLSA):])
	var out []dane.Want
	for _, fq := range owners {
		w := dane.Want{Owner: fq, Type: dns.TypeTLSA}
		for _, rr := range present[fq] {
			w.Present = append(w.Present, rr)
		}
		for _, rr := range absent[fq] {
			w.Absent = append(w.Absent, rr)
		}
		out = append(out, w)
	}
	return out
}

func (e *Engine) dns(c *config.Certificate) (*DNS, error) {
	d := e.opts.DNS[c.Publisher]
	if d == nil {
		return nil, fmt.Errorf("publisher %q is not available", c.Publisher)
	}
	return d, nil
}

// keySets classifies the certificate's keys for planning. Imported keys
// that are not protected are not "owned": daneroll never published their
// records, so only a prune that probed the endpoints removes them.
func (e *Engine) keySets(st *State, protected []string) dane.KeySets {
	var ks dane.KeySets
	for _, k := range st.Keys {
		isProtected := contains(protected, k.ID)
		if isProtected {
			ks.Protected = append(ks.Protected, k.SPKI)
		}
		if isProtected || !k.Imported {
			ks.Owned = append(ks.Owned, k.SPKI)
		}
	}
	return ks
}

// publish adds every wanted record that is not published. It never deletes.
func (e *Engine) publish(ctx context.Context, c *config.Certificate, st *State) error {
	d, err := e.dns(c)
	if err != nil {
		return err
	}
	for _, owner := range c.TLSA {
		p, _, err := e.planOwner(ctx, c, st, d.Publisher, owner)
		if err != nil {
			return err
		}
		if err := e.add(ctx, c, st, d.Publisher, "publish", p.Add); err != nil {
			return err
		}
		for _, rr := range p.Foreign {
			e.log.Info("leaving alone a record of a key daneroll does not manage", "cert", c.Name, "record", rrLine(rr))
		}
	}
	return nil
}

// add publishes records. A record that had to be added was missing, so
// whatever was known about its key being visible at that name no longer
// holds: the key must be confirmed and held again before it is served.
func (e *Engine) add(ctx context.Context, c *config.Certificate, st *State, pub dane.Publisher, step string, rrs []*dns.TLSA) error {
	for _, rr := range rrs {
		e.rep.Progress(c.Name, step, "add "+rrLine(rr))
		if owner := strings.ToLower(rr.Hdr.Name); !contains(st.Owners, owner) {
			// Remembered before the record exists, so that a prune finds
			// it even if the configuration stops naming the owner.
			st.Owners = append(st.Owners, owner)
			if err := e.save(c, st); err != nil {
				return err
			}
		}
		if err := pub.Add(ctx, rr); err != nil {
			return fmt.Errorf("%s: add %s: %w", pub, rrLine(rr), err)
		}
		for _, k := range st.Keys {
			if dane.MatchesSPKI(rr, k.SPKI) {
				delete(k.SafeAt, rr.Hdr.Name)
			}
		}
	}
	return nil
}

func tlsaOf(ctx context.Context, p dane.Publisher, owner string) ([]*dns.TLSA, error) {
	rrs, err := p.Records(ctx, owner, dns.TypeTLSA)
	if err != nil {
		return nil, fmt.Errorf("%s: list %s: %w", p, owner, err)
	}
	var out []*dns.TLSA
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// planOwner compares what the publisher has at owner with the records of
// the keys that are served or may soon be.
func (e *Engine) planOwner(ctx context.Context, c *config.Certificate, st *State, pub dane.Publisher, owner string) (dane.OwnerPlan, []*dns.TLSA, error) {
	fq := dns.Fqdn(owner)
	published, err := tlsaOf(ctx, pub, fq)
	if err != nil {
		return dane.OwnerPlan{}, nil, err
	}
	wanted := records(c, e.wantedKeys(st))
	return dane.PlanOwner(fq, wanted[fq], published, e.keySets(st, st.protectedKeys())), published, nil
}

// rrLine is a record as a zone-file line.
func rrLine(rr *dns.TLSA) string {
	t, err := dane.FromRR(rr)
	if err != nil {
		return dane.RRText(rr)
	}
	return dane.ZoneLine(rr.Hdr.Name, rr.Hdr.Ttl, t)
}

// confirm waits until every authoritative server serves the wanted records
// (and, after retire, no longer serves the retired ones), then records from
// when on each key is safe to serve.
func (e *Engine) confirm(ctx context.Context, c *config.Certificate, st *State, opts RenewOptions, cleanup bool) error {
	if cleanup && !st.Txn.RetireChanged {
		return nil // nothing was added or removed: nothing to confirm
	}
	d, err := e.dns(c)
	if err != nil {
		return err
	}
	var absent map[string][]*dns.TLSA
	if cleanup {
		var retired []*KeyInfo
		for _, id := range st.Txn.Retired {
			if k := st.key(id); k != nil {
				retired = append(retired, k)
			}
		}
		absent = records(c, retired)
		for owner, rrs := range prunedAbsent(st) {
			absent[owner] = append(absent[owner], rrs...)
		}
	}
	wants := e.wants(c, st, absent)
	var rep *dane.Report
	if opts.NoWait {
		rep, err = d.Confirmer.Check(ctx, wants)
		if err == nil && !rep.Confirmed {
			next := e.clock.Now().Add(time.Minute)
			return &waitError{until: next, what: "authoritative servers do not all serve the change yet: " +
				strings.Join(rep.Lagging(), " | ")}
		}
	} else {
		e.rep.Progress(c.Name, st.Txn.Step, fmt.Sprintf("asking every authoritative server for %s", strings.Join(c.TLSA, ", ")))
		rep, err = d.Confirmer.Wait(ctx, wants, e.cfg.DNS.ConfirmTimeout.Duration)
	}
	if err != nil {
		return err
	}
	st.Txn.ConfirmedAt = rep.At
	hold := dane.HoldFor(e.cfg.DNS.HoldFactor, st.Txn.HoldTTL, rep)
	if limit := e.cfg.DNS.MaxHold.Duration; hold > limit {
		// TTLs come from DNS answers: a hold of weeks is a mistake in
		// the zone or someone else's answer, not something to wait for
		// with the lock held.
		return &HintError{
			Err: fmt.Errorf("the hold would be %s (%v × a TTL of %d s that resolvers may hold), longer than max_hold (%s); nothing is served until it is resolved",
				config.FormatDuration(hold), e.cfg.DNS.HoldFactor, max(st.Txn.HoldTTL, dane.CachedTTL(rep, false)), config.FormatDuration(limit)),
			Advice: "lower the TTL of the TLSA records (and the zone's SOA minimum) or raise [dns] max_hold, then run daneroll renew again",
		}
	}
	for _, k := range e.wantedKeys(st) {
		if k.SafeAt == nil {
			k.SafeAt = map[string]time.Time{}
		}
		for _, owner := range c.TLSA {
			fq := dns.Fqdn(owner)
			if _, ok := k.SafeAt[fq]; !ok {
				k.SafeAt[fq] = rep.At.Add(hold)
			}
		}
	}
	for _, id := range st.Txn.Retired {
		if k := st.key(id); k != nil && cleanup && k.Retired.IsZero() {
			k.Retired = rep.At
		}
	}
	var servers int
	for _, z := range rep.Zones {
		servers += len(z.Servers)
	}
	e.rep.Progress(c.Name, st.Txn.Step, fmt.Sprintf("all %d authoritative servers agree", servers))
	for _, z := range rep.Unsigned() {
		e.log.Warn("zone is not DNSSEC-signed: DANE-validating clients ignore its TLSA records", "cert", c.Name, "zone", z)
	}
	return nil
}

// safeAt is when every configured owner name of c is safe for key id.
func (e *Engine) safeAt(c *config.Certificate, st *State, id string) (time.Time, bool) {
	k := st.key(id)
	if k == nil {
		return time.Time{}, false
	}
	var latest time.Time
	for _, owner := range c.TLSA {
		at, ok := k.SafeAt[dns.Fqdn(owner)]
		if !ok {
			return time.Time{}, false
		}
		if at.After(latest) {
			latest = at
		}
	}
	return latest, true
}

// hold waits until no resolver can hold an answer lacking the target key's
// records.
func (e *Engine) hold(ctx context.Context, c *config.Certificate, st *State, opts RenewOptions) error {
	until, ok := e.safeAt(c, st, st.Txn.Target)
	if !ok {
		return fmt.Errorf("key %s has not been confirmed on every authoritative server", short(st.Txn.Target))
	}
	now := e.clock.Now()
	if !now.Before(until) {
		return nil
	}
	if left := until.Sub(now); left > e.cfg.DNS.MaxHold.Duration {
		return fmt.Errorf("the journal holds key %s until %s, %s from now, longer than max_hold (%s)",
			short(st.Txn.Target), until.UTC().Format(time.RFC3339), left.Round(time.Second), config.FormatDuration(e.cfg.DNS.MaxHold.Duration))
	}
	what := fmt.Sprintf("resolvers may cache answers without the new key's records until %s", until.UTC().Format(time.RFC3339))
	if opts.NoWait {
		return &waitError{until: until, what: what}
	}
	done := e.rep.Waiting(c.Name, "hold", until)
	defer done()
	return e.clock.Sleep(ctx, until.Sub(now))
}

// obtain orders the certificate for the target key and archives it.
func (e *Engine) obtain(ctx context.Context, c *config.Certificate, st *State) error {
	txn := st.Txn
	if txn.NewSet != "" {
		return nil
	}
	slot := store.Current
	if st.Next == txn.Target && st.Current != txn.Target {
		slot = store.Next
	}
	key, err := e.st.ReadKey(c.Name, slot)
	if err != nil {
		return err
	}
	if id, _, _ := keyID(key.Public()); id != txn.Target {
		return fmt.Errorf("key file %s no longer holds key %s", e.st.KeyName(c.Name, slot), short(txn.Target))
	}
	client, err := e.acmeClient(ctx)
	if err != nil {
		return err
	}
	if err := e.removeChallenges(ctx, c, st); err != nil {
		return err
	}
	req := acme.Request{Domains: c.Domains, Key: key, Profile: c.Profile, PreferredChain: c.PreferredChain, Solver: e.solver(c, st)}
	// "replaces" only to the CA that issued the live certificate: another
	// refuses the order. (When the issuer is not recorded, the client
	// orders again without it if the CA refuses.)
	if _, elsewhere := st.issuedElsewhere(st.LiveSet, e.cfg.ACME.Directory); st.LiveSet != "" && !elsewhere {
		if live, err := e.st.Set(c.Name, st.LiveSet); err == nil {
			req.Replaces, _ = live.Leaf()
		}
	}
	if addr := standaloneAddr(c); addr != "" {
		// One order at a time may listen there.
		l := e.listener(addr)
		l.Lock()
		defer l.Unlock()
	}
	e.rep.Progress(c.Name, "obtain", fmt.Sprintf("ordering a certificate for %s with key %s", strings.Join(c.Domains, ", "), short(txn.Target)))
	crt, err := client.Obtain(ctx, req)
	if err != nil {
		return err
	}
	keyPEM, err := store.EncodeKey(key)
	if err != nil {
		return err
	}
	id, err := e.st.Install(c.Name, &store.Set{Key: keyPEM, Cert: crt.Cert, Chain: crt.Chain})
	if err != nil {
		return err
	}
	txn.NewSet = id
	st.setIssuer(id, e.cfg.ACME.Directory)
	e.rep.Progress(c.Name, "obtain", fmt.Sprintf("certificate %x valid until %s, archived as set %s",
		crt.Leaf.SerialNumber, crt.Leaf.NotAfter.UTC().Format(time.RFC3339), id))
	return nil
}

// standaloneAddr is the address the certificate's challenge server listens
// on, "" when it has none (webroot, dns-01).
func standaloneAddr(c *config.Certificate) string {
	switch {
	case c.Challenge == config.ChallengeHTTP01 && c.HTTP01Webroot == "":
		return c.HTTP01Listen
	case c.Challenge == config.ChallengeTLSALPN01:
		return c.TLSALPN01Listen
	}
	return ""
}

func (e *Engine) solver(c *config.Certificate, st *State) acme.Solver {
	s := acme.Solver{
		Challenge:       c.Challenge,
		HTTP01Listen:    c.HTTP01Listen,
		HTTP01Webroot:   c.HTTP01Webroot,
		TLSALPN01Listen: c.TLSALPN01Listen,
	}
	if c.Challenge == config.ChallengeDNS01 {
		if d := e.opts.DNS[c.Publisher]; d != nil {
			s.DNS01 = &dane.TXTChallenge{Publisher: d.Publisher, Confirmer: d.Confirmer, Timeout: e.cfg.DNS.ConfirmTimeout.Duration,
				Track: func(rr *dns.TXT, present bool) error { return e.trackChallenge(c, st, rr.String(), present) }}
		}
	}
	return s
}

// trackChallenge journals a dns-01 record before it is published and
// forgets it once it is deleted.
func (e *Engine) trackChallenge(c *config.Certificate, st *State, line string, present bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	txn := st.Txn
	if present == contains(txn.Challenges, line) {
		return nil
	}
	if present {
		txn.Challenges = append(txn.Challenges, line)
	} else {
		txn.Challenges = slices.DeleteFunc(txn.Challenges, func(l string) bool { return l == line })
	}
	return e.save(c, st)
}

// removeChallenges deletes the dns-01 records a killed run published and
// could not remove.
func (e *Engine) removeChallenges(ctx context.Context, c *config.Certificate, st *State) error {
	if len(st.Txn.Challenges) == 0 {
		return nil
	}
	d, err := e.dns(c)
	if err != nil {
		return fmt.Errorf("remove the dns-01 records an interrupted run left (%s): %w", strings.Join(st.Txn.Challenges, "; "), err)
	}
	for _, line := range slices.Clone(st.Txn.Challenges) {
		rr, err := challengeRecord(line)
		if err != nil {
			return err
		}
		e.rep.Progress(c.Name, "obtain", "removing a dns-01 record an interrupted run left: "+dane.RRText(rr))
		if err := d.Publisher.Delete(ctx, rr); err != nil {
			return fmt.Errorf("%s: delete %s: %w", d.Publisher, dane.RRText(rr), err)
		}
		if err := e.trackChallenge(c, st, line, false); err != nil {
			return err
		}
	}
	return nil
}

// promote makes the target key the current one; under rollover a new next
// key is generated (and published by retire), under fresh there is none.
func (e *Engine) promote(c *config.Certificate, st *State) error {
	target := st.Txn.Target
	now := e.clock.Now()
	if st.Current != target {
		k, err := e.st.ReadKey(c.Name, store.Next)
		if err != nil {
			return err
		}
		if id, _, _ := keyID(k.Public()); id != target {
			return fmt.Errorf("next key file no longer holds key %s", short(target))
		}
		if err := e.st.WriteKey(c.Name, store.Current, k); err != nil {
			return err
		}
		st.Current = target
	}
	if st.Next == target {
		if c.KeyPolicy == config.PolicyRollover {
			k, err := acme.GenerateKey(c.KeyType)
			if err != nil {
				return err
			}
			if err := e.st.WriteKey(c.Name, store.Next, k); err != nil {
				return err
			}
			ki, err := st.adopt(k.Public(), now)
			if err != nil {
				return err
			}
			st.Next = ki.ID
			e.rep.Progress(c.Name, "promote", fmt.Sprintf("key %s is current; generated next key %s", short(target), short(ki.ID)))
		} else {
			if err := e.st.RemoveKey(c.Name, store.Next); err != nil {
				return err
			}
			st.Next = ""
		}
	}
	st.CurrentSince = now
	return nil
}

// retire publishes records for keys that became wanted (a new next key)
// and deletes records of keys that can no longer be served.
func (e *Engine) retire(ctx context.Context, c *config.Certificate, st *State) error {
	d, err := e.dns(c)
	if err != nil {
		return err
	}
	// The protected keys are now current, next and live (the target is
	// live since the deploy): the previous key is no longer served, verify
	// saw to that.
	//
	// Before adding a new key's records, note what resolvers may hold.
	rep, err := d.Confirmer.Check(ctx, e.wants(c, st, nil))
	if err != nil {
		return err
	}
	st.Txn.HoldTTL = max(st.Txn.HoldTTL, dane.CachedTTL(rep, true))
	var retired []string
	for _, owner := range c.TLSA {
		p, _, err := e.planOwner(ctx, c, st, d.Publisher, owner)
		if err != nil {
			return err
		}
		if !p.Empty() {
			st.Txn.RetireChanged = true
		}
		if err := e.add(ctx, c, st, d.Publisher, "retire", p.Add); err != nil {
			return err
		}
		for _, rr := range p.Delete {
			// A run that lost its lock (frozen past lock_ttl in fleet
			// mode) must not delete what its successor may need.
			if err := e.st.Fence(c.Name); err != nil {
				return err
			}
			e.rep.Progress(c.Name, "retire", "delete "+rrLine(rr))
			if err := d.Publisher.Delete(ctx, rr); err != nil {
				return fmt.Errorf("%s: delete %s: %w", d.Publisher, rrLine(rr), err)
			}
			for _, k := range st.Keys {
				if dane.MatchesSPKI(rr, k.SPKI) && !contains(retired, k.ID) {
					retired = append(retired, k.ID)
				}
			}
		}
	}
	for _, id := range retired {
		if !contains(st.Txn.Retired, id) {
			st.Txn.Retired = append(st.Txn.Retired, id)
		}
	}
	if c.StaleRecords == config.StaleRemove {
		return e.pruneInRetire(ctx, c, st, d.Publisher)
	}
	return nil
}

// pruneInRetire removes, with stale_records = "remove", the stale records
// that no endpoint serves a key for (see planPrune), journaled before they
// go.
func (e *Engine) pruneInRetire(ctx context.Context, c *config.Certificate, st *State, pub dane.Publisher) error {
	plan, err := e.planPrune(ctx, c, st)
	if err != nil {
		return err
	}
	for _, k := range plan.Kept {
		e.rep.Progress(c.Name, "retire", fmt.Sprintf("keep %s: %s", rrLine(k.Record), k.Why))
	}
	var lines []string
	for _, rr := range plan.Remove {
		if line := rr.String(); !contains(st.Txn.Prune, line) {
			st.Txn.Prune = append(st.Txn.Prune, line)
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	if err := e.save(c, st); err != nil {
		return err
	}
	return e.deletePruned(ctx, c, st, pub, lines)
}
