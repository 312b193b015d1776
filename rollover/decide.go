package rollover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/daneroll/daneroll/acme"
	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/store"
)

type decision struct {
	kind   string // "" when nothing is due
	reason string
}

// decide works out what a certificate without a pending transaction needs.
func (e *Engine) decide(ctx context.Context, c *config.Certificate, st *State, force bool) (decision, error) {
	if st.LiveSet == "" {
		return decision{KindIssue, "no certificate yet"}, nil
	}
	renewDue, renewWhy := e.renewalDue(ctx, c, st, force)
	if !sameNames(st.Cert.Domains, c.Domains) {
		renewDue, renewWhy = true, fmt.Sprintf("the configured names changed (%s → %s)",
			strings.Join(st.Cert.Domains, ", "), strings.Join(c.Domains, ", "))
	}
	if issuer, elsewhere := st.issuedElsewhere(st.LiveSet, e.cfg.ACME.Directory); elsewhere {
		renewDue, renewWhy = true, fmt.Sprintf("the live certificate was issued by %s; [acme] directory is now %s", issuer, e.cfg.ACME.Directory)
	}
	keyDue, keyWhy, err := e.rekeyDue(c, st)
	if err != nil {
		return decision{}, err
	}
	if c.KeyPolicy == config.PolicyFresh && renewDue {
		keyDue, keyWhy = true, renewWhy+" (key_policy fresh: a new key every renewal)"
	}
	switch {
	case keyDue:
		return decision{KindRekey, keyWhy}, nil
	case renewDue:
		return decision{KindRenew, renewWhy}, nil
	}
	if len(c.TLSA) > 0 {
		if d, err := e.recordsDue(ctx, c, st); err != nil || d.kind != "" {
			return d, err
		}
	}
	return decision{"", e.nextRenewalText(st)}, nil
}

func (e *Engine) nextRenewalText(st *State) string {
	if st.Renewal == nil {
		return "nothing due"
	}
	return fmt.Sprintf("nothing due; next renewal %s (%s)", st.Renewal.At.UTC().Format(time.RFC3339), st.Renewal.Reason)
}

// sameNames compares name lists as sets, case-insensitively: the CA may
// order, case and deduplicate the names it puts on a certificate its own
// way.
func sameNames(a, b []string) bool {
	set := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = strings.ToLower(strings.TrimSuffix(s, "."))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(set(a), set(b))
}

// rekeyDue says whether the served key must change now.
func (e *Engine) rekeyDue(c *config.Certificate, st *State) (bool, string, error) {
	// The current key file no longer holds the served key: restored from
	// a backup, or replaced by hand. Serving it is a key change like any
	// other, published and held first, whatever the policy.
	if served := st.servedKey(); st.Current != "" && served != "" && st.Current != served {
		e.log.Warn("the current key file does not hold the served key; changing keys with publish and hold",
			"cert", c.Name, "current", st.Current, "served", served)
		return true, fmt.Sprintf("%s holds key %s, not the served key %s (restored from a backup or replaced by hand?): publishing its records and holding before it is served",
			e.st.KeyName(c.Name, store.Current), short(st.Current), short(served)), nil
	}
	if c.KeyPolicy != config.PolicyReuse && st.RekeyRequested {
		return true, "key change requested (daneroll rekey)", nil
	}
	if st.Current != "" && st.currentType != c.KeyType {
		return true, fmt.Sprintf("key_type changed to %s", c.KeyType), nil
	}
	if c.KeyPolicy == config.PolicyRollover && !st.CurrentSince.IsZero() {
		if due := st.CurrentSince.Add(c.RekeyAfter.Duration); !e.clock.Now().Before(due) {
			return true, fmt.Sprintf("the current key has been served since %s, longer than rekey_after (%s)",
				st.CurrentSince.UTC().Format(time.RFC3339), config.FormatDuration(c.RekeyAfter.Duration)), nil
		}
	}
	return false, "", nil
}

// dropStaleNext removes a pre-generated next key of a type no longer
// configured, so that the key change makes a new one (which is then held
// like any new key). Its records become a retired key's records and go at
// the retire step.
func (e *Engine) dropStaleNext(c *config.Certificate, st *State) error {
	k, err := e.st.ReadKey(c.Name, store.Next)
	if err != nil || acme.KeyTypeOf(k) == c.KeyType {
		return nil
	}
	if err := e.st.RemoveKey(c.Name, store.Next); err != nil {
		return err
	}
	st.Next = ""
	return nil
}

// recordsDue checks the published records: missing ones for a served or
// next key need a repair (or publishing the next key), and records of
// retired keys need removing.
func (e *Engine) recordsDue(ctx context.Context, c *config.Certificate, st *State) (decision, error) {
	if c.KeyPolicy == config.PolicyRollover && st.Next == "" {
		return decision{KindPublishNext, "no next key is published yet"}, nil
	}
	d, err := e.dns(c)
	if err != nil {
		return decision{}, err
	}
	var missing, stale []string
	nextOnly := true // every missing record is the next key's
	next := st.key(st.Next)
	for _, owner := range c.TLSA {
		p, _, err := e.planOwner(ctx, c, st, d.Publisher, owner)
		if err != nil {
			return decision{}, err
		}
		for _, rr := range p.Add {
			missing = append(missing, rrLine(rr))
			nextOnly = nextOnly && next != nil && dane.MatchesSPKI(rr, next.SPKI)
		}
		for _, rr := range p.Delete {
			stale = append(stale, rrLine(rr))
		}
	}
	switch {
	case len(missing) > 0 && nextOnly:
		return decision{KindPublishNext, "the next key's records are missing: " + strings.Join(missing, "; ")}, nil
	case len(missing) > 0:
		return decision{KindRepair, "records missing: " + strings.Join(missing, "; ")}, nil
	case len(stale) > 0:
		return decision{KindRepair, "records of retired keys still published: " + strings.Join(stale, "; ")}, nil
	}
	return decision{}, nil
}

