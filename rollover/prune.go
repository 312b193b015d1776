package rollover

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/config"
	"github.com/daneroll/daneroll/dane"
	"github.com/daneroll/daneroll/services"
)

// Stale is a published record daneroll will not serve a key for, at an
// owner it manages or once managed.
type Stale struct {
	Record *dns.TLSA
	// Why it is stale: "retired key", "imported key", "unknown key",
	// "owner no longer configured".
	Why string
}

// Kept is a stale record a prune leaves, and why.
type Kept struct {
	Record *dns.TLSA
	Why    string
}

// PrunePlan is what a prune of one certificate removes and keeps.
type PrunePlan struct {
	Remove []*dns.TLSA
	Kept   []Kept
}

// staleAt lists the stale records at owner: at a configured owner, every
// record that matches no key that is or may soon be served (a retired
// key's, an imported old key's, one of a key daneroll has never seen); at
// an owner the configuration no longer names, every record of a key the
// certificate has had (others' records at a name daneroll left are not its
// business).
func (e *Engine) staleAt(ctx context.Context, c *config.Certificate, st *State, pub dane.Publisher, owner string) ([]Stale, error) {
	published, err := tlsaOf(ctx, pub, owner)
	if err != nil {
		return nil, err
	}
	configured := slices.Contains(fqdns(c.TLSA), owner)
	protected := st.protectedKeys()
	var out []Stale
	for _, rr := range published {
		var key *KeyInfo
		for _, k := range st.Keys {
			if dane.MatchesSPKI(rr, k.SPKI) {
				key = k
			}
		}
		switch {
		case !configured && key == nil:
			continue
		case !configured:
			out = append(out, Stale{rr, "owner no longer configured"})
		case key == nil:
			out = append(out, Stale{rr, "unknown key"})
		case contains(protected, key.ID):
			continue
		case key.Imported:
			out = append(out, Stale{rr, "imported key"})
		default:
			out = append(out, Stale{rr, "retired key"})
		}
	}
	return out, nil
}

// prunedOwners are the owner names a prune looks at: the configured ones
// and those the certificate once published at.
func prunedOwners(c *config.Certificate, st *State) []string {
	owners := fqdns(c.TLSA)
	for _, o := range st.Owners {
		if !slices.Contains(owners, o) {
			owners = append(owners, o)
		}
	}
	return owners
}

func fqdns(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(dns.Fqdn(n))
	}
	return out
}

// planPrune decides which stale records can go: a record is removed only
// when every endpoint a DANE client would use it for (the configured probes
// at its owner name, or the endpoint the name itself designates) was
// reached and serves no key the record matches. What cannot be checked is
// kept, and says why.
func (e *Engine) planPrune(ctx context.Context, c *config.Certificate, st *State) (PrunePlan, error) {
	var plan PrunePlan
	d, err := e.dns(c)
	if err != nil {
		return plan, err
	}
	for _, owner := range prunedOwners(c, st) {
		stale, err := e.staleAt(ctx, c, st, d.Publisher, owner)
		if err != nil {
			return plan, err
		}
		if len(stale) == 0 {
			continue
		}
		served, why := e.servedAt(ctx, c, owner)
		for _, s := range stale {
			switch {
			case why != "":
				plan.Kept = append(plan.Kept, Kept{s.Record, "cannot be checked: " + why})
			case matchesServed(s.Record, served) != "":
				plan.Kept = append(plan.Kept, Kept{s.Record, "matches the key served at " + matchesServed(s.Record, served)})
			default:
				plan.Remove = append(plan.Remove, s.Record)
			}
		}
	}
	return plan, nil
}

// servedAt probes the endpoints whose TLSA owner is owner and returns the
// leaf each serves, or why they could not all be checked.
func (e *Engine) servedAt(ctx context.Context, c *config.Certificate, owner string) (map[string]*x509.Certificate, string) {
	var endpoints []string
	for _, name := range c.Services {
		for _, p := range e.cfg.Services[name].Probe {
			if ep, err := services.ParseEndpoint(p); err == nil && ep.TLSAOwner() == owner {
				endpoints = append(endpoints, p)
			}
		}
	}
	if f, ok := e.fleet(); ok {
		// Every member's endpoints: a record goes only when no host of
		// the fleet serves its key.
		members, err := f.Members(ctx, c.Name)
		if err != nil {
			return nil, fmt.Sprintf("the fleet's members: %v", err)
		}
		for _, m := range members {
			for _, p := range m.Endpoints {
				ep, err := services.ParseEndpoint(p)
				if err != nil {
					return nil, fmt.Sprintf("member %s registered endpoint %q: %v", m.Host, p, err)
				}
				if ep.TLSAOwner() == owner && !slices.Contains(endpoints, p) {
					endpoints = append(endpoints, p)
				}
			}
		}
	}
	if len(endpoints) == 0 {
		ep, ok := endpointFor(owner)
		if !ok {
			return nil, fmt.Sprintf("%s names no TCP service daneroll can probe", strings.TrimSuffix(owner, "."))
		}
		endpoints = []string{ep}
	}
	served := map[string]*x509.Certificate{}
	for _, ep := range endpoints {
		e.rep.Progress(c.Name, "prune", "probing "+ep)
		err := e.opts.Probe(ctx, ep, func(chain []*x509.Certificate) error {
			if len(chain) == 0 {
				return errors.New("no certificate served")
			}
			served[ep] = chain[0]
			return nil
		})
		if err != nil {
			return nil, fmt.Sprintf("%s: %v", ep, err)
		}
	}
	return served, ""
}

// matchesServed returns the endpoint whose served leaf rr matches, or "".
func matchesServed(rr *dns.TLSA, served map[string]*x509.Certificate) string {
	t, err := dane.FromRR(rr)
	if err != nil {
		return "(unreadable record)"
	}
	for ep, leaf := range served {
		if t.MatchesCert(leaf) {
			return ep
		}
	}
	return ""
}

// endpointFor is the endpoint a TLSA owner name designates:
// _25._tcp.mail.example.org is smtp://mail.example.org:25.
func endpointFor(owner string) (string, bool) {
	labels := dns.SplitDomainName(owner)
	if len(labels) < 3 || labels[1] != "_tcp" || !strings.HasPrefix(labels[0], "_") {
		return "", false
	}
	port := strings.TrimPrefix(labels[0], "_")
	scheme := map[string]string{"25": "smtp", "465": "smtps", "587": "submission", "143": "imap",
		"993": "imaps", "110": "pop3", "995": "pop3s"}[port]
	if scheme == "" {
		scheme = "tls"
	}
	ep := fmt.Sprintf("%s://%s:%s", scheme, strings.Join(labels[2:], "."), port)
	if _, err := services.ParseEndpoint(ep); err != nil {
		return "", false
	}
	return ep, true
}

// PruneOptions are the flags of `daneroll prune`.
type PruneOptions struct {
	DryRun bool
}

// Prune removes the selected certificates' stale records (all when names
// is empty) through the publisher, journaled and confirmed like every other
// change, after probing that no endpoint serves a key they match.
func (e *Engine) Prune(ctx context.Context, names []string, opts PruneOptions) ([]Outcome, error) {
	certs, err := e.select_(names)
	if err != nil {
		return nil, err
	}
	if !opts.DryRun {
		lock, err := e.st.LockShared()
		if err != nil {
			return nil, err
		}
		defer lock.Unlock()
	}
	return e.each(ctx, certs, !opts.DryRun, func(ctx context.Context, c *config.Certificate) Outcome {
		return e.pruneOne(ctx, c, opts)
	}), nil
}