// renewalDue says whether the live certificate must be renewed now, and
// keeps the schedule up to date (asking the CA's ARI when it is time).
func (e *Engine) renewalDue(ctx context.Context, c *config.Certificate, st *State, force bool) (bool, string) {
	if force {
		return true, "renewal forced (--force)"
	}
	e.schedule(ctx, c, st, false)
	if st.Renewal == nil {
		return false, ""
	}
	if !e.clock.Now().Before(st.Renewal.At) {
		return true, "renewal due: " + st.Renewal.Reason
	}
	return false, ""
}

// defaultARICheck is how often to ask the CA again when it gives no
// Retry-After (RFC 9773 suggests at least daily).
const defaultARICheck = 6 * time.Hour

// schedule works out when the live certificate is to be renewed: a time in
// the CA's ARI window, or renew_before before expiry when the CA has no
// ARI. ARI is asked again when the certificate changed, when the CA's
// Retry-After has passed, or when always is set.
func (e *Engine) schedule(ctx context.Context, c *config.Certificate, st *State, always bool) {
	if st.Cert == nil {
		st.Renewal = nil
		return
	}
	now := e.clock.Now()
	r := st.Renewal
	if r != nil && r.Serial == st.Cert.Serial && !always && (r.NextCheck.IsZero() || now.Before(r.NextCheck)) {
		return
	}
	set, err := e.st.Set(c.Name, st.LiveSet)
	if err != nil {
		e.log.Warn("cannot read the live set to schedule its renewal", "cert", c.Name, "err", err)
		return
	}
	leaf, err := set.Leaf()
	if err != nil {
		e.log.Warn("cannot read the live certificate to schedule its renewal", "cert", c.Name, "err", err)
		return
	}
	fallback := &Renewal{Serial: st.Cert.Serial, At: acme.FallbackRenewal(leaf, c.RenewBefore.Duration).UTC()}
	if c.RenewBefore.Duration > 0 {
		fallback.Reason = fmt.Sprintf("%s before expiry (renew_before)", config.FormatDuration(c.RenewBefore.Duration))
	} else {
		fallback.Reason = "a third of the lifetime left"
	}
	client, err := e.acmeClient(ctx)
	var info *acme.RenewalInfo
	if err == nil {
		info, err = client.RenewalInfo(ctx, leaf)
	}
	switch {
	case errors.Is(err, acme.ErrNoARI):
		st.Renewal = fallback
		return
	case err != nil:
		if !errors.Is(err, errLookOnly) {
			e.log.Warn("cannot ask the CA for renewal information; keeping the schedule", "cert", c.Name, "err", err)
		}
		if r == nil || r.Serial != st.Cert.Serial {
			fallback.NextCheck = now.Add(time.Hour)
			st.Renewal = fallback
		}
		return
	}
	var prev time.Time
	if r != nil && r.Serial == st.Cert.Serial {
		prev = r.At
	}
	at := acme.PickRenewal(info.Window, prev, nil).UTC()
	if latest := leaf.NotAfter.Add(-time.Hour); at.After(latest) {
		at = latest
	}
	retry := info.RetryAfter
	if retry <= 0 {
		retry = defaultARICheck
	}
	st.Renewal = &Renewal{
		Serial:    st.Cert.Serial,
		At:        at,
		Reason:    fmt.Sprintf("in the CA's renewal window %s – %s (ARI)", info.Window.Start.Format(time.RFC3339), info.Window.End.Format(time.RFC3339)),
		Window:    &info.Window,
		NextCheck: now.Add(retry),
	}
}

// dryRun says what a run would do, changing nothing.
func (e *Engine) dryRun(ctx context.Context, c *config.Certificate, opts RenewOptions) Outcome {
	st, err := e.load(c)
	if err != nil {
		return Outcome{Name: c.Name, Action: "failed", Err: err}
	}
	if st.Txn != nil {
		return Outcome{Name: c.Name, Action: "would resume",
			Detail: fmt.Sprintf("%s (%s) at step %s, then: %s", st.Txn.Kind, st.Txn.Reason, st.Txn.Step,
				strings.Join(remaining(st.Txn.Kind, st.Txn.Step, len(c.TLSA) > 0), " → "))}
	}
	d, err := e.decide(ctx, c, st, opts.Force)
	if err != nil {
		return Outcome{Name: c.Name, Action: "failed", Err: err}
	}
	if d.kind == "" {
		return Outcome{Name: c.Name, Action: "nothing", Detail: d.reason}
	}
	steps := remaining(d.kind, StepPlan, len(c.TLSA) > 0)
	return Outcome{Name: c.Name, Action: "would " + d.kind,
		Detail: fmt.Sprintf("%s: %s", d.reason, strings.Join(steps, " → "))}
}

func remaining(kind, from string, tlsa bool) []string {
	seq := sequence(kind, tlsa)
	for i, s := range seq {
		if s == from {
			return seq[i : len(seq)-1]
		}
	}
	return nil
}