func (e *Engine) pruneOne(ctx context.Context, c *config.Certificate, opts PruneOptions) Outcome {
	fail := func(err error) Outcome { return Outcome{Name: c.Name, Action: "failed", Err: err} }
	release, err := e.busy(ctx)
	if err != nil {
		return fail(err)
	}
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	// The transaction's steps take their own places (see advance).
	advance := func(st *State) Outcome {
		release()
		released = true
		return e.advance(ctx, c, st, RenewOptions{})
	}
	st, err := e.load(c)
	if err != nil {
		return fail(err)
	}
	if st.Txn != nil && st.Txn.Kind != KindPrune {
		return fail(unfinished(c, st, "prune"))
	}
	if st.Txn != nil {
		e.rep.Progress(c.Name, "resume", fmt.Sprintf("resuming prune at step %s", st.Txn.Step))
		return advance(st)
	}
	if c.Publisher == "" {
		return Outcome{Name: c.Name, Action: "nothing", Detail: "no publisher: no records to prune"}
	}
	plan, err := e.planPrune(ctx, c, st)
	if err != nil {
		return fail(err)
	}
	for _, k := range plan.Kept {
		e.rep.Progress(c.Name, "prune", fmt.Sprintf("keep %s: %s", rrLine(k.Record), k.Why))
	}
	verb := "remove"
	if opts.DryRun {
		verb = "would remove"
	}
	for _, rr := range plan.Remove {
		e.rep.Progress(c.Name, "prune", verb+" "+rrLine(rr))
	}
	summary := fmt.Sprintf("%d stale record(s) to remove, %d kept", len(plan.Remove), len(plan.Kept))
	switch {
	case len(plan.Remove) == 0:
		return Outcome{Name: c.Name, Action: "nothing", Detail: fmt.Sprintf("no stale record to remove (%d kept)", len(plan.Kept))}
	case opts.DryRun:
		return Outcome{Name: c.Name, Action: "would prune", Detail: summary}
	}
	st.Txn = &Txn{Kind: KindPrune, Step: StepRetire, Reason: summary, Started: e.clock.Now()}
	for _, rr := range plan.Remove {
		st.Txn.Prune = append(st.Txn.Prune, rr.String())
	}
	if err := e.save(c, st); err != nil {
		return fail(err)
	}
	return advance(st)
}

// pruneRecords deletes the records a prune planned, and forgets the owners
// no longer configured that hold none of the certificate's records.
func (e *Engine) pruneRecords(ctx context.Context, c *config.Certificate, st *State) error {
	d, err := e.dns(c)
	if err != nil {
		return err
	}
	if err := e.deletePruned(ctx, c, st, d.Publisher, st.Txn.Prune); err != nil {
		return err
	}
	configured := fqdns(c.TLSA)
	var keep []string
	for _, owner := range st.Owners {
		if slices.Contains(configured, owner) {
			keep = append(keep, owner)
			continue
		}
		stale, err := e.staleAt(ctx, c, st, d.Publisher, owner)
		if err != nil {
			return err
		}
		if len(stale) > 0 {
			keep = append(keep, owner)
		}
	}
	st.Owners = keep
	return nil
}

// deletePruned deletes the given journaled records.
func (e *Engine) deletePruned(ctx context.Context, c *config.Certificate, st *State, pub dane.Publisher, lines []string) error {
	for _, line := range lines {
		rr, err := prunedRecord(line)
		if err != nil {
			return err
		}
		if err := e.st.Fence(c.Name); err != nil {
			return err
		}
		e.rep.Progress(c.Name, st.Txn.Step, "delete "+rrLine(rr))
		if err := pub.Delete(ctx, rr); err != nil {
			return fmt.Errorf("%s: delete %s: %w", pub, rrLine(rr), err)
		}
		st.Txn.RetireChanged = true
	}
	return nil
}

// prunedRecord reads a journaled record to delete: a TLSA record, nothing
// else.
func prunedRecord(line string) (*dns.TLSA, error) {
	rr, err := dns.NewRR(line)
	if err != nil || rr == nil {
		return nil, fmt.Errorf("not a record: %q", line)
	}
	t, ok := rr.(*dns.TLSA)
	if !ok {
		return nil, fmt.Errorf("%q is not a TLSA record", line)
	}
	t.Hdr.Name = strings.ToLower(t.Hdr.Name)
	return t, nil
}

// prunedAbsent are the journaled deletions by owner, for confirmation.
func prunedAbsent(st *State) map[string][]*dns.TLSA {
	out := map[string][]*dns.TLSA{}
	for _, line := range st.Txn.Prune {
		if rr, err := prunedRecord(line); err == nil {
			out[rr.Hdr.Name] = append(out[rr.Hdr.Name], rr)
		}
	}
	return out
}
